"""The gRPC front's proto ↔ OpenAI JSON conversions lose nothing a client or an upstream sent."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from grpclib import GRPCError, Status

import llmgw._proto.google.protobuf as pb

# isort: split
# Generated descriptors load in dependency order: google.protobuf, google.api, then llmgateway.v1.
import llmgw._proto.google.api  # noqa: F401
from llmgw._proto.llmgateway import v1
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.errors import InvalidRequest
from llmgw.domain.generation import Attempt, GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.grpc.convert import (
    chat_chunk_from_proto,
    chat_chunk_to_proto,
    chat_completion_from_proto,
    chat_completion_to_proto,
    chat_request_from_json,
    chat_request_to_json,
    embeddings_request_from_json,
    embeddings_request_to_json,
    embeddings_response_from_proto,
    embeddings_response_to_proto,
    encode_chat_chunk,
    encode_chat_completion,
    model_to_proto,
)
from llmgw.infrastructure.grpc.generation import generation_to_proto
from llmgw.infrastructure.grpc.struct_bytes import plain
from llmgw.infrastructure.grpc.upb_codec import EncodedAwareCodec, upb
from llmgw.infrastructure.model_json import model_json
from llmgw.infrastructure.rest.generations import record_json

Json = dict[str, Any]

WEATHER_PARAMETERS: Json = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
        "units": {"type": ["string", "null"], "enum": ["metric", "imperial", None]},
        "hourly": {"type": "boolean", "default": False},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "threshold": {"type": "number", "minimum": 0.5},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": []},
    },
    "required": ["city"],
    "additionalProperties": False,
}

RICH_REQUEST: Json = {
    "model": "dashscope/qwen3-max",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in English.", "name": "ops"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                },
                {"type": "file", "file": {"file_id": "file-abc"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "18 C"},
        {"role": "assistant", "content": "", "reasoning_content": "The user wants both.", "reasoning": None},
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "weather", "description": "Forecast", "parameters": WEATHER_PARAMETERS},
        },
        {"type": "function", "function": {"name": "noop", "parameters": {}, "strict": True}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "parallel_tool_calls": True,
    "functions": [{"name": "legacy", "parameters": {"type": "object", "properties": {}}}],
    "function_call": {"name": "legacy"},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "description": "d", "schema": WEATHER_PARAMETERS, "strict": True},
    },
    "temperature": 0.7,
    "top_p": 0.95,
    "n": 2,
    "stop": ["\n\n", "END"],
    "max_tokens": 512,
    "max_completion_tokens": 1024,
    "presence_penalty": -0.5,
    "frequency_penalty": 0.25,
    "logit_bias": {"50256": -100, "1234": 2.5},
    "logprobs": True,
    "top_logprobs": 5,
    "seed": 1234567890123,
    "user": "user-42",
    "metadata": {"team": "search", "ticket": "T-1"},
    "store": False,
    "service_tier": "auto",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "old text"},
    "reasoning_effort": "high",
    "stream_options": {"include_usage": True},
    "enable_thinking": True,
    "thinking_budget": 1000,
    "provider": {"order": ["openai", "azure"], "allow_fallbacks": False, "max_price": {"prompt": 1.5}},
    "transforms": [],
}


def over_the_wire(msg: Any) -> Any:
    """What the peer gets: gRPC sends the binary encoding."""
    return type(msg).parse(bytes(msg))


def server_decoded(msg: Any) -> Any:
    """What the gateway's handlers get: the server's codec decodes requests with upb."""
    return EncodedAwareCodec().decode(bytes(msg), type(msg))


def request_round_trip(body: Json) -> Json:
    return chat_request_to_json(server_decoded(chat_request_from_json(body)))


def descriptor_of(message_type: type) -> Descriptor:
    """The message as the converters read it (Struct fields as bytes: their values hold any JSON)."""
    return upb(message_type, message_type()).DESCRIPTOR


def _field_for(descriptor: Descriptor, key: str, value: Any) -> Any:
    """The proto field a JSON key of a `descriptor` message lands in (a list `content` is its parts)."""
    if key == "content" and isinstance(value, list):
        key = "content_parts"
    return descriptor.fields_by_name.get(key)


def without_defined_nulls(obj: Json, descriptor: Descriptor) -> Json:
    """`obj`, the JSON of a `descriptor` message, without the nulls of fields the proto defines, at any
    depth: what the trip through proto gives back."""
    out = {}
    for key, value in obj.items():
        field = _field_for(descriptor, key, value)
        if field is None:
            out[key] = value
        elif value is not None:
            out[key] = _without_nulls_in(value, field.message_type)
    return out


def _without_nulls_in(value: Any, nested: Descriptor | None) -> Any:
    if nested is None or nested.GetOptions().map_entry:
        return value  # a scalar, a map, or a Struct's JSON
    if isinstance(value, list):
        return [_without_nulls_in(item, nested) for item in value]
    return without_defined_nulls(value, nested) if isinstance(value, dict) else value


def as_the_trip_gives_it(obj: Json, descriptor: Descriptor) -> Json:
    """`obj`, the JSON of a `descriptor` message, as the trip through proto gives it back: a message with
    `null_fields` keeps its nulls; one without (a tool call, its function, ...) loses those of its fields."""
    keeps_nulls = "null_fields" in descriptor.fields_by_name
    out = {}
    for key, value in obj.items():
        field = _field_for(descriptor, key, value)
        if field is None or (value is None and keeps_nulls):
            out[key] = value
        elif value is not None:
            out[key] = _as_the_trip_gives_it_in(value, field.message_type)
    return out


def _as_the_trip_gives_it_in(value: Any, nested: Descriptor | None) -> Any:
    if nested is None or nested.GetOptions().map_entry:
        return value
    if isinstance(value, list):
        return [_as_the_trip_gives_it_in(item, nested) for item in value]
    return as_the_trip_gives_it(value, nested) if isinstance(value, dict) else value


def extras(msg: Message) -> Iterator[tuple[Json, Descriptor]]:
    """Every `extra` set in `msg` (a upb message) and the messages in it, with its message's descriptor."""
    for field, value in msg.ListFields():
        if field.name == "extra":
            yield plain(value), msg.DESCRIPTOR
        for item in [value] if isinstance(value, Message) else value if field.message_type else []:
            if isinstance(item, Message):
                yield from extras(item)


def defined_nulls_in_extras(msg: Any) -> list[Json]:
    """The `extra`s of a betterproto2 message that hold a null of a field their message defines."""
    return [extra for extra, d in extras(upb(type(msg), msg)) if extra != without_defined_nulls(extra, d)]


REQUEST = descriptor_of(v1.CreateChatCompletionRequest)
COMPLETION = descriptor_of(v1.ChatCompletion)
CHUNK = descriptor_of(v1.ChatCompletionChunk)


# Chat requests


def test_a_rich_openai_request_survives_the_trip_through_proto_bytes_unchanged() -> None:
    body = {**copy.deepcopy(RICH_REQUEST), "stream": True}

    out = request_round_trip(body)

    assert out == RICH_REQUEST
    assert orjson.loads(orjson.dumps(out)) == RICH_REQUEST


def test_the_server_decodes_requests_with_upb_and_both_kinds_of_message_convert_alike() -> None:
    chat = chat_request_from_json(RICH_REQUEST)
    embeddings = embeddings_request_from_json({"model": "m", "input": ["a", "b"], "text_type": "query"})

    assert isinstance(server_decoded(chat), Message)  # upb's, not betterproto2's
    assert isinstance(server_decoded(embeddings), Message)
    assert server_decoded(v1.GetGenerationRequest(id="gen-1")).id == "gen-1"
    assert chat_request_to_json(server_decoded(chat)) == chat_request_to_json(over_the_wire(chat))
    assert chat_request_to_json(server_decoded(chat)) == RICH_REQUEST
    assert embeddings_request_to_json(server_decoded(embeddings)) == embeddings_request_to_json(embeddings)


# Properties out of alphabetical order, more than upb's hash map keeps in order by chance.
SCHEMA: Json = {
    "type": "object",
    "properties": {
        key: {"type": "string"}
        for key in ("reasoning", "answer", "zeta", "alpha", "confidence", "b", "a", "m")
    },
    "required": ["reasoning", "answer"],
}


def keys_in_order(value: Any) -> Any:
    """`value` with every object turned into its list of (key, value) pairs: equality then sees order."""
    if isinstance(value, dict):
        return [(key, keys_in_order(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [keys_in_order(item) for item in value]
    return value


def test_struct_keys_reach_the_upstream_in_the_order_the_client_sent_them() -> None:
    """Structured outputs generate properties in schema order; upb's maps would iterate in hash order."""
    extra = {"zeta": 1, "alpha": {"y": True, "b": None, "x": "s"}, "mid": [{"q": 1, "c": 2}], "a": 0.5}
    msg = v1.CreateChatCompletionRequest(  # betterproto2 writes a Struct's keys in dict order
        model="m",
        tools=[
            v1.Tool(
                type="function",
                function=v1.FunctionDefinition(name="f", parameters=pb.Struct.from_dict(SCHEMA)),
            )
        ],
        response_format=v1.ResponseFormat(
            type="json_schema", json_schema=v1.JsonSchema(name="s", schema=pb.Struct.from_dict(SCHEMA))
        ),
        extra=pb.Struct.from_dict(extra),
    )

    out = chat_request_to_json(server_decoded(msg))

    assert keys_in_order(out["tools"][0]["function"]["parameters"]) == keys_in_order(SCHEMA)
    assert keys_in_order(out["response_format"]["json_schema"]["schema"]) == keys_in_order(SCHEMA)
    assert keys_in_order({k: out[k] for k in extra}) == keys_in_order(extra)
    assert list(out)[-4:] == list(extra)


def test_structs_are_written_with_their_keys_in_order_for_any_protobuf_reader() -> None:
    """What the gateway writes (answers) and what its client helpers build keep the JSON's key order on the
    wire too, so a reader that keeps wire order (betterproto2 does) sees the schema as it was written."""
    body = {
        "model": "m",
        "messages": [],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}},
    }
    request = v1.CreateChatCompletionRequest.parse(bytes(chat_request_from_json(body)))
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [],
        "zeta": 1,
        "alpha": {"y": 2, "b": 3},
        "mid": None,
    }
    encoded = v1.ChatCompletion.parse(encode_chat_completion(answer).data)

    assert request.response_format is not None
    assert request.response_format.json_schema is not None
    assert request.response_format.json_schema.schema is not None
    assert keys_in_order(request.response_format.json_schema.schema.to_dict()) == keys_in_order(SCHEMA)
    assert encoded.extra is not None
    assert keys_in_order(encoded.extra.to_dict()) == keys_in_order(
        {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": None}
    )


def test_structs_nested_deeper_than_upb_would_parse_still_convert() -> None:
    deep: Json = {"leaf": True}
    for _ in range(60):  # upb stops at 100 levels of messages: ~33 levels of JSON objects in a Struct
        deep = {"properties": deep}
    msg = v1.CreateChatCompletionRequest(model="m", extra=pb.Struct.from_dict({"schema": deep}))

    assert chat_request_to_json(server_decoded(msg))["schema"] == deep


@pytest.mark.parametrize(
    "struct",
    [
        b"\x0a\x05\x0a",  # a map entry that claims 5 bytes and has 1
        b"\x0a\x80",  # a truncated varint
        b"\x0a\x02\x08\x05",  # the key as a varint
        b"\x0a\x03\x0a\x01\xff",  # the key not UTF-8
        b"\x0a\x09\x0a\x01k\x12\x04\x15\x00\x00\x00",  # a number of 4 bytes (wire type 5, truncated)
        b"\x0a\x0a\x0a\x01k\x12\x05\x15\x00\x00\x00\x00",  # a number of 4 bytes
        b"\x0a\x03\x0b\x00\x00",  # wire type 3 (groups)
        b"\x00\x00",  # field number 0
    ],
    ids=[
        "overrun",
        "truncated-varint",
        "int-key",
        "bad-utf8",
        "short-fixed32",
        "fixed32-number",
        "group",
        "field-zero",
    ],
)
def test_a_struct_field_that_is_not_a_struct_is_an_invalid_request(struct: bytes) -> None:
    broken = b"\xa2\x06" + bytes((len(struct),)) + struct  # field 100: `extra`

    with pytest.raises(InvalidRequest, match=r"google\.protobuf\.Struct field is not valid"):
        chat_request_to_json(EncodedAwareCodec().decode(broken, v1.CreateChatCompletionRequest))


@pytest.mark.parametrize("message_type", [v1.CreateChatCompletionRequest, v1.GetGenerationRequest])
def test_bytes_that_are_no_request_message_are_the_clients_error(message_type: type) -> None:
    with pytest.raises(GRPCError) as caught:
        EncodedAwareCodec().decode(b"\xff\xff\xff", message_type)

    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message == f"the request is not a valid {message_type.__name__} message"


def test_modelled_request_fields_are_typed_for_grpc_handlers() -> None:
    msg = over_the_wire(chat_request_from_json(RICH_REQUEST))

    assert msg.temperature == 0.7
    assert msg.seed == 1234567890123
    assert msg.stop == ["\n\n", "END"]
    assert msg.tool_choice.function_name == "weather"
    assert msg.response_format.json_schema.strict is True
    assert msg.stream_options.include_usage is True
    user = msg.messages[2]
    assert [part.type for part in user.content_parts][:4] == ["text", "image_url", "image_url", "input_audio"]
    assert user.content_parts[1].image_url.detail == "high"
    assert user.content_parts[5].file.file_id == "file-abc"
    assistant = msg.messages[3]
    assert assistant.content is None
    assert [call.id for call in assistant.tool_calls] == ["call_1", "call_2"]
    assert msg.messages[6].reasoning_content == "The user wants both."
    assert set(msg.extra.fields) == {
        "functions",
        "function_call",
        "enable_thinking",
        "thinking_budget",
        "provider",
        "transforms",
    }


def test_struct_numbers_reach_the_upstream_as_ints_while_double_fields_stay_floats() -> None:
    out = request_round_trip({"model": "m", "messages": [], "thinking_budget": 1000, "temperature": 1.0})

    assert out["thinking_budget"] == 1000
    assert type(out["thinking_budget"]) is int
    assert type(out["temperature"]) is float
    schema = request_round_trip(RICH_REQUEST)["tools"][0]["function"]["parameters"]
    assert type(schema["properties"]["days"]["maximum"]) is int
    assert schema["properties"]["threshold"]["minimum"] == 0.5


def test_whole_numbers_beyond_exact_doubles_stay_doubles_so_the_body_still_encodes() -> None:
    out = request_round_trip({"model": "m", "messages": [], "huge": 1e300, "edge": 2.0**53, "over": 2.0**60})

    assert out["huge"] == 1e300
    assert type(out["huge"]) is float
    assert out["edge"] == 2**53
    assert type(out["edge"]) is int
    assert type(out["over"]) is float
    assert orjson.loads(orjson.dumps(out))["huge"] == 1e300  # an int of 300 digits would not encode


def test_stream_is_never_sent_upstream_even_when_a_client_puts_it_in_extra() -> None:
    msg = v1.CreateChatCompletionRequest(model="m", extra=pb.Struct.from_dict({"stream": True, "top_k": 20}))

    assert chat_request_to_json(msg) == {"model": "m", "messages": [], "top_k": 20}
    assert chat_request_from_json({"model": "m", "messages": [], "stream": False}).extra is None


def test_a_minimal_proto_request_becomes_a_minimal_openai_body() -> None:
    msg = v1.CreateChatCompletionRequest(
        model="openrouter/openai/gpt-4o",
        messages=[
            v1.ChatMessage(role="user", content="hi"),
            v1.ChatMessage(role="assistant", tool_calls=[v1.ToolCall(id="c", type="function")]),
        ],
        tools=[v1.Tool(function=v1.FunctionDefinition(name="f"))],
        tool_choice=v1.ToolChoice(mode="required"),
    )

    assert chat_request_to_json(over_the_wire(msg)) == {
        "model": "openrouter/openai/gpt-4o",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "required",
    }


def test_a_string_stop_becomes_a_one_element_list() -> None:
    assert request_round_trip({"model": "m", "messages": [], "stop": "END"})["stop"] == ["END"]


def test_a_tool_choice_mode_string_survives_as_a_string() -> None:
    assert request_round_trip({"model": "m", "messages": [], "tool_choice": "none"})["tool_choice"] == "none"


def test_request_values_the_proto_cannot_hold_travel_verbatim_in_extra() -> None:
    body: Json = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "u", "uuid": "x"}, "cache": 1}],
            },
            {"role": "user", "content": []},
            {"role": "", "content": "no role"},
        ],
        "max_tokens": 100.5,
        "n": True,
        "top_logprobs": 2**40,
        "tools": [{"type": "", "function": {"name": "f", "parameters": {"type": "object"}, "strict": "yes"}}],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
        "response_format": {"type": "json_object", "note": "extra key"},
        "stream_options": {"include_usage": True, "include_obfuscation": False},
        "logit_bias": {},
        "metadata": {"n": 1},
        "stop": [],
    }

    msg = over_the_wire(chat_request_from_json(body))

    assert chat_request_to_json(msg) == body
    assert msg.max_tokens is None
    assert msg.tools[0].function.strict is None
    assert msg.tool_choice is None
    assert msg.tools[0].function.name == "f"
    assert msg.response_format.type == "json_object"
    assert msg.stream_options.include_usage is True
    assert msg.messages[0].content_parts[0].image_url.url == "u"


def test_request_nulls_of_fields_the_proto_defines_leave_them_unset_out_of_extra_and_named() -> None:
    body: Json = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "name": None,
                "content": [{"type": "text", "text": "hi", "refusal": None, "image_url": None}],
            },
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": None, "reasoning": None},
        ],
        "temperature": None,
        "seed": None,
        "user": None,
        "stop": None,
        "logit_bias": None,
        "metadata": None,
        "modalities": None,
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "description": None, "parameters": None, "strict": None},
            }
        ],
        "tool_choice": None,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": None, "strict": None},
        },
        "stream_options": {"include_usage": None},
        "audio": None,
        "prediction": None,
        "top_k": None,  # not in the proto: it reaches the upstream as the client wrote it
    }

    msg = over_the_wire(chat_request_from_json(body))

    assert (msg.temperature, msg.seed, msg.user, msg.tool_choice, msg.audio) == (None,) * 5
    assert (msg.stop, msg.logit_bias, msg.metadata, msg.modalities) == ([], {}, {}, [])
    function = msg.tools[0].function
    assert (function.description, function.parameters, function.strict) == (None, None, None)
    assert msg.response_format.json_schema.schema is None
    assert msg.stream_options.include_usage is None
    user, assistant = msg.messages
    assert (user.name, user.content_parts[0].refusal, user.content_parts[0].image_url) == (None, None, None)
    assert (user.extra, user.content_parts[0].extra) == (None, None)
    assert (assistant.content, assistant.refusal, assistant.tool_calls) == (None, None, [])
    assert assistant.extra.to_dict() == {"reasoning": None}
    assert msg.extra.to_dict() == {"top_k": None}
    assert defined_nulls_in_extras(msg) == []
    # Messages with an `extra` name their null fields, so the upstream gets them as the client wrote them.
    assert msg.null_fields[:3] == ["temperature", "seed", "user"]
    assert (user.null_fields, user.content_parts[0].null_fields) == (["name"], ["refusal", "image_url"])
    assert assistant.null_fields == ["content", "tool_calls", "refusal"]
    # Nested messages without an `extra` (tools' functions, json_schema, stream_options) drop theirs.
    assert request_round_trip(body) == {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "refusal": None, "image_url": None}],
                "name": None,
            },
            {"role": "assistant", "content": None, "tool_calls": None, "refusal": None, "reasoning": None},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s"}},
        "stream_options": {},
        **{key: None for key in body if body[key] is None},
    }


def test_embeddings_request_nulls_of_fields_the_proto_defines_leave_them_unset_and_come_back() -> None:
    body = {"model": "m", "input": None, "dimensions": None, "encoding_format": None, "user": None, "k": None}

    msg = over_the_wire(embeddings_request_from_json(body))

    assert (msg.input, msg.token_input, msg.dimensions, msg.encoding_format, msg.user) == (
        [],
        [],
        None,
        None,
        None,
    )
    assert msg.extra.to_dict() == {"k": None}
    assert msg.null_fields == ["input", "dimensions", "encoding_format", "user"]
    assert embeddings_request_to_json(msg) == body


def test_an_extra_key_overrides_the_modelled_field_of_the_same_name() -> None:
    msg = v1.CreateChatCompletionRequest(
        model="m", temperature=0.5, extra=pb.Struct.from_dict({"temperature": 0.9})
    )

    assert chat_request_to_json(msg)["temperature"] == 0.9


# Chat answers

OPENROUTER_COMPLETION: Json = {
    "id": "gen-1737000000-abc",
    "provider": "OpenAI",
    "model": "openai/gpt-4o",
    "object": "chat.completion",
    "created": 1737000000,
    "choices": [
        {
            "logprobs": {
                "content": [
                    {"token": "Hi", "logprob": -0.0001, "bytes": [72, 105], "top_logprobs": []},
                    {"token": "!", "logprob": 0.0, "bytes": [33], "top_logprobs": []},
                ],
                "refusal": None,
            },
            "finish_reason": "tool_calls",
            "native_finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "reasoning": "Need the weather.",
                "reasoning_details": [
                    {"type": "reasoning.text", "text": "Need the weather.", "format": "unknown"}
                ],
                "annotations": [],
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "w", "arguments": "{}"},
                    },
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "w", "arguments": "{}"},
                    },
                ],
            },
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
            "logprobs": None,
        },
    ],
    "system_fingerprint": None,
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "cost": 0.00042,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 20, "image_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
    },
}


def completion_round_trip(body: Json) -> Json:
    return chat_completion_from_proto(over_the_wire(chat_completion_to_proto(body)))


def test_an_openrouter_completion_survives_the_trip_through_proto_bytes_nulls_included() -> None:
    out = completion_round_trip(OPENROUTER_COMPLETION)

    assert out == OPENROUTER_COMPLETION
    assert orjson.loads(orjson.dumps(out)) == OPENROUTER_COMPLETION


def test_a_completion_exposes_usage_and_messages_as_typed_fields() -> None:
    msg = over_the_wire(chat_completion_to_proto(OPENROUTER_COMPLETION))

    assert (msg.id, msg.object, msg.created) == ("gen-1737000000-abc", "chat.completion", 1737000000)
    assert msg.usage.total_tokens == 42
    assert msg.usage.cost == 0.00042
    assert msg.usage.prompt_tokens_details.cached_tokens == 8
    assert msg.usage.completion_tokens_details.reasoning_tokens == 20
    assert msg.usage.extra.to_dict()["is_byok"] is False
    assert msg.extra.to_dict() == {"provider": "OpenAI"}
    assert msg.system_fingerprint is None
    first = msg.choices[0]
    assert first.finish_reason == "tool_calls"
    assert first.extra.to_dict() == {"native_finish_reason": "tool_calls"}
    assert first.logprobs.to_dict()["content"][0]["token"] == "Hi"
    assert [call.function.name for call in first.message.tool_calls] == ["w", "w"]
    assert set(first.message.extra.fields) == {"reasoning", "reasoning_details", "annotations"}
    assert (first.message.content, first.message.refusal) == (None, None)
    assert msg.choices[1].message.content == "Hello!"
    assert msg.choices[1].logprobs is None
    assert msg.choices[1].extra is None


# Every field the proto defines that an upstream may send as null, at every level, and two it does not.
ANSWER_WITH_NULLS: Json = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "system_fingerprint": None,
    "service_tier": None,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "name": None,
                "reasoning_content": None,
                "tool_call_id": None,
                "tool_calls": [
                    {"index": None, "id": "c", "type": None, "function": {"name": None, "arguments": "{}"}}
                ],
                "annotations": None,
            },
            "finish_reason": None,
            "logprobs": None,
            "native_finish_reason": None,
        },
        {"index": 1, "message": None, "finish_reason": "stop", "logprobs": None},
    ],
    "usage": {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "cost": None,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None},
        "is_byok": None,
    },
}


def test_answer_nulls_of_fields_the_proto_defines_are_unset_and_never_in_extra() -> None:
    msg: Any = v1.ChatCompletion.parse(encode_chat_completion(ANSWER_WITH_NULLS).data)  # the gateway's bytes

    assert (msg.system_fingerprint, msg.service_tier, msg.extra) == (None, None, None)
    first, second = msg.choices
    assert (first.finish_reason, first.logprobs) == (None, None)
    assert first.extra.to_dict() == {"native_finish_reason": None}
    message = first.message
    assert (message.content, message.refusal, message.name, message.reasoning_content) == (None,) * 4
    assert message.tool_call_id is None
    assert message.extra.to_dict() == {"annotations": None}
    (call,) = message.tool_calls
    assert (call.index, call.id, call.type) == (None, "c", None)
    assert (call.function.name, call.function.arguments) == (None, "{}")
    assert (second.message, second.logprobs, second.extra) == (None, None, None)
    assert (msg.usage.cost, msg.usage.prompt_tokens_details) == (None, None)
    assert msg.usage.completion_tokens_details.reasoning_tokens is None
    assert msg.usage.extra.to_dict() == {"is_byok": None}
    assert defined_nulls_in_extras(msg) == []


def test_answer_nulls_of_defined_fields_come_back_as_nulls() -> None:
    usage_chunk = {**HEAD, "choices": [], "usage": None}

    out = completion_round_trip(ANSWER_WITH_NULLS)

    assert out == as_the_trip_gives_it(ANSWER_WITH_NULLS, COMPLETION)
    # Only a tool call's own nulls are lost: it has no `null_fields`.
    assert out["choices"][0]["message"]["tool_calls"] == [{"id": "c", "function": {"arguments": "{}"}}]
    assert out["choices"][1] == {"index": 1, "message": None, "finish_reason": "stop", "logprobs": None}
    assert out["usage"]["completion_tokens_details"] == {"reasoning_tokens": None}
    assert chunk_round_trip(usage_chunk) == usage_chunk


def test_zero_usage_details_are_written_back_while_typed_counts_stay_readable() -> None:
    usage: Json = {
        "prompt_tokens": 5,
        "completion_tokens": 0,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 3,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    body: Json = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": usage,
    }

    msg = over_the_wire(chat_completion_to_proto(body))

    assert msg.usage.completion_tokens_details.reasoning_tokens == 3
    assert msg.usage.prompt_tokens_details.cached_tokens == 0
    # Zeros are the typed (optional) fields' values, set (issue 14): none of the usage waits in an `extra`.
    assert msg.usage.completion_tokens_details.rejected_prediction_tokens == 0
    assert msg.usage.extra is None
    assert msg.usage.prompt_tokens_details.extra is None
    assert msg.usage.completion_tokens_details.extra is None
    assert chat_completion_from_proto(msg) == body


def test_usage_details_the_proto_does_not_name_travel_in_the_details_own_extra() -> None:
    msg = over_the_wire(chat_completion_to_proto(OPENROUTER_COMPLETION))

    details = msg.usage.completion_tokens_details
    assert (details.reasoning_tokens, details.extra.to_dict()) == (20, {"image_tokens": 0})
    assert msg.usage.prompt_tokens_details.audio_tokens == 0
    assert "completion_tokens_details" not in msg.usage.extra.to_dict()
    assert "prompt_tokens_details" not in msg.usage.extra.to_dict()


def test_a_proto_built_answer_gets_the_openai_object_name() -> None:
    msg = v1.ChatCompletion(
        id="gen-1",
        created=7,
        model="m",
        choices=[v1.Choice(message=v1.ChatMessage(role="assistant", content="ok"), finish_reason="stop")],
        usage=v1.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
    )

    assert chat_completion_from_proto(msg) == {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


# Chat stream chunks

HEAD: Json = {
    "id": "chatcmpl-9",
    "object": "chat.completion.chunk",
    "created": 1737000001,
    "model": "qwen3-max",
}

DASHSCOPE_STREAM: list[Json] = [
    {
        **HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": None, "reasoning_content": "Let me think"},
                "finish_reason": None,
                "logprobs": None,
            }
        ],
        "usage": None,
        "system_fingerprint": None,
    },
    {
        **HEAD,
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None, "logprobs": None}],
        "usage": None,
    },
    {
        **HEAD,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}],
        "usage": None,
    },
    {
        **HEAD,
        "choices": [],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 25,
            "total_tokens": 35,
            "completion_tokens_details": {"reasoning_tokens": 15},
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    },
]

PARALLEL_TOOL_CALL_STREAM: list[Json] = [
    {
        **HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "w", "arguments": ""},
                        }
                    ],
                },
                "finish_reason": None,
                "logprobs": None,
            }
        ],
    },
    {
        **HEAD,
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}}],
    },
    {
        **HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "w", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    },
    {
        **HEAD,
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}}],
    },
    {
        **HEAD,
        "provider": "Google",
        "choices": [
            {
                "index": 0,
                "delta": {"content": ""},
                "finish_reason": "tool_calls",
                "native_finish_reason": "STOP",
            }
        ],
    },
    {
        **HEAD,
        "provider": "Google",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12, "cost": 0},
    },
]


def chunk_round_trip(chunk: Json) -> Json:
    return chat_chunk_from_proto(over_the_wire(chat_chunk_to_proto(chunk)))


def test_a_dashscope_thinking_stream_survives_chunk_by_chunk_nulls_included() -> None:
    out = [chunk_round_trip(chunk) for chunk in DASHSCOPE_STREAM]

    assert out == DASHSCOPE_STREAM


@pytest.mark.parametrize(
    "chunk",
    [*DASHSCOPE_STREAM, *PARALLEL_TOOL_CALL_STREAM],
    ids=[f"dashscope-{i}" for i in range(len(DASHSCOPE_STREAM))]
    + [f"tool-calls-{i}" for i in range(len(PARALLEL_TOOL_CALL_STREAM))],
)
def test_no_streamed_extra_holds_a_null_of_a_field_its_message_defines(chunk: Json) -> None:
    msg = v1.ChatCompletionChunk.parse(encode_chat_chunk(chunk))  # what the gateway sends

    assert defined_nulls_in_extras(msg) == []
    for choice in msg.choices:
        assert choice.extra is None or "finish_reason" not in choice.extra.fields


def test_reasoning_content_deltas_and_the_usage_chunk_are_typed() -> None:
    first, *_, last = [over_the_wire(chat_chunk_to_proto(chunk)) for chunk in DASHSCOPE_STREAM]

    assert first.choices[0].delta.reasoning_content == "Let me think"
    assert first.usage is None
    assert first.system_fingerprint is None
    assert first.extra is None
    assert first.choices[0].finish_reason is None
    assert first.choices[0].extra is None
    assert first.choices[0].delta.extra is None
    assert last.choices == []
    assert last.usage.completion_tokens_details.reasoning_tokens == 15
    assert last.usage.prompt_tokens_details.cached_tokens == 4
    assert last.extra is None


def test_parallel_tool_call_deltas_keep_their_index_through_the_trip() -> None:
    protos = [over_the_wire(chat_chunk_to_proto(chunk)) for chunk in PARALLEL_TOOL_CALL_STREAM]

    expected = [as_the_trip_gives_it(chunk, CHUNK) for chunk in PARALLEL_TOOL_CALL_STREAM]
    assert [chat_chunk_from_proto(msg) for msg in protos] == expected
    indexes = [call.index for msg in protos for choice in msg.choices for call in choice.delta.tool_calls]
    assert indexes == [0, 0, 1, 1]
    assert protos[-2].choices[0].extra.to_dict() == {"native_finish_reason": "STOP"}


def test_the_usage_chunk_keeps_empty_choices() -> None:
    out = chunk_round_trip(PARALLEL_TOOL_CALL_STREAM[-1])

    assert out["choices"] == []
    assert out["usage"]["cost"] == 0


def test_unknown_keys_inside_tool_calls_do_not_hide_the_typed_calls() -> None:
    delta = {
        "tool_calls": [
            {"index": 0, "id": "c0", "function": {"name": None, "arguments": "{}"}},
            {"index": 1, "id": "c1", "extra_content": {"google": {"thought_signature": "sig"}}},
        ]
    }
    chunk = {**HEAD, "choices": [{"index": 0, "delta": delta}]}

    msg = over_the_wire(chat_chunk_to_proto(chunk))

    assert [call.id for call in msg.choices[0].delta.tool_calls] == ["c0", "c1"]
    assert msg.choices[0].delta.tool_calls[0].function.arguments == "{}"
    assert msg.choices[0].delta.tool_calls[0].function.name is None
    assert chat_chunk_from_proto(msg) == without_defined_nulls(chunk, CHUNK)


def test_a_midstream_error_event_survives_as_extra() -> None:
    chunk = {
        **HEAD,
        "error": {"code": 502, "message": "Provider disconnected"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }

    assert chunk_round_trip(chunk) == chunk


# Embeddings


def test_one_embeddings_input_is_sent_as_a_plain_string_and_several_as_a_list() -> None:
    one = v1.CreateEmbeddingsRequest(model="dashscope/text-embedding-v4", input=["hello"], dimensions=512)
    several = v1.CreateEmbeddingsRequest(model="m", input=["a", "b"], encoding_format="float", user="u")

    assert embeddings_request_to_json(over_the_wire(one)) == {
        "model": "dashscope/text-embedding-v4",
        "input": "hello",
        "dimensions": 512,
    }
    assert embeddings_request_to_json(over_the_wire(several)) == {
        "model": "m",
        "input": ["a", "b"],
        "encoding_format": "float",
        "user": "u",
    }


def test_token_inputs_are_sent_as_lists_of_token_ids_with_extra_merged() -> None:
    msg = v1.CreateEmbeddingsRequest(
        model="m",
        token_input=[v1.TokenIds(ids=[1, 2, 3]), v1.TokenIds(ids=[4])],
        extra=pb.Struct.from_dict({"text_type": "query"}),
    )

    assert embeddings_request_to_json(over_the_wire(msg)) == {
        "model": "m",
        "input": [[1, 2, 3], [4]],
        "text_type": "query",
    }


def test_embeddings_request_bodies_round_trip_through_proto() -> None:
    texts = {"model": "m", "input": ["a", "b"], "dimensions": 64, "text_type": "document"}
    tokens = {"model": "m", "input": [[1, 2], [3]]}

    assert embeddings_request_to_json(server_decoded(embeddings_request_from_json(texts))) == texts
    assert embeddings_request_to_json(server_decoded(embeddings_request_from_json(tokens))) == tokens
    assert embeddings_request_to_json(embeddings_request_from_json({"model": "m", "input": [7, 8]}))[
        "input"
    ] == [[7, 8]]


def test_float_and_base64_embeddings_reach_their_own_proto_fields() -> None:
    body: Json = {
        "id": "gen-emb-1",
        "object": "list",
        "model": "dashscope/text-embedding-v4",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]},
            {"object": "embedding", "index": 1, "embedding": "AACAPgAAAL8AAAA+"},
        ],
        "usage": {"prompt_tokens": 6, "total_tokens": 6, "cost": 0.0001},
    }

    msg = over_the_wire(embeddings_response_to_proto(body))

    assert msg.data[0].embedding == [0.25, -0.5, 0.125]
    assert msg.data[1].embedding_base64 == "AACAPgAAAL8AAAA+"
    assert msg.data[1].embedding == []
    assert (msg.usage.prompt_tokens, msg.usage.cost) == (6, 0.0001)
    assert embeddings_response_from_proto(msg) == body


def test_an_embeddings_answer_without_id_or_usage_converts() -> None:
    body: Json = {
        "object": "list",
        "model": "m",
        "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}],
    }

    msg = over_the_wire(embeddings_response_to_proto(body))

    assert msg.id == ""
    assert msg.usage is None
    assert embeddings_response_from_proto(msg) == body


# Models and generation records: one field list for both fronts


def test_a_catalog_model_becomes_an_openai_model_entry_with_gateway_fields() -> None:
    spec = ModelSpec(
        id="openrouter/openai/gpt-4o",
        name="GPT-4o",
        provider="openrouter",
        upstream_model="openai/gpt-4o",
        capabilities=frozenset({Capability.TOOLS, Capability.CHAT, Capability.VISION}),
        created=1715367049,
    )

    msg = over_the_wire(model_to_proto(spec))

    assert (msg.id, msg.object, msg.created, msg.name, msg.provider) == (
        "openrouter/openai/gpt-4o",
        "model",
        1715367049,
        "GPT-4o",
        "openrouter",
    )
    assert msg.owned_by == "openrouter"
    assert msg.capabilities == ["chat", "vision", "tools"]


def test_a_model_keeps_its_configured_owner() -> None:
    spec = ModelSpec(
        id="dashscope/text-embedding-v4",
        name="Embedding v4",
        provider="dashscope",
        upstream_model="text-embedding-v4",
        capabilities=frozenset({Capability.EMBEDDINGS}),
        owned_by="alibaba",
    )

    assert model_to_proto(spec).owned_by == "alibaba"
    assert model_to_proto(spec).capabilities == ["embeddings"]


def test_a_model_has_the_same_fields_and_values_on_both_fronts() -> None:
    spec = ModelSpec(
        id="dashscope/qwen3-max",
        name="Qwen3 Max",
        provider="dashscope",
        upstream_model="qwen3-max",
        capabilities=frozenset({Capability.REASONING, Capability.CHAT}),
        created=1715367049,
    )

    rest = model_json(spec)
    msg = over_the_wire(model_to_proto(spec))

    assert {field.name for field in dataclasses.fields(v1.Model)} == set(rest)
    assert {name: getattr(msg, name) for name in rest} == rest


RECORD = GenerationRecord(
    id="gen-1",
    request_id="req-1",
    kind=GenerationKind.CHAT,
    model="dashscope/qwen3-max",
    provider="dashscope",
    upstream_model="qwen3-max",
    created_at=1737000000.25,
    streamed=True,
    status=GenerationStatus.CANCELLED,
    upstream_id="chatcmpl-1",
    finish_reason="stop",
    prompt_tokens=10,
    completion_tokens=20,
    total_tokens=30,
    cached_tokens=4,
    reasoning_tokens=5,
    cost_usd=0.5,
    latency_ms=12.5,
    time_to_first_token_ms=3.5,
    error_code="client_closed",
    error_message="The client went away.",
    user="user-7",
    attempts=(
        Attempt("openrouter", "qwen/qwen3-max", "qwen3-max", "error", "upstream_unavailable", 3.25),
        Attempt("dashscope", "qwen3-max", "dashscope/qwen3-max", "cancelled", "cancelled", 9.0),
    ),
    key_id="abcdefgh2345",
    team_id="team-qrstuvwx6789",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
)


def test_every_record_field_reads_the_same_on_both_fronts_by_its_own_name() -> None:
    rest = record_json(RECORD)
    msg = over_the_wire(generation_to_proto(RECORD))

    assert list(rest) == [field.name for field in dataclasses.fields(GenerationRecord)]
    assert {field.name for field in dataclasses.fields(v1.Generation)} == set(rest)
    assert rest["created_at"] == "2025-01-16T04:00:00.250000Z"
    assert msg.created_at == datetime.fromtimestamp(1737000000.25, UTC)
    assert (rest["kind"], rest["status"]) == ("chat", "cancelled")
    assert msg.status == v1.GenerationStatus.CANCELLED
    same = set(rest) - {"created_at", "status", "attempts"}
    assert {name: getattr(msg, name) for name in same} == {name: rest[name] for name in same}
    assert [dataclasses.asdict(a) for a in msg.attempts] == rest["attempts"]
    assert rest["attempts"][0] == {
        "provider": "openrouter",
        "upstream_model": "qwen/qwen3-max",
        "model": "qwen3-max",
        "outcome": "error",
        "error_code": "upstream_unavailable",
        "duration_ms": 3.25,
    }


def test_missing_text_reads_null_on_rest_and_empty_on_grpc_but_the_upstream_id_reads_empty_on_both() -> None:
    record = dataclasses.replace(
        RECORD,
        status=GenerationStatus.ERROR,
        upstream_id="",
        finish_reason="",
        error_code="",
        error_message="",
        user="",
        cost_usd=None,
        latency_ms=None,
        time_to_first_token_ms=None,
    )
    text = ("upstream_id", "finish_reason", "error_code", "error_message", "user")
    unknown = ("cost_usd", "latency_ms", "time_to_first_token_ms")

    rest = record_json(record)
    msg = over_the_wire(generation_to_proto(record))

    assert [rest[name] for name in text] == ["", None, None, None, None]
    assert [getattr(msg, name) for name in text] == ["", "", "", "", ""]
    assert [rest[name] for name in unknown] == [None, None, None]
    assert [getattr(msg, name) for name in unknown] == [None, None, None]
    assert (rest["status"], msg.status) == ("error", v1.GenerationStatus.ERROR)
