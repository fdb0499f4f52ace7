"""The client's conversions agree with the server's: requests build the proto the server builds from the
same JSON, and answers read back as the JSON body the REST front sends."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from llmgw_client import _convert, _requests
from llmgw_client._messages import v1
from llmgw_client._transport import CallInfo
from llmgw_client.types import ChatCompletion, ChatCompletionChunk

from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.generation import Attempt, GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.grpc.convert import (
    chat_request_from_json,
    chat_request_to_json,
    embeddings_request_from_json,
    embeddings_request_to_json,
    encode_chat_chunk,
    encode_chat_completion,
    encode_embeddings_response,
    model_to_proto,
)
from llmgw.infrastructure.grpc.generation import generation_to_proto
from llmgw.infrastructure.grpc.messages import v1 as server_v1
from llmgw.infrastructure.grpc.upb_codec import upb
from llmgw.infrastructure.model_json import model_json
from llmgw.infrastructure.rest.generations import record_json

INFO = CallInfo(request_id="req-1", generation_id="gen-1")


def _wire(server_class: type, message: Any) -> bytes:
    """`message` (either side's) as the server reads it, re-serialised with maps sorted: equal bytes mean
    equal messages, Struct keys in the same order (Structs stay raw bytes in the server's twins)."""
    data: bytes = upb(server_class, message).SerializeToString(deterministic=True)
    return data


SCHEMA = {
    "type": "object",
    "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer", "minimum": 0}},
    "required": ["zeta", "alpha"],
    "additionalProperties": False,
}

CHAT_BODIES: dict[str, dict[str, Any]] = {
    "a minimal request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "every scalar parameter": {
        "model": "openai/gpt-4o",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "top_p": 1,
        "n": 2,
        "max_tokens": 100,
        "max_completion_tokens": 200,
        "presence_penalty": -0.5,
        "frequency_penalty": 0,
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 2**40,
        "user": "u-1",
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "store": False,
        "service_tier": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    "a string stop, maps, modalities, audio and prediction": {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stop": "\n\n",
        "logit_bias": {"50256": -100, "13": 1.5},
        "metadata": {"team": "search", "run": "7"},
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "prediction": {"type": "content", "content": "draft"},
    },
    "tools, a forced function and a json_schema response format": {
        "model": "m",
        "messages": [{"role": "user", "content": "weather?"}],
        "stop": ["a", "b"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": SCHEMA,
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "noop"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "description": "d", "schema": SCHEMA, "strict": True},
        },
    },
    "a tool_choice mode and a json_object format": {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
    },
    "content parts of every kind": {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
                    {"type": "refusal", "refusal": "no"},
                ],
            }
        ],
    },
    "an assistant turn with tool calls and the tool's answer": {
        "model": "m",
        "messages": [
            {"role": "developer", "content": "d", "name": "ops"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "thinking",
                "refusal": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "g", "arguments": '{"a":1}', "thought": "x"},
                        "signature": "s",
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    },
    "values the typed fields cannot hold, and unknown keys": {
        "model": "m",
        "messages": [
            {"role": "", "content": 5, "name": None, "annotations": []},
            {"role": "user", "content": [], "tool_calls": []},
            {"role": "user", "content": ["not", "parts"]},
        ],
        "temperature": "hot",
        "top_p": None,
        "n": 2**40,
        "seed": True,
        "max_tokens": 1.5,
        "stop": [],
        "logit_bias": {"1": "x"},
        "metadata": {"n": 1},
        "modalities": [],
        "tools": [],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
        "response_format": "json",
        "stream_options": {"include_usage": "yes", "chunk": 3},
        "audio": "alloy",
        "enable_thinking": True,
        "thinking_budget": 1000,
        "provider": {"order": ["b", "a"], "allow_fallbacks": False, "big": 2**60, "ratio": 0.25, "": None},
    },
    "a forced function with more keys than the proto models": {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tool_choice": {"type": "function", "function": {"name": "f", "extra": 1}},
        "tools": [{"function": {"name": "f", "parameters": {}}, "cache_control": {"type": "ephemeral"}}],
    },
}


@pytest.mark.parametrize("body", CHAT_BODIES.values(), ids=CHAT_BODIES.keys())
def test_a_chat_request_is_the_message_the_server_builds_from_the_same_json(body: dict[str, Any]) -> None:
    client = _requests.chat_request(body)
    server = chat_request_from_json(body)
    cls = server_v1.CreateChatCompletionRequest
    assert _wire(cls, client) == _wire(cls, server)
    assert chat_request_to_json(client) == chat_request_to_json(server)


def test_the_upstream_receives_the_chat_json_the_caller_wrote() -> None:
    body = CHAT_BODIES["tools, a forced function and a json_schema response format"]
    sent = chat_request_to_json(_requests.chat_request(body))
    assert sent == body
    # structured outputs generate properties in schema order: the order survives the trip
    assert list(sent["response_format"]["json_schema"]["schema"]["properties"]) == ["zeta", "alpha"]


def test_unknown_keys_and_unfit_values_reach_the_upstream_unchanged() -> None:
    body = CHAT_BODIES["values the typed fields cannot hold, and unknown keys"]
    request = _requests.chat_request(body)
    assert request.temperature is None
    assert request.n is None
    sent = chat_request_to_json(request)
    assert sent["provider"] == body["provider"]
    assert sent["tool_choice"] == body["tool_choice"]
    assert (sent["n"], sent["temperature"], sent["seed"]) == (2**40, "hot", True)
    assert sent["thinking_budget"] == 1000
    assert request.top_p is None
    assert request.null_fields == ["top_p"]
    assert sent["top_p"] is None


def test_the_nulls_a_caller_writes_reach_the_upstream_as_nulls() -> None:
    body = CHAT_BODIES["an assistant turn with tool calls and the tool's answer"]
    request = _requests.chat_request(body)
    assert request.messages[1].null_fields == ["content", "refusal"]
    assert chat_request_to_json(request) == body


def test_a_null_inside_a_message_without_null_fields_reaches_the_upstream_as_absent() -> None:
    image = {"type": "image_url", "image_url": {"url": "u", "detail": None}}
    call = {"id": None, "type": "function", "function": {"name": "f", "arguments": None}}
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [image]},
            {"role": "assistant", "tool_calls": [call]},
        ],
    }
    sent = chat_request_to_json(_requests.chat_request(body))
    assert sent["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "u"}}]
    assert sent["messages"][1]["tool_calls"] == [{"type": "function", "function": {"name": "f"}}]


def test_a_string_stop_is_sent_as_a_one_element_list() -> None:
    request = _requests.chat_request({"model": "m", "messages": [], "stop": "END"})
    assert request.stop == ["END"]


EMBEDDING_BODIES: dict[str, dict[str, Any]] = {
    "one text": {"model": "e", "input": "hello"},
    "several texts and every parameter": {
        "model": "e",
        "input": ["a", "b"],
        "dimensions": 256,
        "encoding_format": "base64",
        "user": "u",
    },
    "one input as token ids": {"model": "e", "input": [1, 2, 3]},
    "several inputs as token ids": {"model": "e", "input": [[1, 2], [3]]},
    "inputs no field holds, and unknown keys": {
        "model": "e",
        "input": ["a", 1],
        "dimensions": "256",
        "input_type": "query",
        "truncate": None,
    },
    "null parameters": {"model": "e", "input": "a", "dimensions": None, "user": None},
}


@pytest.mark.parametrize("body", EMBEDDING_BODIES.values(), ids=EMBEDDING_BODIES.keys())
def test_an_embeddings_request_is_the_message_the_server_builds(body: dict[str, Any]) -> None:
    client = _requests.embeddings_request(body)
    server = embeddings_request_from_json(body)
    cls = server_v1.CreateEmbeddingsRequest
    assert _wire(cls, client) == _wire(cls, server)
    assert embeddings_request_to_json(client) == embeddings_request_to_json(server)


def test_the_nulls_in_an_embeddings_request_reach_the_upstream_as_nulls() -> None:
    body = EMBEDDING_BODIES["null parameters"]
    request = _requests.embeddings_request(body)
    assert request.null_fields == ["dimensions", "user"]
    assert embeddings_request_to_json(request) == body


def _completion(body: dict[str, Any]) -> ChatCompletion:
    message = v1.ChatCompletion.parse(encode_chat_completion(body).data)
    return _convert.chat_completion(message, INFO)


def _chunk(body: dict[str, Any]) -> ChatCompletionChunk:
    return _convert.chat_chunk(v1.ChatCompletionChunk.parse(encode_chat_chunk(body)), INFO)


OPENAI_COMPLETION: dict[str, Any] = {
    "id": "gen-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "openai/gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_1",
}

COMPLETIONS: dict[str, dict[str, Any]] = {
    "OpenAI's answer": OPENAI_COMPLETION,
    "tool calls with keys of their own": {
        "id": "gen-2",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "g", "arguments": '{"x":1}', "thought_signature": "t"},
                            "extra_content": {"google": {}},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
    },
    "a reasoning answer with logprobs, cost and unknown keys": {
        "id": "gen-3",
        "object": "chat.completion",
        "created": 2,
        "model": "m",
        "provider": "DeepInfra",
        "x_groq": {"id": "req_1"},
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "4",
                    "refusal": None,
                    "reasoning_content": "2+2",
                    "reasoning": "2+2",
                },
                "logprobs": {
                    "content": [{"token": "4", "logprob": -0.25, "bytes": [52], "top_logprobs": []}]
                },
                "finish_reason": "stop",
                "native_finish_reason": "STOP",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": None, "refusal": "I can't"},
                "logprobs": None,
                "finish_reason": None,
            },
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 7,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 1},
            "completion_tokens_details": {"reasoning_tokens": 6, "image_tokens": 0},
            "cost": 0.00012,
            "is_byok": False,
        },
    },
    "nulls in every object the proto gives null_fields": {
        "id": "gen-4",
        "object": "chat.completion",
        "created": 3,
        "model": "m",
        "system_fingerprint": None,
        "service_tier": None,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hi",
                    "refusal": None,
                    "reasoning_content": None,
                    "tool_calls": None,
                    "name": None,
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 7,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": None, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": None,
                "audio_tokens": None,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": None,
            },
            "cost": None,
        },
    },
    "a null usage and null details": {
        "id": "gen-5",
        "object": "chat.completion",
        "created": 4,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": None,
    },
}


@pytest.mark.parametrize("body", COMPLETIONS.values(), ids=COMPLETIONS.keys())
def test_a_completion_reads_back_as_the_json_the_upstream_sent(body: dict[str, Any]) -> None:
    completion = _completion(body)
    assert completion.to_dict() == body
    assert (completion.request_id, completion.generation_id) == ("req-1", "gen-1")
    assert "request_id" not in completion.to_dict()


def test_a_null_reads_as_none_and_is_noted_in_null_fields() -> None:
    completion = _completion(COMPLETIONS["nulls in every object the proto gives null_fields"])
    assert (completion.system_fingerprint, completion.null_fields) == (
        None,
        ("system_fingerprint", "service_tier"),
    )
    choice = completion.choices[0]
    assert (choice.finish_reason, choice.logprobs) == (None, None)
    assert choice.null_fields == ("finish_reason", "logprobs")
    assert (choice.message.refusal, choice.message.tool_calls) == (None, None)
    assert choice.message.null_fields == ("tool_calls", "name", "reasoning_content", "refusal")
    assert choice.message.model_extra == {}
    usage = completion.usage
    assert usage is not None
    assert (usage.cost, usage.null_fields, usage.model_extra) == (None, ("cost",), {})
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens is None
    assert usage.completion_tokens_details.accepted_prediction_tokens == 0
    assert usage.completion_tokens_details.model_extra == {}


def test_usage_details_are_typed_fields_with_the_upstreams_zeros() -> None:
    usage = _completion(OPENAI_COMPLETION).usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.prompt_tokens_details.audio_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.completion_tokens_details.rejected_prediction_tokens == 0
    assert usage.model_extra == {}
    assert usage.prompt_tokens_details.model_extra == {}
    assert usage.completion_tokens_details.model_extra == {}


def test_unknown_usage_details_stay_beside_the_typed_ones() -> None:
    completion = _completion(COMPLETIONS["a reasoning answer with logprobs, cost and unknown keys"])
    usage = completion.usage
    assert usage is not None
    assert usage.cost == 0.00012
    assert usage.model_extra == {"is_byok": False}
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.prompt_tokens_details.audio_tokens is None
    assert usage.prompt_tokens_details.model_extra == {"cache_write_tokens": 1}
    assert completion.model_extra == {"provider": "DeepInfra", "x_groq": {"id": "req_1"}}
    first, second = completion.choices
    assert first.message.reasoning_content == "2+2"
    assert first.message.model_extra == {"reasoning": "2+2"}
    assert first.model_extra == {"native_finish_reason": "STOP"}
    assert first.logprobs == {
        "content": [{"token": "4", "logprob": -0.25, "bytes": [52], "top_logprobs": []}]
    }
    assert (second.message.content, second.message.refusal, second.finish_reason) == (None, "I can't", None)


def test_a_tool_calls_own_keys_are_its_own_extra() -> None:
    message = _completion(COMPLETIONS["tool calls with keys of their own"]).choices[0].message
    assert message.model_extra == {}
    assert message.tool_calls is not None
    first, second = message.tool_calls
    assert (first.id, first.model_extra) == ("c1", {})
    assert second.model_extra == {"extra_content": {"google": {}}}
    assert second.function is not None
    assert (second.function.name, second.function.arguments) == ("g", '{"x":1}')
    assert second.function.model_extra == {"thought_signature": "t"}


def test_a_completion_without_the_nullable_keys_reads_without_them() -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant"}}],
    }
    completion = _completion(body)
    assert completion.to_dict() == body
    choice = completion.choices[0]
    assert (choice.finish_reason, choice.logprobs, choice.null_fields) == (None, None, ())
    assert (choice.message.content, choice.message.refusal) == (None, None)


def test_a_null_inside_a_tool_call_reads_as_absent_and_a_completions_call_keeps_its_required_keys() -> None:
    # ToolCall and FunctionCall have no null_fields: the server reads their nulls as absent.
    call = {"id": None, "type": "function", "function": {"name": "f", "arguments": None}}
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
    }
    sent = _completion(body).to_dict()["choices"][0]["message"]["tool_calls"]
    assert sent == [{"id": "", "type": "function", "function": {"name": "f", "arguments": ""}}]

    delta = {"tool_calls": [{"index": 0, "id": None, "function": {"arguments": None}}]}
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta}],
    }
    assert _chunk(chunk).to_dict()["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {}}]}


def test_to_dict_is_a_copy_and_to_json_is_its_text() -> None:
    completion = _completion(COMPLETIONS["a reasoning answer with logprobs, cost and unknown keys"])
    out = completion.to_dict()
    out["x_groq"]["id"] = "changed"
    out["choices"][0]["logprobs"]["content"].clear()
    assert completion.model_extra["x_groq"] == {"id": "req_1"}
    assert completion.to_dict() == COMPLETIONS["a reasoning answer with logprobs, cost and unknown keys"]
    assert '"reasoning_content": "2+2"' in completion.to_json()


STREAM: list[dict[str, Any]] = [
    {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "service_tier": "default",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
        "obfuscation": "ab",
    },
    {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    },
    {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    },
    {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": None,
    },
    {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    },
]


@pytest.mark.parametrize("body", STREAM, ids=[f"chunk {i}" for i in range(len(STREAM))])
def test_a_chunk_reads_back_as_openai_sent_it_nulls_included(body: dict[str, Any]) -> None:
    assert _chunk(body).to_dict() == body


def test_a_chunk_without_the_nullable_keys_reads_without_them() -> None:
    nullable = ("usage", "system_fingerprint", "logprobs", "finish_reason")
    body = {key: value for key, value in STREAM[0].items() if key not in nullable}
    body["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    chunk = _chunk(body)
    assert chunk.to_dict() == body
    assert (chunk.usage, chunk.system_fingerprint, chunk.null_fields) == (None, None, ())
    assert chunk.choices[0].finish_reason is None
    assert chunk.model_extra == {"obfuscation": "ab"}


def test_a_chunks_null_usage_is_noted_not_kept_as_extra() -> None:
    chunk = _chunk(STREAM[0])
    assert chunk.usage is None
    assert chunk.null_fields == ("system_fingerprint", "usage")
    assert "usage" not in chunk.model_extra
    assert chunk.choices[0].null_fields == ("finish_reason", "logprobs")


def test_chunk_attributes_read_the_deltas() -> None:
    first, tool, arguments, last, usage = (_chunk(body) for body in STREAM)
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert first.choices[0].finish_reason is None
    assert tool.choices[0].delta.role is None
    calls = arguments.choices[0].delta.tool_calls
    assert calls is not None
    assert calls[0].index == 0
    assert calls[0].id is None
    assert calls[0].function is not None
    assert calls[0].function.arguments == '{"a":'
    assert last.choices[0].finish_reason == "tool_calls"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.prompt_tokens_details is not None
    assert usage.usage.prompt_tokens_details.cached_tokens == 0
    assert "usage" not in usage.model_extra
    assert usage.generation_id == "gen-1"


def test_content_parts_in_an_answer_read_back_as_parts() -> None:
    parts = [
        {"type": "text", "text": "a", "annotations": []},
        {"type": "image_url", "image_url": {"url": "u"}},
        {"type": "refusal", "refusal": None, "text": None},
    ]
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": parts, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    completion = _completion(body)
    assert completion.to_dict() == body
    assert completion.choices[0].message.content is None
    assert completion.choices[0].message.model_extra == {"content": parts}


VECTORS = [[0.5, -1.25, 3.0], [0.0, 2.5, -0.125]]


def _embeddings_body(vectors: list[Any]) -> dict[str, Any]:
    return {
        "id": "gen-9",
        "object": "list",
        "model": "e",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": 4, "total_tokens": 4, "cost": 1e-06},
    }


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _embeddings(body: dict[str, Any], *, decode_base64: bool) -> Any:
    message = v1.CreateEmbeddingsResponse.parse(encode_embeddings_response(body).data)
    return _convert.embeddings(message, INFO, decode_base64=decode_base64)


def test_float_embeddings_read_back_as_sent() -> None:
    body = _embeddings_body(VECTORS)
    response = _embeddings(body, decode_base64=False)
    assert response.to_dict() == body
    assert [item.embedding for item in response.data] == VECTORS
    assert response.usage is not None
    assert response.usage.cost == 1e-06


def test_base64_embeddings_are_decoded_into_floats_when_the_client_asked_for_them() -> None:
    response = _embeddings(_embeddings_body([_base64(v) for v in VECTORS]), decode_base64=True)
    assert [item.embedding for item in response.data] == VECTORS
    assert response.to_dict() == _embeddings_body(VECTORS)


def test_base64_embeddings_stay_text_when_the_caller_asked_base64() -> None:
    encoded = [_base64(v) for v in VECTORS]
    response = _embeddings(_embeddings_body(encoded), decode_base64=False)
    assert [item.embedding for item in response.data] == encoded


def test_float_embeddings_need_no_decoding_when_the_upstream_ignored_base64() -> None:
    response = _embeddings(_embeddings_body(VECTORS), decode_base64=True)
    assert [item.embedding for item in response.data] == VECTORS


SPEC = ModelSpec(
    id="openrouter/openai/gpt-4o",
    name="GPT-4o",
    capabilities=frozenset({Capability.TOOLS, Capability.CHAT, Capability.VISION}),
    provider="openrouter",
    upstream_model="openai/gpt-4o",
    created=1_715_000_000,
)


def test_a_model_reads_as_the_rest_fronts_model() -> None:
    message = v1.Model.parse(bytes(model_to_proto(SPEC)))
    model = _convert.model(message, INFO)
    assert model.to_dict() == model_json(SPEC)
    assert model.capabilities == ["chat", "vision", "tools"]


def test_a_model_list_reads_as_the_rest_fronts_list_and_behaves_as_one() -> None:
    other = ModelSpec(
        id="e", name="E", capabilities=frozenset({Capability.EMBEDDINGS}), provider="p", owned_by="o"
    )
    response = server_v1.ListModelsResponse(object="list", data=[model_to_proto(SPEC), model_to_proto(other)])
    models = _convert.model_list(v1.ListModelsResponse.parse(bytes(response)), INFO)
    assert models.to_dict() == {"object": "list", "data": [model_json(SPEC), model_json(other)]}
    assert len(models) == 2
    assert [m.id for m in models] == [SPEC.id, "e"]
    assert models[1].owned_by == "o"
    assert models[:1][0].id == SPEC.id
    assert models.request_id == "req-1"


RECORDS = {
    "a completed chat": GenerationRecord(
        id="gen-0190000000001234567890abcdef",
        request_id="req-7",
        kind=GenerationKind.CHAT,
        model="fast",
        provider="openai",
        upstream_model="gpt-4o-mini",
        created_at=1_700_000_000.123457,
        streamed=True,
        status=GenerationStatus.COMPLETED,
        upstream_id="chatcmpl-1",
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cached_tokens=2,
        reasoning_tokens=1,
        cost_usd=0.00042,
        latency_ms=812.5,
        time_to_first_token_ms=120.25,
        user="u-1",
        attempts=(
            Attempt(
                provider="dashscope",
                upstream_model="qwen",
                model="fast",
                outcome="error",
                error_code="timeout",
                duration_ms=30.5,
            ),
            Attempt(
                provider="openai",
                upstream_model="gpt-4o-mini",
                model="fast",
                outcome="completed",
                duration_ms=800.0,
            ),
        ),
        key_id="key_1",
        team_id="team_1",
    ),
    "a failed embeddings request": GenerationRecord(
        id="gen-2",
        request_id="req-8",
        kind=GenerationKind.EMBEDDINGS,
        model="e",
        provider="p",
        upstream_model="u",
        created_at=1_700_000_001.0,
        streamed=False,
        status=GenerationStatus.ERROR,
        error_code="upstream_error",
        error_message="boom",
    ),
}


@pytest.mark.parametrize("record", RECORDS.values(), ids=RECORDS.keys())
def test_a_generation_reads_as_the_rest_fronts_record(record: GenerationRecord) -> None:
    response = server_v1.GetGenerationResponse(generation=generation_to_proto(record))
    generation = _convert.generation(v1.GetGenerationResponse.parse(bytes(response)), INFO)
    assert generation.to_dict() == record_json(record)
    assert generation.status == record.status.value
    assert generation.request_id == record.request_id
    assert generation.created_at is not None
    assert generation.created_at.timestamp() == pytest.approx(record.created_at)
