"""OpenAI JSON request bodies → the gateway's request messages, built as the server builds them.

The rules are the server's (`chat_request_from_json`, `embeddings_request_from_json`): a field the proto
defines takes a value it holds exactly, a null is that field unset with its name in the message's
`null_fields` (read as absent in messages without one), and anything else (unknown keys, wrong types,
empty lists, out-of-range numbers) travels verbatim in the nearest `extra`, so the gateway sends the
upstream the JSON the caller wrote. A string `stop` becomes a one-element list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from llmgw_client._messages import pb, v1
from llmgw_client._struct import to_struct

__all__ = ["chat_request", "embeddings_request"]

Kind = Literal["str", "bool", "int32", "int64", "double"]
T = TypeVar("T")

_INT_LIMITS = {"int32": 2**31, "int64": 2**63}
_EXACT_DOUBLE_INT = 2**53

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


def _fits(value: Any, kind: Kind) -> bool:
    """Whether a proto scalar of `kind` holds `value` so that it converts back to an equal JSON value."""
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool" or isinstance(value, bool):
        return isinstance(value, bool) and kind == "bool"
    if kind == "double":
        return isinstance(value, float) or (isinstance(value, int) and abs(value) <= _EXACT_DOUBLE_INT)
    return isinstance(value, int) and -_INT_LIMITS[kind] <= value < _INT_LIMITS[kind]


class _Reader:
    """One JSON object being read into a message; what no method consumes stays in `rest`, and the keys
    read null are noted in `nulls`, in reading order (the server's `json_fields.Reader`, building
    betterproto2 messages)."""

    __slots__ = ("nulls", "rest")

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.rest: dict[str, Any] = dict(obj)
        self.nulls: list[str] = []

    def read(self, key: str) -> Any:
        """The value of a key the proto defines, None when absent or null (a null is consumed and noted)."""
        rest = self.rest
        value = rest.get(key)
        if value is None and key in rest:
            del rest[key]
            self.nulls.append(key)
        return value

    def scalar(self, key: str, kind: Kind, *, skip_zero: bool = False) -> Any:
        value = self.read(key)
        if value is None or not _fits(value, kind) or (skip_zero and not value):
            return None
        del self.rest[key]
        return float(value) if kind == "double" else value

    def optionals(self, keys: tuple[str, ...], kind: Kind) -> dict[str, Any]:
        rest = self.rest
        found = {}
        for key in keys:
            if key in rest and (value := self.scalar(key, kind)) is not None:
                found[key] = value
        return found

    def scalars(self, key: str, kind: Kind) -> list[Any]:
        value = self.read(key)
        if not isinstance(value, list) or not value or not all(_fits(v, kind) for v in value):
            return []
        del self.rest[key]
        return [float(v) for v in value] if kind == "double" else list(value)

    def mapping(self, key: str, kind: Kind) -> dict[str, Any]:
        value = self.read(key)
        if not isinstance(value, dict) or not value or not all(_fits(v, kind) for v in value.values()):
            return {}
        del self.rest[key]
        return {k: float(v) if kind == "double" else v for k, v in value.items()}

    def struct(self, key: str) -> pb.Struct | None:
        value = self.read(key)
        if not isinstance(value, dict):
            return None
        del self.rest[key]
        return to_struct(value)

    def message(self, key: str, build: Callable[[_Reader], T]) -> T | None:
        value = self.read(key)
        if not isinstance(value, dict):
            return None
        child = _Reader(value)
        result = build(child)
        self._settle(key, child.rest)
        return result

    def messages(self, key: str, build: Callable[[_Reader], T], *, required: bool = False) -> list[T]:
        value = self.read(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return []
        if not value and not required:
            return []
        children = [_Reader(v) for v in value]
        result = [build(child) for child in children]
        self._settle(key, [child.rest for child in children])
        return result

    def leftover(self) -> pb.Struct | None:
        rest, self.rest = self.rest, {}
        return to_struct(rest) if rest else None

    def remainder(self) -> dict[str, Any]:
        """The `extra` and `null_fields` of a message that has both."""
        return {"extra": self.leftover(), "null_fields": self.nulls}

    def _settle(self, key: str, remainder: dict[str, Any] | list[dict[str, Any]]) -> None:
        if any(remainder) if isinstance(remainder, list) else remainder:
            self.rest[key] = remainder
        else:
            del self.rest[key]


def chat_request(body: Mapping[str, Any]) -> v1.CreateChatCompletionRequest:
    """The request message for an OpenAI chat body; `stream` is dropped (the RPC decides)."""
    r = _Reader(body)
    r.rest.pop("stream", None)
    return v1.CreateChatCompletionRequest(
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
            "stream_options", lambda s: v1.StreamOptions(include_usage=s.scalar("include_usage", "bool"))
        ),
        audio=r.struct("audio"),
        prediction=r.struct("prediction"),
        **r.remainder(),
    )


def _stop_in(r: _Reader) -> list[str]:
    single = r.scalar("stop", "str")
    return [single] if single is not None else r.scalars("stop", "str")


def _message_in(r: _Reader) -> v1.ChatMessage:
    content = r.scalar("content", "str")
    return v1.ChatMessage(
        role=r.scalar("role", "str", skip_zero=True) or "",
        content=content,
        content_parts=[] if content is not None else r.messages("content", _part_in),
        tool_calls=r.messages("tool_calls", _tool_call_in),
        **r.optionals(_MESSAGE_STRINGS, "str"),
        **r.remainder(),
    )


def _part_in(r: _Reader) -> v1.ContentPart:
    return v1.ContentPart(
        type=r.scalar("type", "str") or "",
        text=r.scalar("text", "str"),
        refusal=r.scalar("refusal", "str"),
        image_url=r.message(
            "image_url",
            lambda s: v1.ImageUrl(url=s.scalar("url", "str") or "", detail=s.scalar("detail", "str")),
        ),
        input_audio=r.message(
            "input_audio",
            lambda s: v1.InputAudio(
                data=s.scalar("data", "str") or "", format=s.scalar("format", "str") or ""
            ),
        ),
        file=r.message("file", lambda s: v1.FileContent(**s.optionals(_FILE_STRINGS, "str"))),
        **r.remainder(),
    )


def _tool_call_in(r: _Reader) -> v1.ToolCall:
    return v1.ToolCall(
        index=r.scalar("index", "int32"),
        id=r.scalar("id", "str"),
        type=r.scalar("type", "str"),
        function=r.message(
            "function",
            lambda s: v1.FunctionCall(name=s.scalar("name", "str"), arguments=s.scalar("arguments", "str")),
        ),
    )


def _tool_in(r: _Reader) -> v1.Tool:
    return v1.Tool(
        type=r.scalar("type", "str", skip_zero=True) or "",
        function=r.message(
            "function",
            lambda s: v1.FunctionDefinition(
                name=s.scalar("name", "str") or "",
                description=s.scalar("description", "str"),
                parameters=s.struct("parameters"),
                strict=s.scalar("strict", "bool"),
            ),
        ),
    )


def _tool_choice_in(r: _Reader) -> v1.ToolChoice | None:
    value = r.read("tool_choice")
    if isinstance(value, str):
        choice = v1.ToolChoice(mode=value)
    elif isinstance(name := _forced_function(value), str):
        choice = v1.ToolChoice(function_name=name)
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


def _response_format_in(r: _Reader) -> v1.ResponseFormat:
    return v1.ResponseFormat(
        type=r.scalar("type", "str") or "",
        json_schema=r.message(
            "json_schema",
            lambda s: v1.JsonSchema(
                name=s.scalar("name", "str") or "",
                description=s.scalar("description", "str"),
                schema=s.struct("schema"),
                strict=s.scalar("strict", "bool"),
            ),
        ),
    )


def embeddings_request(body: Mapping[str, Any]) -> v1.CreateEmbeddingsRequest:
    """The request message for an OpenAI embeddings body: texts in `input`, token ids in `token_input`."""
    r = _Reader(body)
    texts, tokens = _inputs_in(r)
    return v1.CreateEmbeddingsRequest(
        model=r.scalar("model", "str") or "",
        input=texts,
        token_input=tokens,
        dimensions=r.scalar("dimensions", "int32"),
        encoding_format=r.scalar("encoding_format", "str"),
        user=r.scalar("user", "str"),
        **r.remainder(),
    )


def _inputs_in(r: _Reader) -> tuple[list[str], list[v1.TokenIds]]:
    value = r.read("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        return [], []
    if all(isinstance(item, str) for item in value):
        del r.rest["input"]
        return value, []
    if all(_fits(item, "int64") for item in value):
        value = [value]  # one input given as a flat list of token ids
    if all(isinstance(ids, list) and all(_fits(i, "int64") for i in ids) for ids in value):
        del r.rest["input"]
        return [], [v1.TokenIds(ids=ids) for ids in value]
    return [], []
