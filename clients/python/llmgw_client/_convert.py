"""The gateway's answer messages → the typed results, field by field (the server's `*_from_proto` rules).

An `extra` Struct becomes the `model_extra` of the object it belongs to, and `null_fields` its
`null_fields` (the keys the upstream sent null, which `to_dict()` writes back). Tool calls have no `extra` of
their own: what they carry beyond the proto travels in their message's, as a list with one object per
call, and is handed back to each call (and its function) here, so each object's `model_extra` holds its
own keys.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import TYPE_CHECKING, Any

from llmgw_client._messages import v1
from llmgw_client._struct import merged, plain, plain_or_empty
from llmgw_client.types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChunkChoice,
    CompletionTokensDetails,
    CompletionUsage,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingUsage,
    Function,
    Generation,
    GenerationAttempt,
    Model,
    ModelList,
    PromptTokensDetails,
)

if TYPE_CHECKING:
    from llmgw_client._transport import CallInfo

__all__ = ["chat_chunk", "chat_completion", "embeddings", "generation", "model", "model_list"]

_BIG_ENDIAN = sys.byteorder == "big"
_STATUS = {
    v1.GenerationStatus.UNSPECIFIED: "unspecified",
    v1.GenerationStatus.COMPLETED: "completed",
    v1.GenerationStatus.ERROR: "error",
    v1.GenerationStatus.CANCELLED: "cancelled",
}


def chat_completion(msg: v1.ChatCompletion, info: CallInfo) -> ChatCompletion:
    usage = msg.usage
    return ChatCompletion(
        id=msg.id,
        object=msg.object or "chat.completion",
        created=msg.created,
        model=msg.model,
        choices=[_choice(choice) for choice in msg.choices],
        usage=None if usage is None else _usage(usage),
        system_fingerprint=msg.system_fingerprint,
        service_tier=msg.service_tier,
        model_extra=plain_or_empty(msg.extra),
        null_fields=tuple(msg.null_fields),
        request_id=info.request_id,
        generation_id=info.generation_id,
    )


def chat_chunk(msg: v1.ChatCompletionChunk, info: CallInfo) -> ChatCompletionChunk:
    usage = msg.usage
    return ChatCompletionChunk(
        id=msg.id,
        object=msg.object or "chat.completion.chunk",
        created=msg.created,
        model=msg.model,
        choices=[_chunk_choice(choice) for choice in msg.choices],
        usage=None if usage is None else _usage(usage),
        system_fingerprint=msg.system_fingerprint,
        service_tier=msg.service_tier,
        model_extra=plain_or_empty(msg.extra),
        null_fields=tuple(msg.null_fields),
        request_id=info.request_id,
        generation_id=info.generation_id,
    )


def _choice(choice: v1.Choice) -> Choice:
    message = choice.message
    logprobs = choice.logprobs
    return Choice(
        index=choice.index,
        message=ChatCompletionMessage() if message is None else _message(message),
        finish_reason=choice.finish_reason,
        logprobs=None if logprobs is None else plain(logprobs),
        model_extra=plain_or_empty(choice.extra),
        null_fields=tuple(choice.null_fields),
    )


def _chunk_choice(choice: v1.ChunkChoice) -> ChunkChoice:
    delta = choice.delta
    logprobs = choice.logprobs
    return ChunkChoice(
        index=choice.index,
        delta=ChoiceDelta() if delta is None else _delta(delta),
        finish_reason=choice.finish_reason,
        logprobs=None if logprobs is None else plain(logprobs),
        model_extra=plain_or_empty(choice.extra),
        null_fields=tuple(choice.null_fields),
    )


def _message(m: v1.ChatMessage) -> ChatCompletionMessage:
    extra = _message_extra(m)
    return ChatCompletionMessage(
        role=m.role or "assistant",
        content=None if m.content_parts else m.content,
        refusal=m.refusal,
        tool_calls=_tool_calls(m.tool_calls, extra) if m.tool_calls else None,
        reasoning_content=m.reasoning_content,
        name=m.name,
        tool_call_id=m.tool_call_id,
        model_extra=extra,
        null_fields=tuple(m.null_fields),
    )


def _delta(m: v1.ChatMessage) -> ChoiceDelta:
    extra = _message_extra(m)
    return ChoiceDelta(
        role=m.role or None,
        content=None if m.content_parts else m.content,
        refusal=m.refusal,
        tool_calls=_delta_tool_calls(m.tool_calls, extra) if m.tool_calls else None,
        reasoning_content=m.reasoning_content,
        name=m.name,
        tool_call_id=m.tool_call_id,
        model_extra=extra,
        null_fields=tuple(m.null_fields),
    )


def _message_extra(m: v1.ChatMessage) -> dict[str, Any]:
    """The message's `extra`, and its content when given as parts (which `content: str` cannot hold)."""
    extra = plain_or_empty(m.extra)
    if m.content_parts:
        parts = [_part(part) for part in m.content_parts]
        extra = merged({"content": parts}, extra)
    return extra


def _part(p: v1.ContentPart) -> dict[str, Any]:
    out: dict[str, Any] = {"type": p.type}
    if p.text is not None:
        out["text"] = p.text
    if p.refusal is not None:
        out["refusal"] = p.refusal
    if (image := p.image_url) is not None:
        out["image_url"] = {"url": image.url}
        if image.detail is not None:
            out["image_url"]["detail"] = image.detail
    if (audio := p.input_audio) is not None:
        out["input_audio"] = {"data": audio.data, "format": audio.format}
    if (file := p.file) is not None:
        out["file"] = {
            key: value
            for key, value in (
                ("file_data", file.file_data),
                ("file_id", file.file_id),
                ("filename", file.filename),
            )
            if value is not None
        }
    for name in p.null_fields:
        out.setdefault(name, None)
    if p.extra is not None:
        out = merged(out, plain(p.extra))
    return out


def _own_extras(extra: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The per-call remainders in a message's `extra["tool_calls"]`, taken out of it; empty ones when
    there are none (or they do not line up with the calls, then they stay where they are)."""
    remainders = extra.get("tool_calls")
    if (
        isinstance(remainders, list)
        and len(remainders) == count
        and all(isinstance(item, dict) for item in remainders)
    ):
        del extra["tool_calls"]
        return remainders
    return [{} for _ in range(count)]


def _tool_calls(calls: list[v1.ToolCall], extra: dict[str, Any]) -> list[ChatCompletionMessageToolCall]:
    out = []
    for call, own in zip(calls, _own_extras(extra, len(calls)), strict=True):
        fn = call.function
        function = (
            Function()
            if fn is None
            else Function(name=fn.name or "", arguments=fn.arguments or "", model_extra=_function_extra(own))
        )
        out.append(
            ChatCompletionMessageToolCall(
                id=call.id or "",
                type=call.type or "function",
                function=function,
                index=call.index,
                model_extra=own,
            )
        )
    return out


def _delta_tool_calls(calls: list[v1.ToolCall], extra: dict[str, Any]) -> list[ChoiceDeltaToolCall]:
    out = []
    for call, own in zip(calls, _own_extras(extra, len(calls)), strict=True):
        fn = call.function
        function = None
        if fn is not None:
            function = ChoiceDeltaToolCallFunction(
                name=fn.name, arguments=fn.arguments, model_extra=_function_extra(own)
            )
        out.append(
            ChoiceDeltaToolCall(
                index=call.index, id=call.id, type=call.type, function=function, model_extra=own
            )
        )
    return out


def _function_extra(own: dict[str, Any]) -> dict[str, Any]:
    """The function's remainder inside its call's, taken out of it."""
    remainder = own.get("function")
    if isinstance(remainder, dict):
        del own["function"]
        return remainder
    return {}


def _usage(usage: v1.Usage) -> CompletionUsage:
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=None
        if prompt is None
        else PromptTokensDetails(
            cached_tokens=prompt.cached_tokens,
            audio_tokens=prompt.audio_tokens,
            model_extra=plain_or_empty(prompt.extra),
            null_fields=tuple(prompt.null_fields),
        ),
        completion_tokens_details=None
        if completion is None
        else CompletionTokensDetails(
            reasoning_tokens=completion.reasoning_tokens,
            audio_tokens=completion.audio_tokens,
            accepted_prediction_tokens=completion.accepted_prediction_tokens,
            rejected_prediction_tokens=completion.rejected_prediction_tokens,
            model_extra=plain_or_empty(completion.extra),
            null_fields=tuple(completion.null_fields),
        ),
        cost=usage.cost,
        model_extra=plain_or_empty(usage.extra),
        null_fields=tuple(usage.null_fields),
    )


def embeddings(
    msg: v1.CreateEmbeddingsResponse, info: CallInfo, *, decode_base64: bool
) -> CreateEmbeddingResponse:
    """`decode_base64`: the caller asked no `encoding_format`, so the client asked base64 (as the openai
    SDK does) and the vectors come back as floats; else a base64 vector stays the text the caller asked."""
    usage = msg.usage
    return CreateEmbeddingResponse(
        id=msg.id or None,
        object=msg.object or "list",
        model=msg.model,
        data=[
            Embedding(
                object=item.object or "embedding", index=item.index, embedding=_vector(item, decode_base64)
            )
            for item in msg.data
        ],
        usage=EmbeddingUsage()
        if usage is None
        else EmbeddingUsage(
            prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens, cost=usage.cost
        ),
        request_id=info.request_id,
        generation_id=info.generation_id,
    )


def _vector(item: v1.Embedding, decode_base64: bool) -> list[float] | str:
    encoded = item.embedding_base64
    if not encoded:
        return item.embedding
    if not decode_base64:
        return encoded
    floats = array("f")
    floats.frombytes(base64.b64decode(encoded))
    if _BIG_ENDIAN:
        floats.byteswap()  # the wire's float32s are little-endian
    return floats.tolist()


def model(msg: v1.Model, info: CallInfo) -> Model:
    return _model(msg, info.request_id, info.generation_id)


def _model(msg: v1.Model, request_id: str | None, generation_id: str | None) -> Model:
    return Model(
        id=msg.id,
        object=msg.object or "model",
        created=msg.created,
        owned_by=msg.owned_by,
        name=msg.name,
        provider=msg.provider,
        capabilities=msg.capabilities,
        request_id=request_id,
        generation_id=generation_id,
    )


def model_list(msg: v1.ListModelsResponse, info: CallInfo) -> ModelList:
    """The models; each carries the list call's ids too."""
    return ModelList(
        object=msg.object or "list",
        data=[_model(item, info.request_id, info.generation_id) for item in msg.data],
        request_id=info.request_id,
        generation_id=info.generation_id,
    )


def generation(msg: v1.GetGenerationResponse, info: CallInfo) -> Generation:
    """The record; text that defaults to empty reads None when empty, as `GET /v1/generation/{id}` has it
    (`upstream_id` excepted, as there)."""
    g = msg.generation or v1.Generation()
    return Generation(
        id=g.id,
        request_id=g.request_id,
        kind=g.kind,
        model=g.model,
        provider=g.provider,
        upstream_model=g.upstream_model,
        created_at=g.created_at,
        streamed=g.streamed,
        status=_STATUS.get(g.status, "unspecified"),
        upstream_id=g.upstream_id,
        finish_reason=g.finish_reason or None,
        prompt_tokens=g.prompt_tokens,
        completion_tokens=g.completion_tokens,
        total_tokens=g.total_tokens,
        cached_tokens=g.cached_tokens,
        reasoning_tokens=g.reasoning_tokens,
        cost_usd=g.cost_usd,
        latency_ms=g.latency_ms,
        time_to_first_token_ms=g.time_to_first_token_ms,
        error_code=g.error_code or None,
        error_message=g.error_message or None,
        user=g.user or None,
        attempts=[
            GenerationAttempt(
                provider=a.provider,
                upstream_model=a.upstream_model,
                model=a.model,
                outcome=a.outcome,
                error_code=a.error_code,
                duration_ms=a.duration_ms,
            )
            for a in g.attempts
        ],
        key_id=g.key_id or None,
        team_id=g.team_id or None,
        trace_id=g.trace_id or None,
        limits=list(g.limits),
        generation_id=info.generation_id,
    )
