"""The official `openai` SDK, sync and async, works unchanged with `base_url` pointed at the gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NamedTuple

import openai
import pytest
from openai.types import Model
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionContentPartParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)
from openai.types.shared_params import ResponseFormatJSONSchema

from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import SECRETS, Running, running_gateway, settings_for

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
# One chat model per provider kind: dashscope, openrouter, openai.
CHAT_MODELS = ["dashscope/qwen-turbo", "openrouter/openai/gpt-4o", "local/llama"]
WEATHER_TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": f"fn{j}",
            "description": f"Weather tool {j}.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "call": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
    for j in range(2)
]


def provider_of(model: str) -> str:
    return model.partition("/")[0]


def client_options(gw: Running) -> dict[str, Any]:
    return {"base_url": f"{gw.rest_url}/v1", "api_key": "x", "max_retries": 0, "timeout": 10.0}


@asynccontextmanager
async def async_client(gw: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(**client_options(gw)) as client:
        yield client


@contextmanager
def sync_client(gw: Running) -> Iterator[openai.OpenAI]:
    """A sync client; call it through `asyncio.to_thread`, the gateway runs in this event loop."""
    client = openai.OpenAI(**client_options(gw))
    try:
        yield client
    finally:
        client.close()


async def collect(stream: openai.AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    async with stream:
        return [chunk async for chunk in stream]


async def read_into(
    received: list[ChatCompletionChunk], stream: openai.AsyncStream[ChatCompletionChunk]
) -> None:
    """Read a stream to its end, keeping each chunk as it arrives (what was seen before a failure)."""
    async with stream:
        async for chunk in stream:
            received.append(chunk)


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]


# Non-streamed chat


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_async_chat_returns_the_upstream_answer_under_a_gateway_generation_id(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    async with async_client(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == wire.expected_content(3)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.id.startswith("gen-")
    assert completion.id == raw.headers["x-generation-id"]
    assert completion.model == model
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (wire.PROMPT_TOKENS, 3)
    assert fakes[provider_of(model)].requests[-1].json["model"] == model.partition("/")[2]


async def test_sync_chat_returns_the_upstream_answer_under_a_gateway_generation_id(gw: Running) -> None:
    def call() -> tuple[ChatCompletion | openai.Stream[ChatCompletionChunk], str]:
        with sync_client(gw) as client:
            raw = client.chat.completions.with_raw_response.create(model="local/llama", messages=HELLO)
            return raw.parse(), raw.headers["x-generation-id"]

    completion, generation_id = await asyncio.to_thread(call)
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == wire.expected_content(3)
    assert completion.id.startswith("gen-")
    assert completion.id == generation_id
    assert completion.model == "local/llama"


async def test_parallel_tool_calls_come_back_complete_in_a_non_streamed_answer(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(tool_calls=2))
    async with async_client(gw) as client:
        completion = await client.chat.completions.create(
            model="local/llama", messages=HELLO, tools=WEATHER_TOOLS, parallel_tool_calls=True
        )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert [call.model_dump(exclude_none=True) for call in message.tool_calls] == [
        wire.tool_call(j) for j in range(2)
    ]
    sent = fakes["local"].requests[-1].json
    assert sent["tools"] == WEATHER_TOOLS
    assert sent["parallel_tool_calls"] is True


# Streamed chat


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_async_stream_concatenates_to_the_upstream_tokens_and_ends_cleanly(
    gw: Running, model: str
) -> None:
    async with async_client(gw) as client:
        stream = await client.chat.completions.create(model=model, messages=HELLO, stream=True)
        generation_id = stream.response.headers["x-generation-id"]
        chunks = await collect(stream)
    assert content_of(chunks) == wire.expected_content(3)
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert generation_id.startswith("gen-")
    assert {chunk.id for chunk in chunks} == {generation_id}
    assert {chunk.model for chunk in chunks} == {model}


async def test_sync_stream_concatenates_to_the_upstream_tokens_and_ends_cleanly(gw: Running) -> None:
    def call() -> list[ChatCompletionChunk]:
        with (
            sync_client(gw) as client,
            client.chat.completions.create(
                model="openrouter/openai/gpt-4o", messages=HELLO, stream=True
            ) as s,
        ):
            return list(s)

    chunks = await asyncio.to_thread(call)
    assert content_of(chunks) == wire.expected_content(3)
    assert finish_reasons(chunks) == ["stop"]
    assert all(chunk.usage is None for chunk in chunks)


async def test_qwen_turbo_streams_the_fake_tokens_and_ends_cleanly(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    """The issue's "done when": `dashscope/qwen-turbo` with `stream=True` through the SDK."""
    fakes["dashscope"].script(Script(chunks=5))
    async with async_client(gw) as client:
        stream = await client.chat.completions.create(
            model="dashscope/qwen-turbo", messages=HELLO, stream=True
        )
        chunks = await collect(stream)
    assert content_of(chunks) == wire.expected_content(5)
    assert finish_reasons(chunks) == ["stop"]
    upstream = fakes["dashscope"].requests[-1]
    assert upstream.json["model"] == "qwen-turbo"
    assert upstream.json["stream"] is True
    assert upstream.finished.is_set()


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_stream_with_include_usage_ends_with_a_usage_chunk(gw: Running, model: str) -> None:
    async with async_client(gw) as client:
        stream = await client.chat.completions.create(
            model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = await collect(stream)
    *answer, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == wire.PROMPT_TOKENS
    assert last.usage.completion_tokens == 3
    assert last.usage.total_tokens == wire.PROMPT_TOKENS + 3
    assert answer
    assert all(chunk.usage is None for chunk in answer)
    assert content_of(answer) == wire.expected_content(3)


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_stream_without_include_usage_has_no_usage_chunk_though_the_upstream_was_asked(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    async with async_client(gw) as client:
        stream = await client.chat.completions.create(model=model, messages=HELLO, stream=True)
        chunks = await collect(stream)
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert content_of(chunks) == wire.expected_content(3)
    assert fakes[provider_of(model)].requests[-1].json["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_parallel_tool_calls_streamed_keep_their_indexes(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fakes[provider_of(model)].script(Script(tool_calls=2))
    async with async_client(gw) as client:
        stream = await client.chat.completions.create(
            model=model, messages=HELLO, tools=WEATHER_TOOLS, stream=True
        )
        chunks = await collect(stream)
    # Accumulate exactly as SDK users do: by index, id and name once, arguments appended.
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function is not None:
                    if delta.function.name:
                        call["name"] = delta.function.name
                    call["arguments"] += delta.function.arguments or ""
    assert calls == {
        j: {"id": f"call_{j}", "name": f"fn{j}", "arguments": wire.tool_arguments(j)} for j in range(2)
    }
    assert finish_reasons(chunks) == ["tool_calls"]


# Request fields reach the upstream untouched


async def test_vision_content_parts_reach_the_upstream_unchanged(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    parts: list[ChatCompletionContentPartParam] = [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Describe images."},
        {"role": "user", "content": parts},
    ]
    async with async_client(gw) as client:
        completion = await client.chat.completions.create(model="dashscope/qwen-vl-max", messages=messages)
    assert completion.choices[0].message.content == wire.expected_content(3)
    sent = fakes["dashscope"].requests[-1].json
    assert sent["model"] == "qwen-vl-max"
    assert sent["messages"] == messages


async def test_json_schema_response_format_reaches_the_upstream_unchanged(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "description": "A forecast.",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                    "celsius": {"type": "number", "minimum": -89.2},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["city", "days", "celsius", "tags"],
                "additionalProperties": False,
            },
        },
    }
    async with async_client(gw) as client:
        await client.chat.completions.create(
            model="openrouter/openai/gpt-4o", messages=HELLO, response_format=response_format
        )
    assert fakes["openrouter"].requests[-1].json["response_format"] == response_format


async def test_raw_response_carries_the_request_and_generation_ids(gw: Running) -> None:
    async with async_client(gw) as client:
        minted = await client.chat.completions.with_raw_response.create(model="local/llama", messages=HELLO)
        chosen = await client.chat.completions.with_raw_response.create(
            model="local/llama", messages=HELLO, extra_headers={"x-request-id": "client-req-42"}
        )
    assert minted.headers["x-request-id"]
    assert minted.request_id == minted.headers["x-request-id"]
    assert chosen.headers["x-request-id"] == "client-req-42"
    for raw in (minted, chosen):
        completion = raw.parse()
        assert isinstance(completion, ChatCompletion)
        assert raw.headers["x-generation-id"] == completion.id
        assert completion.id.startswith("gen-")
    assert minted.headers["x-generation-id"] != chosen.headers["x-generation-id"]


# Errors


class ErrorCase(NamedTuple):
    """An upstream error status and what an SDK user sees from the gateway (DESIGN.md's error table)."""

    upstream_status: int
    exception: type[openai.APIStatusError]
    status: int
    error_type: str


UPSTREAM_ERRORS = {
    "400": ErrorCase(400, openai.BadRequestError, 400, "invalid_request_error"),
    "401-gateway-key-rejected": ErrorCase(401, openai.InternalServerError, 502, "upstream_error"),
    "404": ErrorCase(404, openai.NotFoundError, 404, "invalid_request_error"),
    "500": ErrorCase(500, openai.InternalServerError, 502, "upstream_error"),
    "503": ErrorCase(503, openai.InternalServerError, 502, "upstream_error"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("case", UPSTREAM_ERRORS.values(), ids=UPSTREAM_ERRORS.keys())
async def test_upstream_errors_raise_the_sdk_exception_of_the_mapped_status(
    gw: Running, fakes: dict[str, FakeUpstream], model: str, stream: bool, case: ErrorCase
) -> None:
    fakes[provider_of(model)].script(Script(status=case.upstream_status))
    async with async_client(gw) as client:
        with pytest.raises(case.exception) as caught:
            await client.chat.completions.create(model=model, messages=HELLO, stream=stream)
    assert caught.value.status_code == case.status
    assert caught.value.type == case.error_type
    assert caught.value.request_id
    assert SECRETS[provider_of(model)] not in str(caught.value.body)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_upstream_429_raises_rate_limit_error_with_its_retry_after(
    gw: Running, fakes: dict[str, FakeUpstream], model: str, stream: bool
) -> None:
    fakes[provider_of(model)].script(Script(status=429, headers={"Retry-After": "7"}))
    async with async_client(gw) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=model, messages=HELLO, stream=stream)
    assert caught.value.status_code == 429
    assert caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "7"
    assert len(fakes[provider_of(model)].requests) == 1


async def test_sync_client_raises_rate_limit_error_on_upstream_429(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["dashscope"].script(Script(status=429, headers={"Retry-After": "7"}))

    def call() -> None:
        with sync_client(gw) as client:
            client.chat.completions.create(model="dashscope/qwen-turbo", messages=HELLO)

    with pytest.raises(openai.RateLimitError) as caught:
        await asyncio.to_thread(call)
    assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", ["nowhere/model", "dashscope-model", "unknown"])
async def test_unknown_model_raises_not_found_with_code_model_not_found(
    gw: Running, fakes: dict[str, FakeUpstream], model: str, stream: bool
) -> None:
    async with async_client(gw) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model=model, messages=HELLO, stream=stream)
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "not_found_error"
    assert all(not fake.requests for fake in fakes.values())


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_a_failure_mid_stream_raises_api_error_after_the_first_chunks(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fakes[provider_of(model)].script(Script(fail_after_chunks=1))
    received: list[ChatCompletionChunk] = []
    async with async_client(gw) as client:
        stream = await client.chat.completions.create(model=model, messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as caught:
            await read_into(received, stream)
    assert content_of(received) == wire.content_token(0)
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.type == "upstream_error"
    assert SECRETS[provider_of(model)] not in caught.value.message


async def test_a_silent_upstream_times_out_with_504_at_its_first_token_timeout_when_streaming(
    fakes: dict[str, FakeUpstream],
) -> None:
    settings = settings_for(fakes, timeouts={"local": {"first_token_timeout": 0.5, "timeout": 2.0}})
    fakes["local"].script(Script(hang=True))
    async with running_gateway(settings) as gw, async_client(gw) as client:
        started = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="local/llama", messages=HELLO, stream=True)
        elapsed = time.perf_counter() - started
    assert caught.value.status_code == 504
    assert caught.value.type == "timeout_error"
    assert elapsed < 1.5  # the first-token timeout fired, not the 2 s total


async def test_a_silent_upstream_times_out_with_504_without_streaming(fakes: dict[str, FakeUpstream]) -> None:
    settings = settings_for(fakes, timeouts={"local": {"first_token_timeout": 0.5, "timeout": 1.0}})
    fakes["local"].script(Script(hang=True))
    async with running_gateway(settings) as gw, async_client(gw) as client:
        started = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="local/llama", messages=HELLO)
        elapsed = time.perf_counter() - started
    assert caught.value.status_code == 504
    assert caught.value.type == "timeout_error"
    assert elapsed < 3.0


# Models


async def test_models_list_returns_the_catalog_ids(gw: Running) -> None:
    async with async_client(gw) as client:
        page = await client.models.list()
    assert [model.id for model in page.data] == [model.id for model in gw.settings.models]
    assert all(model.object == "model" for model in page.data)
    assert {model.id: model.owned_by for model in page.data}["openrouter/openai/gpt-4o"] == "openrouter"


async def test_sync_models_list_returns_the_catalog_ids(gw: Running) -> None:
    def call() -> list[str]:
        with sync_client(gw) as client:
            return [model.id for model in client.models.list()]

    assert await asyncio.to_thread(call) == [model.id for model in gw.settings.models]


@pytest.mark.parametrize("model_id", ["openrouter/openai/gpt-4o", "dashscope/qwen-turbo"])
async def test_models_retrieve_resolves_an_id_with_slashes(gw: Running, model_id: str) -> None:
    async with async_client(gw) as client:
        model = await client.models.retrieve(model_id)
    assert model.id == model_id
    assert model.object == "model"
    assert model.owned_by == provider_of(model_id)


async def test_models_resolve_an_id_with_slashes_left_unescaped_in_the_path(gw: Running) -> None:
    """Older SDKs (and curl users) put the id in the path as is; this SDK percent-encodes the slashes."""
    async with async_client(gw) as client:
        model = await client.get("/models/openrouter/openai/gpt-4o", cast_to=Model)
    assert model.id == "openrouter/openai/gpt-4o"
    assert model.owned_by == "openrouter"


async def test_models_retrieve_of_an_unknown_id_raises_not_found(gw: Running) -> None:
    async with async_client(gw) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("openrouter/openai/gpt-5-nonexistent")
    assert caught.value.code == "model_not_found"
