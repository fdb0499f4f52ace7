"""Kinds `openai` (any OpenAI-compatible server) and `openrouter`: the base request/response transformations.

OpenRouter speaks OpenAI's wire: its attribution headers (`referer`, `title`) are set by the config, its
`: OPENROUTER PROCESSING` comments are skipped by the SSE decoder, its mid-stream error chunk (top-level
`error`) is read by `stream_error`, and `usage.cost` by `Usage.from_openai`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgw.domain.catalog import ModelSpec
from llmgw.domain.chat import ChatRequest, EmbeddingsRequest, JSONObject
from llmgw.domain.errors import UpstreamError
from llmgw.infrastructure.providers.upstream_errors import error_from_event


class OpenAIQuirks:
    """Pure transformations; subclasses override what their upstream does differently."""

    #: Inputs one embeddings call may carry; None means no limit.
    max_embedding_inputs: int | None = None
    #: Whether the upstream can answer `encoding_format: base64` itself.
    supports_base64_embeddings = True
    #: Whether token-id arrays are accepted as embeddings input.
    supports_token_input = True

    def chat_body(self, model: ModelSpec, request: ChatRequest, *, stream: bool) -> JSONObject:
        """The upstream request: the caller's body, upstream model id, and for streams usage always asked."""
        body = dict(request.body)
        body["model"] = model.upstream_model
        if stream:
            body["stream"] = True
            options = request.body.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if options else {"include_usage": True}
            )
        elif "stream" in body:
            body["stream"] = False
        return body

    def embeddings_body(self, model: ModelSpec, request: EmbeddingsRequest) -> JSONObject:
        body = dict(request.body)
        body["model"] = model.upstream_model
        if not self.supports_base64_embeddings and "encoding_format" in body:
            body["encoding_format"] = "float"
        return body

    def stream_error(self, chunk: Mapping[str, Any], *, provider: str, secret: str) -> UpstreamError | None:
        """An error reported inside the stream (a top-level `error`), or None; asked only about chunks
        that have an `error` key."""
        error = chunk.get("error")
        if error:
            return error_from_event(error, provider=provider, secret=secret)
        return None
