"""The typed results, named and shaped as the openai SDK's; `to_dict()` is the JSON body llmgw's REST front
answers for the same request (OpenAI's required keys always, null when unset; optional keys only when
set; `model_extra`, the keys the proto does not model, deep-merged over them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

from llmgw_client._struct import copy_json, merged

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "CompletionTokensDetails",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "Embedding",
    "EmbeddingUsage",
    "Function",
    "Generation",
    "GenerationAttempt",
    "Model",
    "ModelList",
    "PromptTokensDetails",
]


class _Result:
    """What every result has besides its fields: `to_dict` (each class's own) and `to_json`."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, *, indent: int | None = 2) -> str:
        """`to_dict()` as JSON text (indented by 2 spaces by default, as the openai SDK's)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def _merged(typed: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`typed` with `extra` deep-merged over it; the result shares nothing with `extra`."""
    return merged(typed, extra) if extra else typed


def _set(out: dict[str, Any], **values: Any) -> dict[str, Any]:
    """`out` with each of `values` that is not None."""
    for key, value in values.items():
        if value is not None:
            out[key] = value
    return out


@dataclass(slots=True, kw_only=True)
class Function(_Result):
    """The function a completion's tool call names, with its JSON-encoded arguments (both always there in
    OpenAI's answers, as in the openai SDK's type)."""

    name: str = ""
    arguments: str = ""
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _merged({"name": self.name, "arguments": self.arguments}, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChatCompletionMessageToolCall(_Result):
    """A completion's tool call: `id`, `type` and `function` are always there in OpenAI's answers."""

    id: str = ""
    type: str = "function"
    function: Function = field(default_factory=Function)
    index: int | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = _set({}, index=self.index) | {
            "id": self.id,
            "type": self.type,
            "function": self.function.to_dict(),
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChoiceDeltaToolCallFunction(_Result):
    """A fragment of a streamed tool call's function: its name first, then pieces of its arguments."""

    name: str | None = None
    arguments: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _merged(_set({}, name=self.name, arguments=self.arguments), self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChoiceDeltaToolCall(_Result):
    """A fragment of a streamed tool call; `index` tells parallel calls apart."""

    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: ChoiceDeltaToolCallFunction | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _merged(_tool_call_dict(self), self.model_extra)


def _tool_call_dict(call: ChoiceDeltaToolCall) -> dict[str, Any]:
    out = _set({}, index=call.index, id=call.id, type=call.type)
    if call.function is not None:
        out["function"] = call.function.to_dict()
    return out


@dataclass(slots=True, kw_only=True)
class ChatCompletionMessage(_Result):
    """A completion's message. Content given as parts (not OpenAI's answer shape) is in
    `model_extra["content"]`, `content` then None."""

    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    #: Thinking text (DashScope, DeepSeek).
    reasoning_content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content, "refusal": self.refusal}
        _set(out, name=self.name, tool_call_id=self.tool_call_id, reasoning_content=self.reasoning_content)
        if self.tool_calls is not None:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChoiceDelta(_Result):
    """What a chunk adds to a choice; every field only when the chunk carries it."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None
    reasoning_content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = _set({}, role=self.role, content=self.content, refusal=self.refusal)
        _set(out, name=self.name, tool_call_id=self.tool_call_id, reasoning_content=self.reasoning_content)
        if self.tool_calls is not None:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class Choice(_Result):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None
    #: OpenAI's logprobs object as JSON.
    logprobs: dict[str, Any] | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "index": self.index,
            "message": self.message.to_dict(),
            "finish_reason": self.finish_reason,
            "logprobs": copy_json(self.logprobs),
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChunkChoice(_Result):
    index: int
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "index": self.index,
            "delta": self.delta.to_dict(),
            "finish_reason": self.finish_reason,
            "logprobs": copy_json(self.logprobs),
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class PromptTokensDetails(_Result):
    """Each count is the upstream's, zeros included; None when it did not send one."""

    cached_tokens: int | None = None
    audio_tokens: int | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _merged(
            _set({}, cached_tokens=self.cached_tokens, audio_tokens=self.audio_tokens), self.model_extra
        )


@dataclass(slots=True, kw_only=True)
class CompletionTokensDetails(_Result):
    """Each count is the upstream's, zeros included; None when it did not send one."""

    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = _set(
            {},
            reasoning_tokens=self.reasoning_tokens,
            audio_tokens=self.audio_tokens,
            accepted_prediction_tokens=self.accepted_prediction_tokens,
            rejected_prediction_tokens=self.rejected_prediction_tokens,
        )
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class CompletionUsage(_Result):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    #: USD, when the upstream reports it.
    cost: float | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.prompt_tokens_details is not None:
            out["prompt_tokens_details"] = self.prompt_tokens_details.to_dict()
        if self.completion_tokens_details is not None:
            out["completion_tokens_details"] = self.completion_tokens_details.to_dict()
        return _merged(_set(out, cost=self.cost), self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChatCompletion(_Result):
    """A chat answer; `request_id` and `generation_id` are the gateway's ids for the call (not in
    `to_dict()`)."""

    id: str
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _envelope(self)
        out["choices"] = [choice.to_dict() for choice in self.choices]
        if self.usage is not None:
            out["usage"] = self.usage.to_dict()
        _set(out, system_fingerprint=self.system_fingerprint, service_tier=self.service_tier)
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChatCompletionChunk(_Result):
    """One streamed event; `usage` is set on the last one when the request set
    `stream_options.include_usage`, whose other chunks then read `"usage": null` in `to_dict()`."""

    id: str
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None
    #: Whether `to_dict()` writes `"usage": null` when `usage` is None.
    usage_null: bool = field(default=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _envelope(self)
        out["choices"] = [choice.to_dict() for choice in self.choices]
        if self.usage is not None:
            out["usage"] = self.usage.to_dict()
        elif self.usage_null:
            out["usage"] = None
        _set(out, system_fingerprint=self.system_fingerprint, service_tier=self.service_tier)
        return _merged(out, self.model_extra)


def _envelope(answer: ChatCompletion | ChatCompletionChunk) -> dict[str, Any]:
    return {"id": answer.id, "object": answer.object, "created": answer.created, "model": answer.model}


@dataclass(slots=True, kw_only=True)
class Embedding(_Result):
    """One vector: floats, or the base64 text when the caller asked `encoding_format="base64"`."""

    embedding: list[float] | str
    index: int = 0
    object: str = "embedding"
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        vector = self.embedding if isinstance(self.embedding, str) else list(self.embedding)
        return _merged({"object": self.object, "index": self.index, "embedding": vector}, self.model_extra)


@dataclass(slots=True, kw_only=True)
class EmbeddingUsage(_Result):
    prompt_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.total_tokens}
        return _merged(_set(out, cost=self.cost), self.model_extra)


@dataclass(slots=True, kw_only=True)
class CreateEmbeddingResponse(_Result):
    """`id` is the gateway's generation id (None if the gateway sent none)."""

    data: list[Embedding]
    model: str = ""
    object: str = "list"
    usage: EmbeddingUsage = field(default_factory=EmbeddingUsage)
    id: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _set({}, id=self.id)
        out |= {"object": self.object, "model": self.model, "data": [item.to_dict() for item in self.data]}
        out["usage"] = self.usage.to_dict()
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class Model(_Result):
    """A catalog model: OpenAI's fields plus the gateway's `name`, `provider` and `capabilities`."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = ""
    name: str = ""
    provider: str = ""
    capabilities: list[str] = field(default_factory=list)
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "owned_by": self.owned_by,
            "name": self.name,
            "provider": self.provider,
            "capabilities": list(self.capabilities),
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ModelList(_Result):
    """The models a key may use; iterates, indexes and sizes as its `data`."""

    data: list[Model]
    object: str = "list"
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _merged({"object": self.object, "data": [m.to_dict() for m in self.data]}, self.model_extra)

    def __iter__(self) -> Iterator[Model]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @overload
    def __getitem__(self, index: int) -> Model: ...
    @overload
    def __getitem__(self, index: slice) -> list[Model]: ...
    def __getitem__(self, index: int | slice) -> Model | list[Model]:
        return self.data[index]


@dataclass(slots=True, kw_only=True)
class GenerationAttempt(_Result):
    """One try of a request at one deployment; `outcome` is completed, error or cancelled."""

    provider: str = ""
    upstream_model: str = ""
    model: str = ""
    outcome: str = ""
    error_code: str = ""
    duration_ms: float = 0.0
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "model": self.model,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "duration_ms": self.duration_ms,
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class Generation(_Result):
    """What one chat or embeddings request did and cost, as `GET /v1/generation/{id}` answers it (its
    `"generation"` object). Text the request may lack is None when empty, as over REST; `status` is
    completed, error or cancelled. `request_id` is the recorded request's id (the record's field), not
    this lookup's."""

    id: str
    request_id: str | None = None
    kind: str = ""
    model: str = ""
    provider: str = ""
    upstream_model: str = ""
    created_at: datetime | None = None
    streamed: bool = False
    status: str = ""
    upstream_id: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    user: str | None = None
    attempts: list[GenerationAttempt] = field(default_factory=list)
    key_id: str | None = None
    team_id: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "request_id": self.request_id,
            "kind": self.kind,
            "model": self.model,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "created_at": _iso(self.created_at),
            "streamed": self.streamed,
            "status": self.status,
            "upstream_id": self.upstream_id,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "user": self.user,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "key_id": self.key_id,
            "team_id": self.team_id,
        }
        return _merged(out, self.model_extra)


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as the REST front writes `created_at`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
