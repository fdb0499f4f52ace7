"""REST chat requests and answers pass through the gateway untouched, apart from what it documents it sets."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import pytest

from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

Json = dict[str, Any]


class Route(NamedTuple):
    model: str
    provider: str
    upstream_model: str


# One model per provider kind; the last is uncatalogued and routes by its prefix.
ROUTES = [
    Route("local/llama", "local", "llama"),
    Route("openrouter/openai/gpt-4o", "openrouter", "openai/gpt-4o"),
    Route("dashscope/qwen-turbo", "dashscope", "qwen-turbo"),
    Route("local/anything", "local", "anything"),
]
ROUTE_IDS = [route.model for route in ROUTES]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]

# Every request field of WIRE.md's list (stream and stream_options are added per test) plus unknown ones.
EVERY_FIELD: Json = {
    "messages": [
        {"role": "developer", "content": "Answer briefly."},
        {
            "role": "user",
            "name": "ana",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                },
                {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
                {
                    "type": "file",
                    "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny, 21°C ☀"},
    ],
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "functions": [{"name": "legacy_fn", "parameters": {"type": "object", "properties": {}}}],
    "function_call": "auto",
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        },
    },
    "temperature": 0.2,
    "top_p": 0.95,
    "n": 1,
    "stop": ["\n\n", "END"],
    "max_tokens": 256,
    "max_completion_tokens": 300,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "logit_bias": {"50256": -100, "1000": 5},
    "logprobs": True,
    "top_logprobs": 3,
    "seed": 1234567890123,
    "user": "user-42",
    "metadata": {"team": "search", "ticket": "T-1"},
    "store": False,
    "service_tier": "auto",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "It is sunny."},
    "reasoning_effort": "low",
    "enable_thinking": False,
    "provider": {"order": ["Groq", "Together"], "allow_fallbacks": False, "sort": "price"},
    "some_future_field": {"nested": [1, 2.5, None, True, "x"], "empty": {}},
}

NON_STREAM_CHOICE: Json = {
    "index": 0,
    "message": {
        "role": "assistant",
        "content": "Sunny in Oslo.",
        "refusal": None,
        "annotations": [
            {"type": "url_citation", "url_citation": {"url": "https://example.com", "title": "x"}}
        ],
        "reasoning": "The tool said sunny.",
        "reasoning_details": [{"type": "reasoning.text", "text": "The tool said sunny."}],
    },
    "logprobs": {
        "content": [{"token": "Sunny", "logprob": -0.01, "bytes": [83, 117], "top_logprobs": []}],
        "refusal": None,
    },
    "finish_reason": "stop",
    "native_finish_reason": "STOP",
}
UNMODELLED_RESPONSE_FIELDS: Json = {
    "system_fingerprint": "fp_44709d6fcb",
    "service_tier": "default",
    "provider": "Groq",
    "reasoning": "top-level reasoning summary",
    "choices": [NON_STREAM_CHOICE],
}
UNMODELLED_CHUNK_FIELDS: Json = {
    "system_fingerprint": "fp_44709d6fcb",
    "service_tier": "default",
    "provider": "Groq",
    "reasoning": None,
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def chat_url(gw: Running, *, stream_route: bool = False) -> str:
    return f"{gw.rest_url}/v1/chat/completions{':stream' if stream_route else ''}"


async def sse_chunks(response: aiohttp.ClientResponse) -> list[Json]:
    """The JSON chunks of a whole SSE answer, after checking it is SSE and ends with [DONE]."""
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    payloads = [
        line.removeprefix("data: ")
        for line in (await response.read()).decode().split("\n")
        if line.startswith("data: ")
    ]
    assert payloads[-1] == "[DONE]"
    return [json.loads(payload) for payload in payloads[:-1]]


async def stream(
    session: aiohttp.ClientSession, gw: Running, body: Json
) -> tuple[aiohttp.ClientResponse, list[Json]]:
    async with session.post(chat_url(gw), json=body) as response:
        return response, await sse_chunks(response)


def envelope(fake: FakeUpstream, upstream_model: str, *, include_usage: bool) -> wire.Envelope:
    return wire.Envelope(
        kind=fake.kind, id="", created=0, model=upstream_model, request_id="", include_usage=include_usage
    )


def without_envelope(obj: Json) -> Json:
    """An answer or chunk minus the fields the gateway rewrites (id, model) or the fake stamps (created)."""
    return {key: value for key, value in obj.items() if key not in ("id", "model", "created")}


def expected_stream(
    fake: FakeUpstream, upstream_model: str, script: Script, *, client_wants_usage: bool
) -> list[Json]:
    """What the client should see: the fake's chunks as sent, usage only if the client asked."""
    env = envelope(fake, upstream_model, include_usage=True)  # the gateway always asks for usage
    chunks = wire.stream_chunks(env, script)
    if client_wants_usage:
        return [*chunks, wire.usage_chunk(env, script)]
    return [{key: value for key, value in chunk.items() if key != "usage"} for chunk in chunks]


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_every_request_field_reaches_the_upstream_unchanged_apart_from_the_model(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    route: Route,
) -> None:
    body = {"model": route.model, **copy.deepcopy(EVERY_FIELD), "stream": False}

    async with session.post(chat_url(gw), json=body) as response:
        assert response.status == 200, await response.text()

    assert fakes[route.provider].requests[-1].json == {**body, "model": route.upstream_model}


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_a_stream_request_reaches_the_upstream_unchanged_apart_from_model_stream_and_include_usage(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    route: Route,
) -> None:
    options = {"include_usage": False, "include_obfuscation": False}
    body = {"model": route.model, **copy.deepcopy(EVERY_FIELD), "stream": True, "stream_options": options}

    await stream(session, gw, body)

    assert fakes[route.provider].requests[-1].json == {
        **body,
        "model": route.upstream_model,
        "stream": True,
        "stream_options": {"include_obfuscation": False, "include_usage": True},
    }


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_an_answer_reaches_the_client_field_for_field_with_the_gateway_model_and_generation_id(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    route: Route,
) -> None:
    fake = fakes[route.provider]
    script = Script(extra_response_fields=copy.deepcopy(UNMODELLED_RESPONSE_FIELDS))
    fake.script(script)

    async with session.post(
        chat_url(gw), json={"model": route.model, "messages": [{"role": "user", "content": "hi"}]}
    ) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        generation_header = r.headers.get("x-generation-id")

    assert body["model"] == route.model
    assert body["id"].startswith("gen-")
    assert body["id"] == generation_header
    assert isinstance(body["created"], int)
    expected = wire.chat_completion(envelope(fake, route.upstream_model, include_usage=False), script)
    assert without_envelope(body) == without_envelope(expected)
    assert body["system_fingerprint"] == "fp_44709d6fcb"
    assert body["choices"][0]["logprobs"]["content"][0]["token"] == "Sunny"
    assert body["choices"][0]["native_finish_reason"] == "STOP"
    assert body["choices"][0]["message"]["annotations"][0]["type"] == "url_citation"


@pytest.mark.parametrize("client_wants_usage", [True, False], ids=["include_usage", "no_usage"])
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_stream_chunks_reach_the_client_field_for_field_with_the_gateway_model_and_generation_id(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    route: Route,
    client_wants_usage: bool,
) -> None:
    fake = fakes[route.provider]
    script = Script(extra_response_fields=dict(UNMODELLED_CHUNK_FIELDS))
    fake.script(script)
    body: Json = {"model": route.model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if client_wants_usage:
        body["stream_options"] = {"include_usage": True}

    response, chunks = await stream(session, gw, body)

    generation_id = response.headers.get("x-generation-id", "")
    assert generation_id.startswith("gen-")
    assert {chunk["id"] for chunk in chunks} == {generation_id}
    assert {chunk["model"] for chunk in chunks} == {route.model}
    expected = expected_stream(fake, route.upstream_model, script, client_wants_usage=client_wants_usage)
    assert [without_envelope(c) for c in chunks] == [without_envelope(c) for c in expected]
    assert all(chunk["system_fingerprint"] == "fp_44709d6fcb" for chunk in chunks)


async def test_dashscope_reasoning_content_is_kept_in_the_message(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["dashscope"].script(Script(reasoning=True))
    body = {"model": "dashscope/qwen-turbo", "messages": [{"role": "user", "content": "think"}]}

    async with session.post(chat_url(gw), json=body) as response:
        assert response.status == 200, await response.text()
        message = (await response.json())["choices"][0]["message"]

    assert message["reasoning_content"] == wire.expected_reasoning()
    assert message["content"] == wire.expected_content()


async def test_dashscope_reasoning_content_is_kept_in_stream_deltas(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["dashscope"].script(Script(reasoning=True))
    body = {
        "model": "dashscope/qwen3-think",
        "messages": [{"role": "user", "content": "think"}],
        "stream": True,
    }

    _, chunks = await stream(session, gw, body)

    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert "".join(d["reasoning_content"] for d in deltas if d.get("reasoning_content")) == (
        wire.expected_reasoning()
    )
    assert "".join(d["content"] for d in deltas if d.get("content")) == wire.expected_content()
    assert all("reasoning_content" in delta for delta in deltas)


async def test_a_non_stream_request_to_a_dashscope_reasoning_model_gets_thinking_turned_off(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    body = {"model": "dashscope/qwen3-think", "messages": [{"role": "user", "content": "hi"}]}

    async with session.post(chat_url(gw), json=body) as response:
        assert response.status == 200, await response.text()

    assert fakes["dashscope"].requests[-1].json == {
        **body,
        "model": "qwen3-235b-a22b",
        "enable_thinking": False,
    }


async def test_a_caller_who_turns_thinking_on_keeps_it_and_hears_the_upstream_refusal(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    body = {
        "model": "dashscope/qwen3-think",
        "messages": [{"role": "user", "content": "hi"}],
        "enable_thinking": True,
        "thinking_budget": 512,
    }

    async with session.post(chat_url(gw), json=body) as response:
        status, error = response.status, (await response.json())["error"]

    assert fakes["dashscope"].requests[-1].json == {**body, "model": "qwen3-235b-a22b"}
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert "enable_thinking" in error["message"]


async def test_a_stream_request_to_a_dashscope_reasoning_model_gets_no_enable_thinking(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    body = {"model": "dashscope/qwen3-think", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    await stream(session, gw, body)

    assert "enable_thinking" not in fakes["dashscope"].requests[-1].json


async def test_a_non_stream_request_to_a_dashscope_model_that_does_not_reason_gets_no_enable_thinking(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    body = {"model": "dashscope/qwen-turbo", "messages": [{"role": "user", "content": "hi"}]}

    async with session.post(chat_url(gw), json=body) as response:
        assert response.status == 200, await response.text()

    assert fakes["dashscope"].requests[-1].json == {**body, "model": "qwen-turbo"}


async def test_openrouter_comment_lines_do_not_break_the_stream(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["openrouter"].script(Script(comments=3))
    body = {
        "model": "openrouter/openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }

    _, chunks = await stream(session, gw, body)

    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == wire.expected_content()
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openrouter_usage_cost_reaches_a_client_that_asked_for_usage(
    gw: Running, session: aiohttp.ClientSession
) -> None:
    body = {
        "model": "openrouter/openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    _, chunks = await stream(session, gw, body)
    async with session.post(chat_url(gw), json={**body, "stream": False, "stream_options": None}) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()

    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["cost"] == wire.OPENROUTER_COST
    assert chunks[-1]["usage"]["is_byok"] is False
    assert answer["usage"]["cost"] == wire.OPENROUTER_COST


@pytest.mark.parametrize("stream_field", [None, False], ids=["absent", "false"])
async def test_the_stream_route_always_answers_sse(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    stream_field: bool | None,
) -> None:
    body: Json = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}
    if stream_field is not None:
        body["stream"] = stream_field

    async with session.post(chat_url(gw, stream_route=True), json=body) as response:
        chunks = await sse_chunks(response)

    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == wire.expected_content()
    upstream = fakes["local"].requests[-1].json
    assert upstream["stream"] is True
    assert upstream["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "stream_options",
    [None, {"include_usage": False}, {"include_usage": True}],
    ids=["absent", "false", "true"],
)
@pytest.mark.parametrize("provider", ["local", "dashscope", "openrouter"])
async def test_the_usage_chunk_reaches_only_clients_who_asked_though_the_upstream_is_always_asked(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    provider: str,
    stream_options: Json | None,
) -> None:
    model = {
        "local": "local/llama",
        "dashscope": "dashscope/qwen-turbo",
        "openrouter": "openrouter/openai/gpt-4o",
    }
    body: Json = {"model": model[provider], "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if stream_options is not None:
        body["stream_options"] = stream_options

    _, chunks = await stream(session, gw, body)

    assert fakes[provider].requests[-1].json["stream_options"]["include_usage"] is True
    usage_chunks = [chunk for chunk in chunks if chunk.get("usage")]
    if stream_options == {"include_usage": True}:
        assert len(usage_chunks) == 1
        assert usage_chunks[0] is chunks[-1]
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == wire.PROMPT_TOKENS + 3
        assert all(chunk.get("usage") is None for chunk in chunks[:-1])
    else:
        assert usage_chunks == []
        assert all(chunk["choices"] for chunk in chunks)


@pytest.mark.parametrize(
    ("model", "provider"), [("local/llama", "local"), ("openrouter/openai/gpt-4o", "openrouter")]
)
async def test_streamed_tool_call_indexes_pass_through_untouched(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, model: str, provider: str
) -> None:
    fakes[provider].script(Script(tool_calls=3))
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "stream": True}

    _, chunks = await stream(session, gw, body)

    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    sent_deltas = wire.answer_deltas(fakes[provider].kind, Script(tool_calls=3))
    assert [d.get("tool_calls") for d in deltas] == [d.get("tool_calls") for d in sent_deltas]
    arguments: dict[int, str] = {}
    for delta in deltas:
        for call in delta.get("tool_calls") or []:
            arguments[call["index"]] = arguments.get(call["index"], "") + call["function"]["arguments"]
    assert arguments == {j: wire.tool_arguments(j) for j in range(3)}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
