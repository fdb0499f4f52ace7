"""Streamed chat chunks, passed through as the upstream's JSON text where that is safe.

Most chunks of a stream differ only in their delta: the gateway must rewrite `id` and `model` and note
whether text went by, but needs nothing else from them. Such a chunk is not parsed: the `"id":"…"` and
`"model":"…"` fragments learnt from the stream's first (parsed) chunk are replaced in its bytes. A chunk
is parsed as before whenever anything could matter or the rewrite could be ambiguous: the first chunk, one
carrying usage, a finish reason or an error, one without choices, one where either fragment is not found
exactly once, and every chunk of an upstream that does not write compact JSON.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgw.domain.chat import JSONObject
from llmgw.domain.errors import UpstreamError, UpstreamUnavailable
from llmgw.domain.usage import Usage
from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks

# Any of these in a chunk's text means it must be parsed: usage, a finish reason, an error.
_PARSE_MARKERS = (b'"usage":{', b'"finish_reason":"', b'"error"')
_TEXT_KEYS = (b'"content":"', b'"reasoning_content":"')
_USAGE_NULL = (b',"usage":null', b'"usage":null,')


class ParsedChunk:
    """A chunk read into a dict."""

    __slots__ = ("carries_text", "data", "finish_reason", "has_choices", "upstream_id", "usage")

    def __init__(self, data: JSONObject) -> None:
        self.data = data
        usage = data.get("usage")
        self.usage = Usage.from_openai(usage) if isinstance(usage, dict) and usage else None
        self.upstream_id = str(data.get("id") or "")
        self.finish_reason = ""
        self.carries_text = False
        choices = data.get("choices")
        self.has_choices = isinstance(choices, list) and bool(choices)
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                reason = choice.get("finish_reason")
                if reason and not self.finish_reason:
                    self.finish_reason = str(reason)
                delta = choice.get("delta")
                if isinstance(delta, dict) and (
                    delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
                ):
                    self.carries_text = True

    def rebrand(self, generation_id: str, model: str, *, keep_usage: bool) -> None:
        self.data["id"] = generation_id
        self.data["model"] = model
        if not keep_usage:
            self.data.pop("usage", None)

    def json(self) -> JSONObject:
        return self.data

    def encoded(self) -> bytes:
        return orjson.dumps(self.data)


class PassedChunk:
    """A chunk kept as the upstream's text, its `id` and `model` rewritten in place."""

    __slots__ = ("_context", "_raw", "carries_text", "upstream_id")

    usage: Usage | None = None
    finish_reason = ""
    has_choices = True

    def __init__(self, raw: bytes, context: ChunkReader, carries_text: bool) -> None:
        self._raw = raw
        self._context = context
        self.carries_text = carries_text
        self.upstream_id = context.upstream_id

    def rebrand(self, generation_id: str, model: str, *, keep_usage: bool) -> None:
        raw = self._raw.replace(self._context.id_fragment, b'"id":' + orjson.dumps(generation_id), 1)
        raw = raw.replace(self._context.model_fragment, b'"model":' + orjson.dumps(model), 1)
        if not keep_usage:
            for fragment in _USAGE_NULL:
                if fragment in raw:
                    raw = raw.replace(fragment, b"", 1)
                    break
        self._raw = raw

    def json(self) -> JSONObject:
        data: JSONObject = orjson.loads(self._raw)
        return data

    def encoded(self) -> bytes:
        return self._raw


class ChunkReader:
    """Reads one stream's chunk payloads; learns the fragments to rewrite from its first chunk."""

    __slots__ = ("_provider", "_quirks", "_secret", "id_fragment", "model_fragment", "upstream_id")

    def __init__(self, quirks: OpenAIQuirks, *, provider: str, secret: str) -> None:
        self._quirks = quirks
        self._provider = provider
        self._secret = secret
        self.upstream_id = ""
        self.id_fragment = b""
        self.model_fragment = b""

    def read(self, payload: bytes) -> ParsedChunk | PassedChunk:
        if self.id_fragment and self._passable(payload):
            return PassedChunk(payload, self, _carries_text(payload))
        chunk = ParsedChunk(self._parse(payload))
        if not self.id_fragment and chunk.upstream_id:
            self._learn(payload, chunk.data)
        return chunk

    def _passable(self, payload: bytes) -> bool:
        return (
            self._quirks.chunks_pass_through
            and b'"choices":[{' in payload
            and not any(marker in payload for marker in _PARSE_MARKERS)
            and payload.count(self.id_fragment) == 1
            and payload.count(self.model_fragment) == 1
        )

    def _learn(self, payload: bytes, data: JSONObject) -> None:
        """Remember the id and model fragments if this upstream writes them compactly, as seen here."""
        model = data.get("model")
        if not isinstance(model, str):
            return
        id_fragment = b'"id":' + orjson.dumps(data["id"])
        model_fragment = b'"model":' + orjson.dumps(model)
        if payload.count(id_fragment) == 1 and payload.count(model_fragment) == 1:
            self.upstream_id = str(data["id"])
            self.id_fragment = id_fragment
            self.model_fragment = model_fragment

    def _parse(self, payload: bytes) -> JSONObject:
        try:
            chunk: Any = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamUnavailable(
                f"{self._provider}: the stream carried a chunk that is not JSON."
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamUnavailable(f"{self._provider}: the stream carried a chunk that is not an object.")
        error: UpstreamError | None = self._quirks.stream_error(
            chunk, provider=self._provider, secret=self._secret
        )
        if error is not None:
            raise error
        return chunk


def _carries_text(payload: bytes) -> bool:
    """Whether a delta carries text: a non-empty content or reasoning string, or tool calls."""
    for key in _TEXT_KEYS:
        at = payload.find(key)
        if at >= 0 and payload[at + len(key) : at + len(key) + 1] != b'"':
            return True
    return b'"tool_calls":[' in payload
