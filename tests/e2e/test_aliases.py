"""A model called by an alias (`gpt-4o`) served by two deployments on two upstreams, through the `openai`
SDK and gRPC: traffic follows the weights, each upstream sees its own model id, clients see the alias."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.infrastructure.grpc.messages import v1
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
# Provider -> the model id its upstream knows gpt-4o by; local takes twice openrouter's share.
UPSTREAM_MODEL = {"local": "gpt-4o-local", "openrouter": "openai/gpt-4o"}
GPT_4O = ModelSpec(
    id="gpt-4o",
    name="GPT-4o",
    capabilities=frozenset({Capability.CHAT, Capability.TOOLS}),
    deployments=(
        Deployment("local", UPSTREAM_MODEL["local"], weight=2),
        Deployment("openrouter", UPSTREAM_MODEL["openrouter"], weight=1),
    ),
)
REQUESTS = 150


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    two = {name: fakes[name] for name in UPSTREAM_MODEL}
    settings = settings_for(two)
    async with running_gateway(replace(settings, models=(*settings.models, GPT_4O))) as running:
        yield running


async def record_of(gw: Running, generation_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.rest_url}/v1/generation/{generation_id}") as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = (await response.json())["generation"]
        return body


async def test_the_sdk_calls_an_alias_and_both_deployments_answer_by_weight(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        completions = []
        for _ in range(REQUESTS // 10):
            completions += await asyncio.gather(
                *(client.chat.completions.create(model="gpt-4o", messages=HELLO) for _ in range(10))
            )

    seen = {name: len(fakes[name].requests) for name in UPSTREAM_MODEL}
    assert sum(seen.values()) == REQUESTS
    # Expected 100 / 50; the bounds are over four standard deviations wide.
    assert 75 <= seen["local"] <= 125, seen
    assert 25 <= seen["openrouter"] <= 75, seen
    for name, model in UPSTREAM_MODEL.items():
        assert {request.json["model"] for request in fakes[name].requests} == {model}
    assert {completion.model for completion in completions} == {"gpt-4o"}
    assert {completion.choices[0].message.content for completion in completions} == {wire.expected_content(3)}


async def test_each_record_names_the_deployment_that_answered(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        completions = [
            await client.chat.completions.create(model="gpt-4o", messages=HELLO) for _ in range(12)
        ]

    records = [await record_of(gw, completion.id) for completion in completions]

    assert {record["model"] for record in records} == {"gpt-4o"}
    assert Counter(record["provider"] for record in records) == {
        name: len(fakes[name].requests) for name in UPSTREAM_MODEL if fakes[name].requests
    }
    for record in records:
        assert record["upstream_model"] == UPSTREAM_MODEL[record["provider"]]


async def test_a_streamed_alias_answer_names_the_alias_and_its_record_the_provider(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]

    [answered] = [name for name in UPSTREAM_MODEL if fakes[name].requests]
    assert {chunk.model for chunk in chunks} == {"gpt-4o"}
    assert fakes[answered].requests[0].json["model"] == UPSTREAM_MODEL[answered]
    record = await record_of(gw, chunks[0].id)
    assert (record["provider"], record["upstream_model"]) == (answered, UPSTREAM_MODEL[answered])


async def test_grpc_chat_with_an_alias_answers_as_the_alias(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    request = v1.CreateChatCompletionRequest(
        model="gpt-4o", messages=[v1.ChatMessage(role="user", content="Say hello.")]
    )

    completion = await gw.grpc.create_chat_completion(request)

    [answered] = [name for name in UPSTREAM_MODEL if fakes[name].requests]
    assert completion.model == "gpt-4o"
    [choice] = completion.choices
    assert choice.message is not None
    assert choice.message.content == wire.expected_content(3)
    assert fakes[answered].requests[0].json["model"] == UPSTREAM_MODEL[answered]
    found = (await gw.grpc.get_generation(v1.GetGenerationRequest(id=completion.id))).generation
    assert found is not None
    assert (found.model, found.provider, found.upstream_model) == (
        "gpt-4o",
        answered,
        UPSTREAM_MODEL[answered],
    )


async def test_the_models_list_shows_the_alias_owned_by_its_first_deployments_provider(gw: Running) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        listed = {model.id: model.owned_by for model in (await client.models.list()).data}
        retrieved = await client.models.retrieve("gpt-4o")

    assert listed["gpt-4o"] == "local"
    assert (retrieved.id, retrieved.owned_by) == ("gpt-4o", "local")
    grpc_listed = await gw.grpc.list_models(v1.ListModelsRequest())
    assert {model.id: model.owned_by for model in grpc_listed.data}["gpt-4o"] == "local"


async def test_a_provider_model_id_beside_an_alias_still_routes_by_prefix(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="openrouter/anthropic/claude-3.5-sonnet", messages=HELLO
        )

    assert completion.model == "openrouter/anthropic/claude-3.5-sonnet"
    assert [request.json["model"] for request in fakes["openrouter"].requests] == [
        "anthropic/claude-3.5-sonnet"
    ]
    assert fakes["local"].requests == []
