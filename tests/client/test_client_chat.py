"""`llmgw_client` against a real llmgw on loopback: every inference method, unary and streamed, with what
reaches the upstream, the typed answers, and the request and generation ids of each call."""

from __future__ import annotations

import asyncio
import base64
import copy
import struct

import pytest
from llmgw_client import ChatCompletionStream, LLMGateway
from llmgw_client.types import ChatCompletionChunk

from tests.client.conftest import CHAT_MODELS, HI, Json, generation_with_status
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import catalog

# Fields the gateway sets on the upstream request itself.
GATEWAY_SET = ("model", "stream", "stream_options")
WEATHER_TOOLS: list[Json] = [
    {
        "type": "function",
        "function": {
            "name": f"fn{j}",
            "description": f"Weather tool {j}.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "call": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    for j in range(2)
]
FORECAST_FORMAT: Json = {
    "type": "json_schema",
    "json_schema": {
        "name": "forecast",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "number", "minimum": -89.2}},
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}
# Modelled params, tools and response_format, and fields no proto models (a provider's own, a vendor's).
RICH_PARAMS: Json = {
    "tools": WEATHER_TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "response_format": FORECAST_FORMAT,
    "temperature": 0.2,
    "max_tokens": 256,
    "stop": ["END"],
    "logit_bias": {"50256": -100, "1234": 2.5},
    "seed": 42,
    "user": "user-7",
    "metadata": {"team": "search"},
    "top_k": 20,
    "vendor": {"routing": {"order": ["a", "b"], "allow_fallbacks": True}, "weight": 3},
}


def without(body: Json, keys: tuple[str, ...]) -> Json:
    return {key: value for key, value in body.items() if key not in keys}


async def collect(stream: ChatCompletionStream) -> list[ChatCompletionChunk]:
    async with stream:
        return [chunk async for chunk in stream]


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]


# Unary chat


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_a_unary_chat_returns_the_upstream_answer_typed_under_the_gateways_ids(
    client: LLMGateway, fakes: dict[str, FakeUpstream], model: str
) -> None:
    completion = await client.chat.completions.create(model=model, messages=HI)

    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == wire.expected_content(3)
    assert choice.finish_reason == "stop"
    assert completion.model == model
    assert completion.object == "chat.completion"
    assert completion.id.startswith("gen-")
    assert completion.generation_id == completion.id
    assert completion.request_id
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (wire.PROMPT_TOKENS, 3)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    provider, _, upstream_model = model.partition("/")
    assert fakes[provider].requests[-1].json["model"] == upstream_model


async def test_usage_details_are_the_upstreams_own_values_in_typed_fields(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 7},
        "completion_tokens_details": {"reasoning_tokens": 50},
        "cost": 0.0123,
    }
    fakes["openrouter"].script(Script(usage=usage))

    completion = await client.chat.completions.create(model="openrouter/openai/gpt-4o", messages=HI)

    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 400
    assert completion.usage.prompt_tokens_details.audio_tokens == 7
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 50
    assert completion.to_dict()["usage"] == usage


async def test_tools_response_format_and_unknown_params_reach_the_upstream_field_for_field(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(tool_calls=2))
    params = copy.deepcopy(RICH_PARAMS)  # a client that mutated its input would hide a loss

    completion = await client.chat.completions.create(
        model="local/llama", messages=HI, extra_body={"enable_thinking": False}, **params
    )

    sent = fakes["local"].requests[-1].json
    assert sent["model"] == "llama"
    assert without(sent, GATEWAY_SET) == {"messages": HI, **RICH_PARAMS, "enable_thinking": False}
    assert type(sent["vendor"]["weight"]) is int
    assert type(sent["logit_bias"]["50256"]) is int
    assert sent.get("stream", False) is False
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    calls = [(call.id, call.function) for call in choice.message.tool_calls]
    assert [(id_, function and (function.name, function.arguments)) for id_, function in calls] == [
        (f"call_{j}", (f"fn{j}", wire.tool_arguments(j))) for j in range(2)
    ]
    assert completion.to_dict()["choices"][0]["message"]["tool_calls"] == [
        wire.tool_call(j) for j in range(2)
    ]


async def test_a_response_field_the_proto_does_not_model_is_in_model_extra_and_to_dict(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(extra_response_fields={"service_tier": "flex", "vendor_trace": {"hops": 2}}))

    completion = await client.chat.completions.create(model="local/llama", messages=HI)

    body = completion.to_dict()
    assert body["vendor_trace"] == {"hops": 2}
    assert body["service_tier"] == "flex"
    assert completion.model_extra["vendor_trace"] == {"hops": 2}


# Streamed chat


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_a_stream_yields_the_upstream_tokens_in_order_under_the_gateways_ids(
    client: LLMGateway, model: str
) -> None:
    stream = await client.chat.completions.create(model=model, messages=HI, stream=True)
    chunks = await collect(stream)

    assert content_of(chunks) == wire.expected_content(3)
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert stream.generation_id is not None
    assert stream.generation_id.startswith("gen-")
    assert {chunk.id for chunk in chunks} == {stream.generation_id}
    assert {chunk.model for chunk in chunks} == {model}
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert stream.request_id


async def test_a_stream_with_include_usage_ends_with_a_usage_chunk_and_null_usage_before_it(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    stream = await client.chat.completions.create(
        model="local/llama", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    *chunks, last = await collect(stream)

    assert fakes["local"].requests[-1].json["stream_options"] == {"include_usage": True}
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (wire.PROMPT_TOKENS, 3)
    assert all(chunk.usage is None for chunk in chunks)
    # the OpenAI-shaped upstream sends `"usage": null` on those chunks; gRPC carries it in `null_fields`
    assert all("usage" in chunk.null_fields for chunk in chunks)
    assert all("usage" in chunk.to_dict() and chunk.to_dict()["usage"] is None for chunk in chunks)


async def test_streamed_tool_calls_arrive_as_deltas_that_add_up_to_the_calls(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(tool_calls=2))

    stream = await client.chat.completions.create(
        model="local/llama", messages=HI, stream=True, tools=WEATHER_TOOLS
    )
    chunks = await collect(stream)

    assert fakes["local"].requests[-1].json["tools"] == WEATHER_TOOLS
    arguments = {0: "", 1: ""}
    names: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index is not None
            assert call.function is not None
            arguments[call.index] += call.function.arguments or ""
            if call.function.name:
                names[call.index] = call.function.name
    assert arguments == {j: wire.tool_arguments(j) for j in range(2)}
    assert names == {0: "fn0", 1: "fn1"}
    assert finish_reasons(chunks) == ["tool_calls"]


async def test_a_request_id_sent_in_extra_headers_comes_back_on_the_answer_and_the_record(
    client: LLMGateway,
) -> None:
    completion = await client.chat.completions.create(
        model="local/llama", messages=HI, extra_headers={"x-request-id": "client-req-0001"}
    )
    stream = await client.chat.completions.create(
        model="local/llama", messages=HI, stream=True, extra_headers={"x-request-id": "client-req-0002"}
    )
    await collect(stream)

    assert completion.request_id == "client-req-0001"
    assert stream.request_id == "client-req-0002"
    assert completion.generation_id is not None
    generation = await client.generations.retrieve(completion.generation_id)
    assert generation.request_id == "client-req-0001"
    assert generation.request_id == generation.to_dict()["request_id"]


# Cancellation


@pytest.mark.parametrize("how", ["close", "leave_async_with"])
async def test_a_stream_left_after_its_first_chunk_is_cancelled_upstream_and_recorded_cancelled(
    client: LLMGateway, fakes: dict[str, FakeUpstream], how: str
) -> None:
    fakes["local"].script(Script(chunks=50, chunk_delay=0.05))

    stream = await client.chat.completions.create(model="local/llama", messages=HI, stream=True)
    received = []
    if how == "close":
        async for chunk in stream:
            received.append(chunk)
            break
        await stream.close()
    else:
        async with stream:
            async for chunk in stream:
                received.append(chunk)
                break

    [first] = received
    assert first.choices[0].delta.content == wire.content_token(0)
    (request,) = fakes["local"].requests
    await asyncio.wait_for(request.disconnected.wait(), 1.0)
    assert not request.finished.is_set()
    assert stream.generation_id is not None
    generation = await generation_with_status(client, stream.generation_id, "cancelled")
    assert generation.status == "cancelled"
    assert generation.streamed is True


# Embeddings


async def test_embeddings_come_back_as_floats_asked_as_base64_like_the_openai_sdk(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    texts = ["first text", "second"]

    answer = await client.embeddings.create(model="local/embed", input=texts, dimensions=4)

    sent = fakes["local"].requests[-1].json
    assert sent["input"] == texts
    assert sent["dimensions"] == 4
    assert sent["encoding_format"] == "base64"
    assert [item.index for item in answer.data] == [0, 1]
    assert [item.embedding for item in answer.data] == [wire.embedding_for(text, 4) for text in texts]
    assert answer.model == "local/embed"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 3
    assert answer.generation_id is not None
    assert answer.generation_id.startswith("gen-")
    assert answer.request_id


async def test_embeddings_asked_as_base64_come_back_as_the_base64_text(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    answer = await client.embeddings.create(model="local/embed", input="hello", encoding_format="base64")

    assert fakes["local"].requests[-1].json["encoding_format"] == "base64"
    [item] = answer.data
    assert isinstance(item.embedding, str)
    raw = base64.b64decode(item.embedding)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == wire.embedding_for("hello", 8)


async def test_embeddings_asked_as_floats_are_asked_upstream_as_floats(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    answer = await client.embeddings.create(model="local/embed", input="hello", encoding_format="float")

    assert fakes["local"].requests[-1].json["encoding_format"] == "float"
    assert answer.data[0].embedding == wire.embedding_for("hello", 8)


# Models and generations


async def test_models_list_and_retrieve_show_the_catalog(client: LLMGateway) -> None:
    listed = await client.models.list()

    assert [model.id for model in listed] == [model.id for model in listed.data]
    assert {model.id for model in listed.data} == {model.id for model in catalog()}
    assert listed.request_id
    model = await client.models.retrieve("local/llama")
    assert (model.id, model.owned_by, model.object) == ("local/llama", "local", "model")
    assert model.request_id


async def test_a_generation_is_readable_right_after_a_chat_and_an_embeddings_call(client: LLMGateway) -> None:
    completion = await client.chat.completions.create(model="local/llama", messages=HI, user="user-7")
    embedded = await client.embeddings.create(model="local/embed", input="hi")
    assert completion.generation_id is not None
    assert embedded.generation_id is not None

    chat = await client.generations.retrieve(completion.generation_id)
    assert (chat.id, chat.kind, chat.model, chat.status) == (
        completion.id,
        "chat",
        "local/llama",
        "completed",
    )
    assert (chat.prompt_tokens, chat.completion_tokens) == (wire.PROMPT_TOKENS, 3)
    assert chat.request_id == completion.request_id
    assert chat.user == "user-7"
    assert chat.streamed is False
    assert [attempt.outcome for attempt in chat.attempts] == ["completed"]
    embeddings = await client.generations.retrieve(embedded.generation_id)
    assert (embeddings.kind, embeddings.model, embeddings.status) == (
        "embeddings",
        "local/embed",
        "completed",
    )
