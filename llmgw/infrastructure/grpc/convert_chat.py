"""Chat completions: proto messages ↔ OpenAI JSON, requests, answers and stream chunks.

The null and missing-key rules are in the docstring of `llmgw.infrastructure.grpc.convert`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from llmgw.infrastructure.grpc.json_fields import Kind, Reader, field, merged, present
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.grpc.struct_bytes import plain
from llmgw.infrastructure.grpc.upb_codec import Encoded, build, encode, upb

# Keyword fields of a message, built from OpenAI JSON (nested messages and Structs as dicts).
Fields = dict[str, Any]

_REQUEST_SCALARS: dict[str, Kind] = {
    "temperature": "double",
    "top_p": "double",
    "n": "int32",
    "max_tokens": "int32",
    "max_completion_tokens": "int32",
    "presence_penalty": "double",
    "frequency_penalty": "double",
    "logprobs": "bool",
    "top_logprobs": "int32",
    "seed": "int64",
    "user": "str",
    "parallel_tool_calls": "bool",
    "reasoning_effort": "str",
    "store": "bool",
    "service_tier": "str",
}
_MESSAGE_STRINGS = ("name", "tool_call_id", "reasoning_content", "refusal")
_FILE_STRINGS = ("file_data", "file_id", "filename")
_PROMPT_DETAILS = ("cached_tokens", "audio_tokens")
_COMPLETION_DETAILS = (
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
)


def chat_request_to_json(request: v1.CreateChatCompletionRequest | Message) -> dict[str, Any]:
    """The OpenAI request body; `stream` never appears (the RPC decides)."""
    msg: Any = upb(v1.CreateChatCompletionRequest, request)
    out: dict[str, Any] = {
        "model": msg.model,
        "messages": [_message_out(m, null_content=True) for m in msg.messages],
    }
    out |= present(msg, _REQUEST_SCALARS)
    if msg.stop:
        out["stop"] = list(msg.stop)
    if msg.logit_bias:
        # OpenAI's schema types the biases as integers; the proto map holds doubles.
        out["logit_bias"] = {k: int(v) if v.is_integer() else v for k, v in msg.logit_bias.items()}
    if msg.metadata:
        out["metadata"] = dict(msg.metadata)
    if msg.modalities:
        out["modalities"] = list(msg.modalities)
    if msg.tools:
        out["tools"] = [_tool_out(tool) for tool in msg.tools]
    if msg.HasField("tool_choice"):
        out["tool_choice"] = _tool_choice_out(msg.tool_choice)
    if msg.HasField("response_format"):
        out["response_format"] = _response_format_out(msg.response_format)
    if msg.HasField("stream_options"):
        out["stream_options"] = present(msg.stream_options, ("include_usage",))
    out |= _structs_out(msg, "audio", "prediction")
    out = merged(out, msg)
    out.pop("stream", None)
    return out


def chat_request_from_json(body: Mapping[str, Any]) -> v1.CreateChatCompletionRequest:
    """The proto for an OpenAI request body; `stream` is dropped, unknown keys go to `extra`."""
    return build(v1.CreateChatCompletionRequest, _request_fields(body))


def _request_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    r = Reader(body)
    r.rest.pop("stream", None)
    return dict(
        model=r.scalar("model", "str") or "",
        messages=r.messages("messages", _message_in, required=True),
        **{key: r.scalar(key, kind) for key, kind in _REQUEST_SCALARS.items()},
        stop=_stop_in(r),
        logit_bias=r.mapping("logit_bias", "double"),
        metadata=r.mapping("metadata", "str"),
        modalities=r.scalars("modalities", "str"),
        tools=r.messages("tools", _tool_in),
        tool_choice=_tool_choice_in(r),
        response_format=r.message("response_format", _response_format_in),
        stream_options=r.message(
            "stream_options", lambda s: {"include_usage": s.scalar("include_usage", "bool")}
        ),
        audio=r.struct("audio"),
        prediction=r.struct("prediction"),
        extra=r.leftover(),
        null_fields=r.nulls,
    )


def chat_completion_to_proto(body: Mapping[str, Any]) -> v1.ChatCompletion:
    return build(v1.ChatCompletion, _completion_fields(body))


def encode_chat_completion(body: Mapping[str, Any]) -> Encoded:
    """The gRPC answer's bytes, straight from the OpenAI JSON (the hot path)."""
    return Encoded(encode(v1.ChatCompletion, _completion_fields(body)))


def _completion_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    r = Reader(body)
    return dict(
        **_envelope_in(r, "chat.completion"),
        choices=r.messages("choices", _choice_in, required=True),
        usage=r.message("usage", _usage_in),
        extra=r.leftover(),
        null_fields=r.nulls,
    )


def chat_completion_from_proto(completion: v1.ChatCompletion | Message) -> dict[str, Any]:
    msg: Any = upb(v1.ChatCompletion, completion)
    out = _envelope_out(msg, "chat.completion")
    out["choices"] = [_choice_out(choice, "message") for choice in msg.choices]
    if msg.HasField("usage"):
        out["usage"] = _usage_out(msg.usage)
    return merged(out, msg)


def chat_chunk_to_proto(chunk: Mapping[str, Any]) -> v1.ChatCompletionChunk:
    return build(v1.ChatCompletionChunk, _chunk_fields(chunk))


def encode_chat_chunk(chunk: Mapping[str, Any]) -> bytes:
    """One stream message's bytes, straight from the OpenAI JSON chunk (the hot path)."""
    return encode(v1.ChatCompletionChunk, _chunk_fields(chunk))


def _chunk_fields(chunk: Mapping[str, Any]) -> dict[str, Any]:
    r = Reader(chunk)
    return dict(
        **_envelope_in(r, "chat.completion.chunk"),
        choices=r.messages("choices", _chunk_choice_in, required=True),
        usage=r.message("usage", _usage_in),
        extra=r.leftover(),
        null_fields=r.nulls,
    )


def chat_chunk_from_proto(chunk: v1.ChatCompletionChunk | Message) -> dict[str, Any]:
    msg: Any = upb(v1.ChatCompletionChunk, chunk)
    out = _envelope_out(msg, "chat.completion.chunk")
    out["choices"] = [_choice_out(choice, "delta") for choice in msg.choices]
    if msg.HasField("usage"):
        out["usage"] = _usage_out(msg.usage)
    return merged(out, msg)


def _stop_in(r: Reader) -> list[str]:
    single = r.scalar("stop", "str")
    return [single] if single is not None else r.scalars("stop", "str")


def _message_in(r: Reader) -> Fields:
    content = r.scalar("content", "str")
    return dict(
        role=r.scalar("role", "str", skip_zero=True) or "",
        content=content,
        content_parts=[] if content is not None else r.messages("content", _part_in),
        tool_calls=r.messages("tool_calls", _tool_call_in),
        **r.optionals(_MESSAGE_STRINGS, "str"),
        extra=r.leftover(),
        null_fields=r.nulls,
    )


def _message_out(m: Any, *, null_content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role} if m.role else {}
    if m.content_parts:
        out["content"] = [_part_out(part) for part in m.content_parts]
    elif m.HasField("content"):
        out["content"] = m.content
    elif null_content:
        out["content"] = None
    out |= present(m, _MESSAGE_STRINGS)
    if m.tool_calls:
        out["tool_calls"] = [_tool_call_out(call) for call in m.tool_calls]
    return merged(out, m)


def _part_in(r: Reader) -> Fields:
    return {
        "type": r.scalar("type", "str") or "",
        "text": r.scalar("text", "str"),
        "refusal": r.scalar("refusal", "str"),
        "image_url": r.message(
            "image_url",
            lambda s: {"url": s.scalar("url", "str") or "", "detail": s.scalar("detail", "str")},
        ),
        "input_audio": r.message(
            "input_audio",
            lambda s: {"data": s.scalar("data", "str") or "", "format": s.scalar("format", "str") or ""},
        ),
        "file": r.message("file", lambda s: s.optionals(_FILE_STRINGS, "str")),
        "extra": r.leftover(),
        "null_fields": r.nulls,
    }


def _part_out(p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": p.type, **present(p, ("text", "refusal"))}
    if p.HasField("image_url"):
        out["image_url"] = {"url": p.image_url.url, **present(p.image_url, ("detail",))}
    if p.HasField("input_audio"):
        out["input_audio"] = {"data": p.input_audio.data, "format": p.input_audio.format}
    if p.HasField("file"):
        out["file"] = present(p.file, _FILE_STRINGS)
    return merged(out, p)


def _tool_call_in(r: Reader) -> Fields:
    return {
        "index": r.scalar("index", "int32"),
        "id": r.scalar("id", "str"),
        "type": r.scalar("type", "str"),
        "function": r.message(
            "function",
            lambda s: {"name": s.scalar("name", "str"), "arguments": s.scalar("arguments", "str")},
        ),
    }


def _tool_call_out(call: Any) -> dict[str, Any]:
    out = present(call, ("index", "id", "type"))
    if call.HasField("function"):
        out["function"] = present(call.function, ("name", "arguments"))
    return out


def _tool_in(r: Reader) -> Fields:
    return {
        "type": r.scalar("type", "str", skip_zero=True) or "",
        "function": r.message(
            "function",
            lambda s: {
                "name": s.scalar("name", "str") or "",
                "description": s.scalar("description", "str"),
                "parameters": s.struct("parameters"),
                "strict": s.scalar("strict", "bool"),
            },
        ),
    }


def _tool_out(tool: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": tool.type or "function"}
    if (fn := field(tool, "function")) is not None:
        out["function"] = {"name": fn.name, **present(fn, ("description",))}
        out["function"] |= _structs_out(fn, "parameters") | present(fn, ("strict",))
    return out


def _tool_choice_in(r: Reader) -> Fields | None:
    value = r.read("tool_choice")
    if isinstance(value, str):
        choice = {"mode": value}
    elif isinstance(name := _forced_function(value), str):
        choice = {"function_name": name}
    else:
        return None  # other shapes (allowed_tools, ...) travel in `extra`
    del r.rest["tool_choice"]
    return choice


def _forced_function(value: Any) -> str | None:
    """The name in exactly `{"type": "function", "function": {"name": ...}}`, else None."""
    if not isinstance(value, dict) or value.keys() != {"type", "function"} or value["type"] != "function":
        return None
    function = value["function"]
    if not isinstance(function, dict) or function.keys() != {"name"}:
        return None
    name = function["name"]
    return name if isinstance(name, str) and name else None


def _tool_choice_out(choice: Any) -> Any:
    if choice.function_name:
        return {"type": "function", "function": {"name": choice.function_name}}
    return choice.mode


def _response_format_in(r: Reader) -> Fields:
    return {
        "type": r.scalar("type", "str") or "",
        "json_schema": r.message(
            "json_schema",
            lambda s: {
                "name": s.scalar("name", "str") or "",
                "description": s.scalar("description", "str"),
                "schema": s.struct("schema"),
                "strict": s.scalar("strict", "bool"),
            },
        ),
    }


def _response_format_out(fmt: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": fmt.type}
    if (schema := field(fmt, "json_schema")) is not None:
        out["json_schema"] = {"name": schema.name, **present(schema, ("description",))}
        out["json_schema"] |= _structs_out(schema, "schema") | present(schema, ("strict",))
    return out


def _structs_out(msg: Any, *names: str) -> dict[str, Any]:
    """The set Struct fields `names` of `msg`, as JSON objects."""
    return {name: plain(getattr(msg, name)) for name in names if msg.HasField(name)}


def _envelope_in(r: Reader, default_object: str) -> dict[str, Any]:
    obj = r.scalar("object", "str", skip_zero=True)
    return {
        "id": r.scalar("id", "str") or "",
        "object": obj or default_object,
        "created": r.scalar("created", "int64") or 0,
        "model": r.scalar("model", "str") or "",
        **r.optionals(("system_fingerprint", "service_tier"), "str"),
    }


def _envelope_out(msg: Any, default_object: str) -> dict[str, Any]:
    out = {"id": msg.id, "object": msg.object or default_object, "created": msg.created, "model": msg.model}
    return out | present(msg, ("system_fingerprint", "service_tier"))


def _choice_in(r: Reader) -> Fields:
    return _any_choice_in(r, "message")


def _chunk_choice_in(r: Reader) -> Fields:
    return _any_choice_in(r, "delta")


def _any_choice_in(r: Reader, body: str) -> Fields:
    """A completion's choice carries a `message`, a chunk's a `delta`; the rest is the same."""
    return {
        "index": r.scalar("index", "int32") or 0,
        body: r.message(body, _message_in),
        "finish_reason": r.scalar("finish_reason", "str"),
        "logprobs": r.struct("logprobs"),
        "extra": r.leftover(),
        "null_fields": r.nulls,
    }


def _choice_out(choice: Any, key: str) -> dict[str, Any]:
    """A completion's choice (`key` "message") or a chunk's (`key` "delta")."""
    out: dict[str, Any] = {"index": choice.index}
    if choice.HasField(key):
        out[key] = _message_out(getattr(choice, key), null_content=False)
    out |= present(choice, ("finish_reason",)) | _structs_out(choice, "logprobs")
    return merged(out, choice)


def _usage_in(r: Reader) -> Fields:
    return {
        "prompt_tokens": r.scalar("prompt_tokens", "int64") or 0,
        "completion_tokens": r.scalar("completion_tokens", "int64") or 0,
        "total_tokens": r.scalar("total_tokens", "int64") or 0,
        "prompt_tokens_details": r.message(
            "prompt_tokens_details", lambda s: _details_in(s, _PROMPT_DETAILS)
        ),
        "completion_tokens_details": r.message(
            "completion_tokens_details", lambda s: _details_in(s, _COMPLETION_DETAILS)
        ),
        "cost": r.scalar("cost", "double"),
        "extra": r.leftover(),
        "null_fields": r.nulls,
    }


def _details_in(r: Reader, keys: tuple[str, ...]) -> Fields:
    # `optional` fields: a reported `"audio_tokens": 0` is set, an absent one unset.
    return {**r.optionals(keys, "int64"), "extra": r.leftover(), "null_fields": r.nulls}


def _usage_out(usage: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    for key, keys in (
        ("prompt_tokens_details", _PROMPT_DETAILS),
        ("completion_tokens_details", _COMPLETION_DETAILS),
    ):
        if (details := field(usage, key)) is not None:
            out[key] = merged(present(details, keys), details)
    return merged(out | present(usage, ("cost",)), usage)
