"""The same request through the official `openai` SDK over llmgw's REST port and through `llmgw_client` over
its gRPC port gives equal `.to_dict()` answers, the fake upstream scripted identically for both.

Each call mints its own generation id and the upstream its own `created` second, so `id` and `created`
are compared normalized (replaced by placeholders); every other key must be equal, chunk by chunk for
streams. REST passes the upstream's JSON through as it is; gRPC carries a key sent null in its message's
`null_fields`, so a null and a missing key read back as the upstream sent them, whichever upstream it is
(OpenAI's `"refusal": null` and per-chunk `"usage": null`, DashScope and OpenRouter leaving them out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from llmgw_client import LLMGateway

from tests.client.conftest import CHAT_MODELS, HI, Json
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

# Differ between two calls by design: the gateway's generation id, the upstream's clock.
PER_CALL = ("id", "created")
TOOLS: list[Json] = [
    {
        "type": "function",
        "function": {
            "name": f"fn{j}",
            "description": f"Weather tool {j}.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for j in range(2)
]
# Every kind of extra the fake can add to an answer: top-level keys the proto does not model.
EXTRAS: Json = {"service_tier": "default", "system_fingerprint": "fp_123", "vendor_trace": {"hops": [1, 2]}}


@pytest.fixture
async def sdk(served: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{served.rest_url}/v1", api_key="unused", max_retries=0, timeout=10.0
    ) as client:
        yield client


def normalized(body: Json) -> Json:
    return {key: (f"<{key}>" if key in PER_CALL else value) for key, value in body.items()}


def provider_of(model: str) -> str:
    return model.partition("/")[0]


async def both_chats(
    sdk: openai.AsyncOpenAI, client: LLMGateway, fake: FakeUpstream, script: Script, **request: Any
) -> tuple[Json, Json]:
    fake.script(script, script)
    rest = normalized((await sdk.chat.completions.create(**request)).to_dict())
    grpc = normalized((await client.chat.completions.create(**request)).to_dict())
    return rest, grpc


async def both_streams(
    sdk: openai.AsyncOpenAI, client: LLMGateway, fake: FakeUpstream, script: Script, **request: Any
) -> tuple[list[Json], list[Json]]:
    fake.script(script, script)
    rest_stream = await sdk.chat.completions.create(stream=True, **request)
    async with rest_stream:
        rest = [normalized(chunk.to_dict()) async for chunk in rest_stream]
    grpc_stream = await client.chat.completions.create(stream=True, **request)
    async with grpc_stream:
        grpc = [normalized(chunk.to_dict()) async for chunk in grpc_stream]
    return rest, grpc


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_a_unary_chat_is_the_same_over_rest_and_grpc(
    sdk: openai.AsyncOpenAI, client: LLMGateway, fakes: dict[str, FakeUpstream], model: str
) -> None:
    rest, grpc = await both_chats(
        sdk, client, fakes[provider_of(model)], Script(extra_response_fields=EXTRAS), model=model, messages=HI
    )
    assert grpc == rest


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("include_usage", [True, False], ids=["include_usage", "no_usage"])
async def test_a_stream_is_the_same_chunk_by_chunk_over_rest_and_grpc(
    sdk: openai.AsyncOpenAI,
    client: LLMGateway,
    fakes: dict[str, FakeUpstream],
    model: str,
    include_usage: bool,
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    rest, grpc = await both_streams(
        sdk, client, fakes[provider_of(model)], Script(), model=model, messages=HI, **options
    )
    assert len(rest) >= 3
    assert grpc == rest


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_tool_calls_are_the_same_over_rest_and_grpc_unary_and_streamed(
    sdk: openai.AsyncOpenAI, client: LLMGateway, fakes: dict[str, FakeUpstream], model: str
) -> None:
    fake = fakes[provider_of(model)]
    request: Json = {"model": model, "messages": HI, "tools": TOOLS, "tool_choice": "auto"}

    rest, grpc = await both_chats(sdk, client, fake, Script(tool_calls=2), **request)
    assert rest["choices"][0]["message"]["tool_calls"]
    assert grpc == rest

    rest_chunks, grpc_chunks = await both_streams(
        sdk, client, fake, Script(tool_calls=2), stream_options={"include_usage": True}, **request
    )
    assert grpc_chunks == rest_chunks


async def test_reasoning_and_usage_details_are_the_same_over_rest_and_grpc(
    sdk: openai.AsyncOpenAI, client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 50},
        "cost": 0.0123,
        "is_byok": False,
    }
    script = Script(reasoning=True, reasoning_field="reasoning", usage=usage)
    request: Json = {"model": "openrouter/openai/gpt-4o", "messages": HI}

    rest, grpc = await both_chats(sdk, client, fakes["openrouter"], script, **request)
    assert rest["usage"] == usage
    assert grpc == rest

    rest_chunks, grpc_chunks = await both_streams(sdk, client, fakes["openrouter"], script, **request)
    assert grpc_chunks == rest_chunks


@pytest.mark.parametrize(
    "options",
    [{}, {"encoding_format": "float"}, {"encoding_format": "base64", "dimensions": 4}],
    ids=["default", "float", "base64"],
)
async def test_embeddings_are_the_same_over_rest_and_grpc(
    sdk: openai.AsyncOpenAI, client: LLMGateway, options: Json
) -> None:
    request: Json = {"model": "local/embed", "input": ["first text", "second"], **options}

    rest = await sdk.embeddings.create(**request)
    grpc = await client.embeddings.create(**request)

    # warnings=False: the SDK's model types `embedding` as floats and warns when dumping base64 text.
    assert normalized(grpc.to_dict()) == normalized(rest.to_dict(warnings=False))


async def test_models_are_the_same_over_rest_and_grpc(sdk: openai.AsyncOpenAI, client: LLMGateway) -> None:
    rest_page = await sdk.models.list()
    listed = await client.models.list()
    assert [model.to_dict() for model in listed.data] == [model.to_dict() for model in rest_page.data]

    rest_model = await sdk.models.retrieve("openrouter/openai/gpt-4o")
    model = await client.models.retrieve("openrouter/openai/gpt-4o")
    assert model.to_dict() == rest_model.to_dict()


async def test_a_generation_reads_the_same_over_rest_and_grpc(served: Running, client: LLMGateway) -> None:
    completion = await client.chat.completions.create(model="dashscope/qwen-turbo", messages=HI, user="u-1")
    assert completion.generation_id is not None

    generation = await client.generations.retrieve(completion.generation_id)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{served.rest_url}/v1/generation/{completion.generation_id}") as response,
    ):
        assert response.status == 200
        rest = await response.json()

    assert generation.to_dict() == rest["generation"]
