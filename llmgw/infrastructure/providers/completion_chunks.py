"""A whole chat completion as the stream chunks it would have been: for upstreams that answer a streaming
request with one JSON body (`content-type: application/json`), so the client still gets a stream."""

from __future__ import annotations

from typing import Any

from llmgw.domain.chat import JSONObject


def completion_as_chunks(body: JSONObject) -> list[JSONObject]:
    """One chunk per choice (its whole message as the delta, with its finish reason), then the usage chunk
    that streams end with. Tool calls get the `index` streamed tool calls carry."""
    head: JSONObject = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
    }
    head["model"] = body.get("model")
    if "system_fingerprint" in body:
        head["system_fingerprint"] = body["system_fingerprint"]
    chunks: list[JSONObject] = []
    for position, choice in enumerate(_objects(body.get("choices"))):
        delta = dict(choice.get("message") or {})
        if "tool_calls" in delta:
            delta["tool_calls"] = [
                {"index": i, **call} for i, call in enumerate(_objects(delta["tool_calls"]))
            ]
        streamed: JSONObject = {"index": choice.get("index", position), "delta": delta}
        if "logprobs" in choice:
            streamed["logprobs"] = choice["logprobs"]
        streamed["finish_reason"] = choice.get("finish_reason")
        chunks.append({**head, "choices": [streamed]})
    chunks.append({**head, "choices": [], "usage": body.get("usage")})
    return chunks


def _objects(value: Any) -> list[JSONObject]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
