"""Explicit nulls of fields the proto defines, on both fronts (issue 11, point 7).

REST passes the upstream's JSON through: a client (and the openai SDK) sees `"refusal": null` where the
upstream sent it. gRPC carries such a field unset, the null never shows in an `extra`, and the message's
`null_fields` names it (issue 14), so a client writing the JSON back writes the null. Requests alike: REST
sends a client's nulls upstream as written, and so does gRPC for the nulls its `null_fields` name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from llmgw.infrastructure.grpc.convert import chat_request_from_json
from llmgw.infrastructure.grpc.messages import pb, v1
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

Json = dict[str, Any]
HI = [{"role": "user", "content": "hi"}]
# The openai and openrouter kinds: their fakes answer `message.refusal: null`, `choices[].logprobs: null`
# and, in streams, `finish_reason: null` until the last chunk.
MODELS = ["local/llama", "openrouter/openai/gpt-4o"]
# Both envelope fields are in the proto; the fakes send them null on every answer and chunk.
TOP_NULLS: Json = {"system_fingerprint": None, "service_tier": None}
# The keys those answers hold null that a proto message defines: none may show in any `extra`.
DEFINED_NULLS = {"refusal", "content", "logprobs", "finish_reason", *TOP_NULLS}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def nulls_on_top(**fields: Any) -> Script:
    return Script(extra_response_fields=dict(TOP_NULLS), **fields)


def fake_for(fakes: dict[str, FakeUpstream], model: str) -> FakeUpstream:
    return fakes[model.partition("/")[0]]


def grpc_request(model: str) -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(model=model, messages=[v1.ChatMessage(role="user", content="hi")])


async def rest_chat(session: aiohttp.ClientSession, gw: Running, body: Json) -> str:
    async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response:
        text = await response.text()
        assert response.status == 200, text
        return text


def events(text: str) -> list[Json]:
    lines = [line.removeprefix("data: ") for line in text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def assert_null(obj: Json, *keys: str) -> None:
    """Each of `keys` is in `obj`, as null: there, not dropped."""
    assert {key: obj.get(key, "missing") for key in keys} == dict.fromkeys(keys)


def extra_keys(msg: Any) -> set[str]:
    """The keys of every `extra` in a betterproto2 message and the messages in it."""
    keys: set[str] = set()
    for field in dataclasses.fields(msg):
        value = getattr(msg, field.name)
        if field.name == "extra" and value is not None:
            keys |= set(value.fields)
        for item in value if isinstance(value, list) else [value]:
            if dataclasses.is_dataclass(item) and not isinstance(item, pb.Struct):
                keys |= extra_keys(item)
    return keys


# Answers over REST: passed through


@pytest.mark.parametrize("model", MODELS)
async def test_a_rest_answer_keeps_the_upstreams_explicit_nulls(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, model: str
) -> None:
    fake_for(fakes, model).script(nulls_on_top(), nulls_on_top(tool_calls=1))

    text = await rest_chat(session, gw, {"model": model, "messages": HI})
    calling = json.loads(await rest_chat(session, gw, {"model": model, "messages": HI}))

    answer = json.loads(text)
    assert_null(answer, *TOP_NULLS)
    (choice,) = answer["choices"]
    assert_null(choice, "logprobs")
    assert_null(choice["message"], "refusal")
    assert choice["message"]["content"] == "tok0 tok1 tok2 "
    assert_null(calling["choices"][0]["message"], "content", "refusal")
    assert calling["choices"][0]["message"]["tool_calls"][0]["id"] == "call_0"


@pytest.mark.parametrize("model", MODELS)
async def test_a_rest_stream_keeps_the_upstreams_explicit_nulls(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, model: str
) -> None:
    fake_for(fakes, model).script(nulls_on_top())

    *before, last = events(await rest_chat(session, gw, {"model": model, "messages": HI, "stream": True}))

    assert len(before) == 2
    for chunk in before:
        assert_null(chunk, *TOP_NULLS)
        assert_null(chunk["choices"][0], "finish_reason", "logprobs")
    assert last["choices"][0]["finish_reason"] == "stop"
    assert_null(last["choices"][0], "logprobs")


async def test_the_openai_sdk_sees_the_nulls_the_upstream_sent(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(nulls_on_top(), nulls_on_top())
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="local/llama", messages=[{"role": "user", "content": "hi"}]
        )
        stream = await client.chat.completions.create(
            model="local/llama", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async with stream:
            chunks = [chunk async for chunk in stream]

    choice = completion.choices[0]
    assert choice.message.refusal is None
    assert "refusal" in choice.message.model_fields_set  # sent as null, not left out
    assert "logprobs" in choice.model_fields_set
    assert "system_fingerprint" in completion.model_fields_set
    first = chunks[0].choices[0]
    assert first.finish_reason is None
    assert {"finish_reason", "logprobs"} <= first.model_fields_set


# Answers over gRPC: unset, never in `extra`


@pytest.mark.parametrize("model", MODELS)
async def test_a_grpc_answer_leaves_null_fields_unset_and_out_of_extra(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fake_for(fakes, model).script(nulls_on_top(), nulls_on_top(tool_calls=1))

    answer = await gw.grpc.create_chat_completion(grpc_request(model))
    calling = await gw.grpc.create_chat_completion(grpc_request(model))

    assert (answer.system_fingerprint, answer.service_tier) == (None, None)
    (choice,) = answer.choices
    assert choice.logprobs is None
    assert choice.message is not None
    assert choice.message.refusal is None
    assert choice.message.content == "tok0 tok1 tok2 "
    assert extra_keys(answer) & DEFINED_NULLS == set()
    # ...and named, so the JSON written back (a client's `to_dict()`) has them as the upstream sent them.
    assert set(answer.null_fields) == set(TOP_NULLS)
    assert (choice.null_fields, choice.message.null_fields) == (["logprobs"], ["refusal"])
    message = calling.choices[0].message
    assert message is not None
    assert (message.content, message.refusal) == (None, None)
    assert [call.id for call in message.tool_calls] == ["call_0"]
    assert extra_keys(calling) & DEFINED_NULLS == set()
    assert message.null_fields == ["content", "refusal"]


@pytest.mark.parametrize("model", MODELS)
async def test_a_grpc_stream_leaves_null_fields_unset_and_out_of_extra(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fake_for(fakes, model).script(nulls_on_top())

    chunks = [chunk async for chunk in gw.grpc.create_chat_completion_stream(grpc_request(model))]

    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None, None, "stop"]
    for chunk in chunks:
        assert (chunk.system_fingerprint, chunk.service_tier) == (None, None)
        assert chunk.choices[0].logprobs is None
        assert extra_keys(chunk) & DEFINED_NULLS == set()
        assert "logprobs" in chunk.choices[0].null_fields
    if model.startswith("openrouter/"):
        # A null of a key the proto does not define is the upstream's JSON: `extra` carries it.
        extra = chunks[0].choices[0].extra
        assert extra is not None
        assert extra.to_dict() == {"native_finish_reason": None}


# Requests: a client's nulls


REQUEST_NULLS: Json = {
    "temperature": None,
    "max_tokens": None,
    "stop": None,
    "tool_choice": None,
    "user": None,
    "stream_options": None,
    "top_k": None,  # not in the proto
}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_rest_sends_a_clients_nulls_upstream_as_written(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, stream: bool
) -> None:
    body = {"model": "local/llama", "messages": HI, **REQUEST_NULLS}
    if stream:
        body["stream"] = True

    await rest_chat(session, gw, body)

    sent = fakes["local"].requests[-1].json
    expected = {**body, "model": "llama"}
    if stream:
        expected["stream_options"] = {"include_usage": True}  # the gateway always asks for usage
    assert sent == expected


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_grpc_sends_a_clients_nulls_upstream_as_rest_does(
    gw: Running, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    request = chat_request_from_json({"model": "local/llama", "messages": HI, **REQUEST_NULLS})
    assert request.extra is not None
    assert request.extra.to_dict() == {"top_k": None}
    assert sorted(request.null_fields) == sorted(key for key in REQUEST_NULLS if key != "top_k")

    if stream:
        chunks = [chunk async for chunk in gw.grpc.create_chat_completion_stream(request)]
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        answer = await gw.grpc.create_chat_completion(request)
        assert answer.choices[0].finish_reason == "stop"

    sent = fakes["local"].requests[-1].json
    expected: Json = {"model": "llama", "messages": HI, **REQUEST_NULLS}
    if stream:
        expected |= {"stream": True, "stream_options": {"include_usage": True}}
    assert sent == expected
