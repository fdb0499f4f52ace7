"""A provider of a kind that needs a key and has none answers at once, on both fronts, naming the variable to
set; the upstream is never called."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from grpclib import GRPCError, Status

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

CHAT = {"model": "openrouter/openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def keyless(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    settings = settings_for(fakes)
    providers = {**settings.providers, "openrouter": replace(settings.providers["openrouter"], api_key="")}
    async with running_gateway(replace(settings, providers=providers)) as running:
        yield running


@pytest.mark.parametrize("stream", [False, True])
async def test_rest_answers_502_naming_the_variable_and_never_calls_the_upstream(
    keyless: Running, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{keyless.rest_url}/v1/chat/completions", json={**CHAT, "stream": stream}) as response,
    ):
        body = await response.json()

    assert response.status == 502
    assert body["error"]["code"] == "missing_credentials"
    assert "OPENROUTER_API_KEY" in body["error"]["message"]
    assert fakes["openrouter"].requests == []


async def test_grpc_answers_unavailable_naming_the_variable(
    keyless: Running, fakes: dict[str, FakeUpstream]
) -> None:
    request = v1.CreateChatCompletionRequest(
        model="openrouter/openai/gpt-4o", messages=[v1.ChatMessage(role="user", content="hi")]
    )
    with pytest.raises(GRPCError) as raised:
        await keyless.grpc.create_chat_completion(request)

    assert raised.value.status is Status.UNAVAILABLE
    assert "OPENROUTER_API_KEY" in (raised.value.message or "")
    assert fakes["openrouter"].requests == []


async def test_other_providers_keep_answering(keyless: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{keyless.rest_url}/v1/chat/completions",
            json={"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]},
        ) as response,
    ):
        assert response.status == 200
