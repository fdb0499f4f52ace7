"""Pure builders of the fake upstream's JSON and SSE payloads, per provider kind.

Kinds follow /work/shared/WIRE.md: "openai", "dashscope" and "openrouter".
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

KINDS = ("openai", "dashscope", "openrouter")
PROMPT_TOKENS = 10
REASONING_CHUNKS = 2
ARGUMENT_FRAGMENTS = 3
OPENROUTER_COST = 0.00042
OPENROUTER_PROVIDER = "FakeProvider"
COMMENT = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
MALFORMED_BODY = b'{"id": "chatcmpl-broken", not json'
MALFORMED_EVENT = b"data: {not json\n\n"
DASHSCOPE_MAX_EMBEDDING_INPUTS = 10

Json = dict[str, Any]


@dataclass
class Script:
    """How the fake answers one request; the defaults give a plain successful answer."""

    status: int = 200
    error_body: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    chunks: int = 3
    comments: int | None = None
    fail_after_chunks: int | None = None
    stream_error: Json | None = None
    reset_after_chunks: int | None = None
    hang: bool = False
    hang_after_chunks: int | None = None
    malformed: bool = False
    #: a stream: after this many chunks, an event that is not JSON (then [DONE])
    malformed_after_chunks: int | None = None
    #: a stream: after this many chunks, one event of this many bytes (then the rest as scripted)
    oversized_event: tuple[int, int] | None = None
    tool_calls: int = 0
    reasoning: bool = False
    reasoning_field: str = "reasoning_content"
    finish_reason: str | None = None
    usage: Json | None = None
    extra_response_fields: Json = field(default_factory=dict)
    #: answer a streaming request with the whole completion as one JSON body, as some servers do
    whole_body_for_stream: bool = False


@dataclass(frozen=True)
class Envelope:
    """The per-response constants every chunk of one answer shares."""

    kind: str
    id: str
    created: int
    model: str
    request_id: str
    include_usage: bool = False


def content_token(i: int) -> str:
    return f"tok{i} "


def expected_content(chunks: int = 3) -> str:
    """The full content of an answer of `chunks` chunks, streamed or not."""
    return "".join(content_token(i) for i in range(chunks))


def reasoning_token(i: int) -> str:
    return f"think{i} "


def expected_reasoning() -> str:
    return "".join(reasoning_token(i) for i in range(REASONING_CHUNKS))


def tool_arguments(j: int) -> str:
    return json.dumps({"call": j, "city": f"city-{j}"})


def tool_call(j: int) -> Json:
    """Tool call `j` as it appears, complete, in a non-streamed message."""
    return {
        "id": f"call_{j}",
        "type": "function",
        "function": {"name": f"fn{j}", "arguments": tool_arguments(j)},
    }


def embedding_for(text: str, dimensions: int) -> list[float]:
    """A deterministic vector; components are k/1024, exact in float32 and in JSON."""
    vector = []
    for i in range(dimensions):
        digest = hashlib.sha256(f"{dimensions}:{i}:{text}".encode()).digest()
        vector.append((int.from_bytes(digest[:4], "little") % 2001 - 1000) / 1024)
    return vector


def sse_event(payload: Json) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_DASHSCOPE_CODES = {
    400: "invalid_parameter_error",
    401: "invalid_api_key",
    403: "AccessDenied",
    404: "model_not_found",
    429: "limit_requests",
}


def error_body(
    kind: str, status: int, message: str | None = None, *, code: str | None = None, request_id: str = ""
) -> Json:
    """The kind's error body for an HTTP error answered before any stream."""
    if message is None:
        message = f"fake {kind} upstream: {HTTPStatus(status).phrase}"
    if kind == "openrouter":
        return {"error": {"code": status, "message": message}}
    if kind == "dashscope":
        err_type = "invalid_request_error" if status < 500 else "internal_error"
        err_code = code or _DASHSCOPE_CODES.get(status, "internal_error")
        error = {"message": message, "type": err_type, "param": None, "code": err_code}
        return {"error": error, "request_id": request_id}
    err_type, default_code = _OPENAI_ERRORS.get(status, ("server_error", None))
    return {"error": {"message": message, "type": err_type, "param": None, "code": code or default_code}}


def midstream_error(env: Envelope, script: Script) -> Json:
    """The event that breaks a stream which already sent chunks."""
    if env.kind == "openrouter":
        error = script.stream_error or {"code": 502, "message": "fake openrouter upstream: provider failed"}
        choice = {
            "index": 0,
            "delta": {"content": ""},
            "logprobs": None,
            "finish_reason": "error",
            "native_finish_reason": "error",
        }
        return {**_chunk_head(env), "choices": [choice], "error": error}
    error = script.stream_error or {
        "message": f"fake {env.kind} upstream: stream failed",
        "type": "server_error",
        "param": None,
        "code": "internal_error" if env.kind == "dashscope" else None,
    }
    return {"error": error}


def _tool_call_deltas(count: int) -> list[Json]:
    deltas: list[Json] = []
    for j in range(count):
        head = {
            "index": j,
            "id": f"call_{j}",
            "type": "function",
            "function": {"name": f"fn{j}", "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
    pieces = []
    for j in range(count):
        args = tool_arguments(j)
        cuts = [len(args) * k // ARGUMENT_FRAGMENTS for k in range(ARGUMENT_FRAGMENTS + 1)]
        pieces.append([args[cuts[k] : cuts[k + 1]] for k in range(ARGUMENT_FRAGMENTS)])
    for k in range(ARGUMENT_FRAGMENTS):
        for j in range(count):
            deltas.append({"tool_calls": [{"index": j, "function": {"arguments": pieces[j][k]}}]})
    return deltas


def answer_deltas(kind: str, script: Script) -> list[Json]:
    """The streamed deltas of the answer, role on the first; usage excluded."""
    deltas: list[Json] = []
    if script.reasoning:
        for i in range(REASONING_CHUNKS):
            delta: Json = {script.reasoning_field: reasoning_token(i)}
            if kind == "dashscope":
                delta["content"] = None
            deltas.append(delta)
    if script.tool_calls:
        deltas.extend(_tool_call_deltas(script.tool_calls))
    else:
        for i in range(script.chunks):
            delta = {"content": content_token(i)}
            if kind == "dashscope" and script.reasoning:
                delta[script.reasoning_field] = None
            deltas.append(delta)
    if not deltas:
        deltas.append({"content": ""})
    deltas[0] = {"role": "assistant", **deltas[0]}
    return deltas


def finish_reason(script: Script) -> str:
    return script.finish_reason or ("tool_calls" if script.tool_calls else "stop")


def usage_for(kind: str, script: Script) -> Json:
    """The usage the fake reports: the script's override, else counted from the answer."""
    if script.usage is not None:
        return dict(script.usage)
    reasoning = REASONING_CHUNKS if script.reasoning else 0
    answer = len(_tool_call_deltas(script.tool_calls)) if script.tool_calls else script.chunks
    completion = answer + reasoning
    usage: Json = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if kind == "openrouter":
        usage["cost"] = OPENROUTER_COST
        usage["is_byok"] = False
    return usage


def _chunk_head(env: Envelope) -> Json:
    head: Json = {"id": env.id, "object": "chat.completion.chunk", "created": env.created, "model": env.model}
    if env.kind == "openrouter":
        head["provider"] = OPENROUTER_PROVIDER
    return head


def stream_chunks(env: Envelope, script: Script) -> list[Json]:
    """The data chunks of a streamed answer, the last carrying finish_reason; usage excluded."""
    deltas = answer_deltas(env.kind, script)
    chunks = []
    for i, delta in enumerate(deltas):
        reason = finish_reason(script) if i == len(deltas) - 1 else None
        choice: Json = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        if env.kind == "openrouter":
            choice["native_finish_reason"] = reason
        chunk = {**_chunk_head(env), "choices": [choice]}
        if env.kind == "dashscope" or (env.kind == "openai" and env.include_usage):
            chunk["usage"] = None
        chunks.append({**chunk, **script.extra_response_fields})
    return chunks


def wants_usage_chunk(env: Envelope) -> bool:
    return env.include_usage or env.kind == "openrouter"


def usage_chunk(env: Envelope, script: Script) -> Json:
    chunk = {**_chunk_head(env), "choices": [], "usage": usage_for(env.kind, script)}
    return {**chunk, **script.extra_response_fields}


def chat_completion(env: Envelope, script: Script) -> Json:
    """The non-streamed answer."""
    message: Json = {
        "role": "assistant",
        "content": None if script.tool_calls else expected_content(script.chunks),
    }
    if env.kind in ("openai", "openrouter"):
        message["refusal"] = None
    if env.kind == "openai":
        message["annotations"] = []
    if script.reasoning:
        message[script.reasoning_field] = expected_reasoning()
    if script.tool_calls:
        message["tool_calls"] = [tool_call(j) for j in range(script.tool_calls)]
    choice: Json = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(script)}
    if env.kind == "openrouter":
        choice["native_finish_reason"] = finish_reason(script)
    response: Json = {"id": env.id, "object": "chat.completion", "created": env.created, "model": env.model}
    if env.kind == "openrouter":
        response["provider"] = OPENROUTER_PROVIDER
    response.update(choices=[choice], usage=usage_for(env.kind, script))
    return {**response, **script.extra_response_fields}


def embedding_texts(raw: Any) -> list[str] | None:
    """The texts of an embeddings `input`; token arrays become their str(); None if invalid."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(item, str) for item in raw):
        return list(raw)
    if all(isinstance(item, int) for item in raw):
        return [str(raw)]
    if all(isinstance(item, list) and item and all(isinstance(t, int) for t in item) for item in raw):
        return [str(item) for item in raw]
    return None


def embeddings_response(model: str, texts: list[str], dimensions: int, *, as_base64: bool) -> Json:
    data = []
    for index, text in enumerate(texts):
        vector = embedding_for(text, dimensions)
        encoded: list[float] | str = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(max(1, len(text.split())) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}
