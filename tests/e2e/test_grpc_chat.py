"""Chat and models through the gRPC front with the generated grpclib stub, over a real socket."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.events import SendMessage, listen

from llmgw.infrastructure.grpc.convert import chat_completion_from_proto, chat_request_from_json
from llmgw.infrastructure.grpc.messages import pb, v1
from llmgw.infrastructure.grpc.upb_codec import Encoded, EncodedAwareCodec
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import SECRETS, Running, running_gateway, settings_for

Json = dict[str, Any]

# One chat model per provider kind: dashscope, openrouter, openai.
CHAT_MODELS = ["dashscope/qwen-turbo", "openrouter/openai/gpt-4o", "local/llama"]
# Fields the gateway documents it sets on the upstream request itself.
GATEWAY_SET = ("model", "stream", "stream_options")

WEATHER_PARAMETERS: Json = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "threshold": {"type": "number", "minimum": 0.5},
        "units": {"type": ["string", "null"], "enum": ["metric", "imperial", None]},
    },
    "required": ["city"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT: Json = {
    "type": "json_schema",
    "json_schema": {
        "name": "forecast",
        "description": "A forecast.",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "celsius": {"type": "number", "minimum": -89.2},
            },
            "required": ["city", "days", "celsius"],
            "additionalProperties": False,
        },
    },
}
# Every request field clients send today (WIRE.md), plus provider extensions the proto does not model.
RICH_REQUEST: Json = {
    "model": "local/llama",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in English.", "name": "ops"},
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
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
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather by city.",
                "parameters": WEATHER_PARAMETERS,
                "strict": True,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "parallel_tool_calls": False,
    "functions": [{"name": "legacy", "parameters": {"type": "object", "properties": {}}}],
    "function_call": "auto",
    "response_format": JSON_SCHEMA_FORMAT,
    "temperature": 0.2,
    "top_p": 0.9,
    "n": 1,
    "stop": ["END", "STOP"],
    "max_tokens": 256,
    "max_completion_tokens": 300,
    "presence_penalty": 0.1,
    "frequency_penalty": -0.25,
    "logit_bias": {"50256": -100, "1234": 2.5},
    "logprobs": True,
    "top_logprobs": 2,
    "seed": 42,
    "user": "user-7",
    "metadata": {"team": "search", "ticket": "T-1"},
    "store": False,
    "service_tier": "auto",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "Paris is sunny."},
    "reasoning_effort": "low",
    "top_k": 20,
    "enable_thinking": False,
    "vendor": {"routing": {"order": ["a", "b"], "allow_fallbacks": True}, "weight": 3},
}


def provider_of(model: str) -> str:
    return model.partition("/")[0]


def hello(model: str, **fields: Any) -> v1.CreateChatCompletionRequest:
    """A one-message request; `fields` are more `CreateChatCompletionRequest` fields."""
    return v1.CreateChatCompletionRequest(
        model=model, messages=[v1.ChatMessage(role="user", content="Say hello.")], **fields
    )


async def stream_all(gw: Running, request: v1.CreateChatCompletionRequest) -> list[v1.ChatCompletionChunk]:
    return [chunk async for chunk in gw.grpc.create_chat_completion_stream(request)]


async def read_into(
    received: list[v1.ChatCompletionChunk], gw: Running, request: v1.CreateChatCompletionRequest
) -> None:
    """Read a stream to its end, keeping each chunk as it arrives (what was seen before a failure)."""
    async for chunk in gw.grpc.create_chat_completion_stream(request):
        received.append(chunk)


async def call(gw: Running, request: v1.CreateChatCompletionRequest, *, streamed: bool) -> None:
    """One chat RPC, unary or server-streaming, read to its end."""
    if streamed:
        await stream_all(gw, request)
    else:
        await gw.grpc.create_chat_completion(request)


def content_of(chunks: list[v1.ChatCompletionChunk]) -> str:
    return "".join(
        choice.delta.content or "" for chunk in chunks for choice in chunk.choices if choice.delta is not None
    )


def finish_reasons(chunks: list[v1.ChatCompletionChunk]) -> list[str]:
    return [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]


def without(body: Json, keys: tuple[str, ...]) -> Json:
    return {key: value for key, value in body.items() if key not in keys}


# Unary chat


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_unary_chat_returns_the_upstream_answer_under_a_gateway_generation_id(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    completion = await gw.grpc.create_chat_completion(hello(model))
    assert completion.id.startswith("gen-")
    assert completion.model == model
    assert completion.object == "chat.completion"
    [choice] = completion.choices
    assert choice.message is not None
    assert choice.message.role == "assistant"
    assert choice.message.content == wire.expected_content(3)
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == wire.PROMPT_TOKENS
    assert completion.usage.completion_tokens == 3
    assert fakes[provider_of(model)].requests[-1].json["model"] == model.partition("/")[2]


async def test_unary_chat_generation_is_readable_right_after_the_answer(gw: Running) -> None:
    completion = await gw.grpc.create_chat_completion(hello("local/llama"))
    found = (await gw.grpc.get_generation(v1.GetGenerationRequest(id=completion.id))).generation
    assert found is not None
    assert found.id == completion.id
    assert found.model == "local/llama"
    assert found.completion_tokens == 3


async def test_parallel_tool_calls_come_back_complete_in_a_unary_answer(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openrouter"].script(Script(tool_calls=2))
    request = chat_request_from_json(
        {
            "model": "openrouter/openai/gpt-4o",
            "messages": [{"role": "user", "content": "Weather in two cities?"}],
            "tools": RICH_REQUEST["tools"],
        }
    )
    completion = await gw.grpc.create_chat_completion(request)
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message is not None
    calls = [chat_completion_from_proto(completion)["choices"][0]["message"]["tool_calls"]]
    assert calls == [[wire.tool_call(j) for j in range(2)]]


# Streamed chat


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_stream_concatenates_to_the_upstream_tokens_and_ends_cleanly(gw: Running, model: str) -> None:
    chunks = await stream_all(gw, hello(model))
    assert content_of(chunks) == wire.expected_content(3)
    assert finish_reasons(chunks) == ["stop"]
    first = chunks[0].choices[0].delta
    assert first is not None
    assert first.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].id.startswith("gen-")
    assert {chunk.model for chunk in chunks} == {model}
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)


async def test_every_message_of_a_stream_goes_through_grpclibs_send_path_and_its_events(
    gw: Running,
) -> None:
    """Operators hang metrics and tracing on grpclib's events: a stream's chunks must all be seen there."""
    server = gw.fronts.grpc_server
    assert server is not None
    sent: list[str] = []

    async def on_send(event: SendMessage) -> None:
        sent.append(type(event.message).__name__)

    listen(server, SendMessage, on_send)
    chunks = await stream_all(gw, hello("local/llama", stream_options=v1.StreamOptions(include_usage=True)))

    assert content_of(chunks) == wire.expected_content(3)
    assert chunks[-1].usage is not None
    assert len(sent) == len(chunks)


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_stream_with_include_usage_ends_with_a_usage_chunk(gw: Running, model: str) -> None:
    chunks = await stream_all(gw, hello(model, stream_options=v1.StreamOptions(include_usage=True)))
    *answer, last = chunks
    assert list(last.choices) == []
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
    chunks = await stream_all(gw, hello(model))
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert content_of(chunks) == wire.expected_content(3)
    assert fakes[provider_of(model)].requests[-1].json["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_parallel_tool_calls_streamed_keep_their_indexes(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fakes[provider_of(model)].script(Script(tool_calls=2))
    tools = [
        v1.Tool(
            type="function",
            function=v1.FunctionDefinition(name=f"fn{j}", parameters=pb.Struct.from_dict(WEATHER_PARAMETERS)),
        )
        for j in range(2)
    ]
    chunks = await stream_all(gw, hello(model, tools=tools, parallel_tool_calls=True))
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls if choice.delta is not None else []:
                assert delta.index is not None
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
    sent = fakes[provider_of(model)].requests[-1].json
    assert [tool["function"]["parameters"] for tool in sent["tools"]] == [WEATHER_PARAMETERS] * 2
    assert sent["parallel_tool_calls"] is True


async def test_reasoning_streams_as_reasoning_content_deltas(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["dashscope"].script(Script(reasoning=True))
    chunks = await stream_all(gw, hello("dashscope/qwen3-think"))
    reasoning = "".join(
        choice.delta.reasoning_content or "" for chunk in chunks for choice in chunk.choices if choice.delta
    )
    assert reasoning == wire.expected_reasoning()
    assert content_of(chunks) == wire.expected_content(3)


# Request fields reach the upstream as OpenAI JSON


async def test_vision_parts_reach_the_upstream_as_openai_json(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    message = v1.ChatMessage(
        role="user",
        content_parts=[
            v1.ContentPart(type="text", text="What is in these pictures?"),
            v1.ContentPart(
                type="image_url", image_url=v1.ImageUrl(url="https://example.com/cat.png", detail="high")
            ),
            v1.ContentPart(type="image_url", image_url=v1.ImageUrl(url="data:image/png;base64,iVBORw0KGgo=")),
        ],
    )
    request = v1.CreateChatCompletionRequest(model="dashscope/qwen-vl-max", messages=[message])
    completion = await gw.grpc.create_chat_completion(request)
    assert chat_completion_from_proto(completion)["choices"][0]["message"][
        "content"
    ] == wire.expected_content(3)
    sent = fakes["dashscope"].requests[-1].json
    assert sent["model"] == "qwen-vl-max"
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]


async def test_json_schema_response_format_reaches_the_upstream_as_openai_json(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    schema = JSON_SCHEMA_FORMAT["json_schema"]
    response_format = v1.ResponseFormat(
        type="json_schema",
        json_schema=v1.JsonSchema(
            name=schema["name"],
            description=schema["description"],
            strict=True,
            schema=pb.Struct.from_dict(schema["schema"]),
        ),
    )
    await gw.grpc.create_chat_completion(hello("openrouter/openai/gpt-4o", response_format=response_format))
    sent = fakes["openrouter"].requests[-1].json["response_format"]
    assert sent == JSON_SCHEMA_FORMAT
    assert type(sent["json_schema"]["schema"]["properties"]["days"]["minimum"]) is int


async def test_extra_struct_fields_reach_the_upstream_as_plain_json(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    extra = pb.Struct.from_dict({"enable_thinking": True, "thinking_budget": 1000, "top_k": 20})
    chunks = await stream_all(gw, hello("dashscope/qwen3-think", extra=extra))
    assert content_of(chunks) == wire.expected_content(3)
    sent = fakes["dashscope"].requests[-1].json
    assert sent["enable_thinking"] is True
    assert sent["thinking_budget"] == 1000
    assert type(sent["thinking_budget"]) is int
    assert type(sent["top_k"]) is int
    assert "extra" not in sent


async def test_a_json_schema_reaches_the_upstream_with_its_properties_in_the_clients_order(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    """Structured outputs generate properties in schema order ("reasoning" before "answer")."""
    order = ["reasoning", "answer", "zeta", "alpha", "confidence", "b", "a", "m"]
    schema = {"type": "object", "properties": {key: {"type": "string"} for key in order}}
    response_format = v1.ResponseFormat(
        type="json_schema", json_schema=v1.JsonSchema(name="s", schema=pb.Struct.from_dict(schema))
    )
    await gw.grpc.create_chat_completion(hello("local/llama", response_format=response_format))
    sent = fakes["local"].requests[-1].json
    assert list(sent["response_format"]["json_schema"]["schema"]["properties"]) == order


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_the_upstream_receives_field_for_field_what_a_grpc_client_sent(
    gw: Running, fakes: dict[str, FakeUpstream], streamed: bool
) -> None:
    body = copy.deepcopy(RICH_REQUEST)  # a conversion that mutated its input would hide a loss
    await call(gw, chat_request_from_json(body), streamed=streamed)
    sent = fakes["local"].requests[-1].json
    assert sent["model"] == "llama"
    assert without(sent, GATEWAY_SET) == without(RICH_REQUEST, GATEWAY_SET)
    assert type(sent["vendor"]["weight"]) is int
    assert type(sent["logit_bias"]["50256"]) is int
    assert sent.get("stream", False) is streamed


# Errors

# DESIGN.md's error table: the upstream's 401 means the gateway's key was rejected, an upstream failure.
UPSTREAM_ERRORS = {
    400: Status.INVALID_ARGUMENT,
    401: Status.UNAVAILABLE,
    404: Status.NOT_FOUND,
    429: Status.RESOURCE_EXHAUSTED,
    500: Status.UNAVAILABLE,
    503: Status.UNAVAILABLE,
}


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("upstream_status", UPSTREAM_ERRORS)
async def test_upstream_errors_map_to_grpc_statuses(
    gw: Running, fakes: dict[str, FakeUpstream], model: str, streamed: bool, upstream_status: int
) -> None:
    fakes[provider_of(model)].script(Script(status=upstream_status, headers={"Retry-After": "7"}))
    with pytest.raises(GRPCError) as caught:
        await call(gw, hello(model), streamed=streamed)
    assert caught.value.status is UPSTREAM_ERRORS[upstream_status]
    assert SECRETS[provider_of(model)] not in (caught.value.message or "")


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_empty_messages_are_invalid_argument(
    gw: Running, fakes: dict[str, FakeUpstream], streamed: bool
) -> None:
    with pytest.raises(GRPCError) as caught:
        await call(gw, v1.CreateChatCompletionRequest(model="local/llama", messages=[]), streamed=streamed)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert fakes["local"].requests == []


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_bytes_that_are_no_request_are_invalid_argument_with_the_ids(
    gw: Running, fakes: dict[str, FakeUpstream], streamed: bool
) -> None:
    method = "CreateChatCompletionStream" if streamed else "CreateChatCompletion"
    cardinality = Cardinality.UNARY_STREAM if streamed else Cardinality.UNARY_UNARY
    channel = Channel("127.0.0.1", gw.fronts.ports["grpc"], codec=EncodedAwareCodec())  # sends Encoded as is
    try:
        async with channel.request(
            f"/llmgateway.v1.LLMGatewayService/{method}",
            cardinality,
            Encoded,
            v1.ChatCompletion,
            metadata={"x-request-id": "bad-bytes-1"},
        ) as stream:
            await stream.send_message(Encoded(b"\xff\xff\xff"), end=True)  # a truncated varint
            with pytest.raises(GRPCError) as caught:
                await stream.recv_message()
    finally:
        channel.close()
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message == "the request is not a valid CreateChatCompletionRequest message"
    assert stream.trailing_metadata is not None
    assert stream.trailing_metadata["x-request-id"] == "bad-bytes-1"
    assert fakes["local"].requests == []


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", ["nowhere/model", "unknown"])
async def test_unknown_model_is_not_found(
    gw: Running, fakes: dict[str, FakeUpstream], model: str, streamed: bool
) -> None:
    with pytest.raises(GRPCError) as caught:
        await call(gw, hello(model), streamed=streamed)
    assert caught.value.status is Status.NOT_FOUND
    assert all(not fake.requests for fake in fakes.values())


@pytest.mark.parametrize(("streamed", "total_timeout"), [(False, 1.0), (True, 2.0)], ids=["unary", "stream"])
async def test_a_silent_upstream_ends_with_deadline_exceeded(
    fakes: dict[str, FakeUpstream], streamed: bool, total_timeout: float
) -> None:
    timeouts = {"local": {"first_token_timeout": 0.5, "timeout": total_timeout}}
    fakes["local"].script(Script(hang=True))
    async with running_gateway(settings_for(fakes, timeouts=timeouts)) as gw:
        started = time.perf_counter()
        with pytest.raises(GRPCError) as caught:
            async with asyncio.timeout(5.0):
                await call(gw, hello("local/llama"), streamed=streamed)
        elapsed = time.perf_counter() - started
    assert caught.value.status is Status.DEADLINE_EXCEEDED
    # A stream gives up at the first-token timeout, well before its total timeout.
    assert elapsed < (1.5 if streamed else 3.0)


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_a_failure_mid_stream_ends_with_unavailable_after_the_first_chunks(
    gw: Running, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fakes[provider_of(model)].script(Script(fail_after_chunks=1))
    received: list[v1.ChatCompletionChunk] = []
    with pytest.raises(GRPCError) as caught:
        await read_into(received, gw, hello(model))
    assert caught.value.status is Status.UNAVAILABLE
    assert content_of(received) == wire.content_token(0)
    assert SECRETS[provider_of(model)] not in (caught.value.message or "")


# Models


async def test_list_models_returns_the_catalog(gw: Running) -> None:
    listed = await gw.grpc.list_models(v1.ListModelsRequest())
    assert listed.object == "list"
    assert [model.id for model in listed.data] == [model.id for model in gw.settings.models]
    by_id = {model.id: model for model in listed.data}
    assert by_id["dashscope/qwen3-think"].capabilities == ["chat", "reasoning"]
    assert by_id["local/embed"].capabilities == ["embeddings"]


@pytest.mark.parametrize("model_id", ["openrouter/openai/gpt-4o", "dashscope/qwen-vl-max"])
async def test_get_model_resolves_an_id_with_slashes(gw: Running, model_id: str) -> None:
    model = await gw.grpc.get_model(v1.GetModelRequest(id=model_id))
    assert model.id == model_id
    assert model.object == "model"
    assert model.provider == provider_of(model_id)
    assert model.owned_by == provider_of(model_id)
    assert set(model.capabilities) == {"chat", "vision", "tools"}


async def test_get_model_of_an_unknown_id_is_not_found(gw: Running) -> None:
    with pytest.raises(GRPCError) as caught:
        await gw.grpc.get_model(v1.GetModelRequest(id="openrouter/openai/gpt-5-nonexistent"))
    assert caught.value.status is Status.NOT_FOUND
