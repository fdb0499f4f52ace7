"""Chat completions and their stream chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmgw_client._struct import copy_json
from llmgw_client.types._base import _answer, _merged, _Result, _set


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
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _set({"role": self.role}, content=self.content, refusal=self.refusal)
        _set(out, name=self.name, tool_call_id=self.tool_call_id, reasoning_content=self.reasoning_content)
        if self.tool_calls is not None:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return _answer(out, self.null_fields, self.model_extra)


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
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _set({}, role=self.role, content=self.content, refusal=self.refusal)
        _set(out, name=self.name, tool_call_id=self.tool_call_id, reasoning_content=self.reasoning_content)
        if self.tool_calls is not None:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return _answer(out, self.null_fields, self.model_extra)


@dataclass(slots=True, kw_only=True)
class Choice(_Result):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None
    #: OpenAI's logprobs object as JSON.
    logprobs: dict[str, Any] | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _set({"index": self.index, "message": self.message.to_dict()}, finish_reason=self.finish_reason)
        _set(out, logprobs=copy_json(self.logprobs))
        return _answer(out, self.null_fields, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ChunkChoice(_Result):
    index: int
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _set({"index": self.index, "delta": self.delta.to_dict()}, finish_reason=self.finish_reason)
        _set(out, logprobs=copy_json(self.logprobs))
        return _answer(out, self.null_fields, self.model_extra)


@dataclass(slots=True, kw_only=True)
class PromptTokensDetails(_Result):
    """Each count is the upstream's, zeros included; None when it did not send one."""

    cached_tokens: int | None = None
    audio_tokens: int | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _set({}, cached_tokens=self.cached_tokens, audio_tokens=self.audio_tokens)
        return _answer(out, self.null_fields, self.model_extra)


@dataclass(slots=True, kw_only=True)
class CompletionTokensDetails(_Result):
    """Each count is the upstream's, zeros included; None when it did not send one."""

    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = _set(
            {},
            reasoning_tokens=self.reasoning_tokens,
            audio_tokens=self.audio_tokens,
            accepted_prediction_tokens=self.accepted_prediction_tokens,
            rejected_prediction_tokens=self.rejected_prediction_tokens,
        )
        return _answer(out, self.null_fields, self.model_extra)


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
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)

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
        return _answer(_set(out, cost=self.cost), self.null_fields, self.model_extra)


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
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _answer_dict(self)


@dataclass(slots=True, kw_only=True)
class ChatCompletionChunk(_Result):
    """One streamed event; `usage` is set on the last one when the request set
    `stream_options.include_usage` (the others then read `"usage": null` in `to_dict()` when the upstream
    sent that null, as OpenAI does)."""

    id: str
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    #: The keys the upstream sent null, which `to_dict()` writes null.
    null_fields: tuple[str, ...] = field(default=(), repr=False)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _answer_dict(self)


def _answer_dict(answer: ChatCompletion | ChatCompletionChunk) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": answer.id,
        "object": answer.object,
        "created": answer.created,
        "model": answer.model,
    }
    out["choices"] = [choice.to_dict() for choice in answer.choices]
    if answer.usage is not None:
        out["usage"] = answer.usage.to_dict()
    _set(out, system_fingerprint=answer.system_fingerprint, service_tier=answer.service_tier)
    return _answer(out, answer.null_fields, answer.model_extra)
