"""Overload on both fronts over real sockets: beyond `server.max_in_flight` (or a provider's `max_in_flight`)
REST answers 429 `overloaded` with `Retry-After` and gRPC RESOURCE_EXHAUSTED, at once; model listing still
answers; once the held requests end, requests are served again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from grpclib import GRPCError, Status

from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, running_gateway, settings_for

HI = [{"role": "user", "content": "hi"}]
# A refusal waits for nothing; this leaves room for a loaded machine and stays far below the hold.
AT_ONCE = 0.5
HOLD = 3.0


def bounds(
    fakes: Mapping[str, FakeUpstream],
    *,
    max_in_flight: int = 2000,
    per_provider: Mapping[str, int] | None = None,
) -> Settings:
    settings = settings_for(fakes)
    providers = {
        name: replace(p, max_in_flight=(per_provider or {}).get(name, 0))
        for name, p in settings.providers.items()
    }
    return replace(
        settings, providers=providers, server=replace(settings.server, max_in_flight=max_in_flight)
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession, gw: Running, model: str, **fields: Any
) -> tuple[int, Any, str]:
    """Status, body (JSON, or a stream's text) and `Retry-After` of a REST chat, or embeddings with `input`."""
    path, body = (
        ("/v1/embeddings", {"model": model, **fields})
        if "input" in fields
        else ("/v1/chat/completions", {"model": model, "messages": HI, **fields})
    )
    async with session.post(f"{gw.rest_url}{path}", json=body) as response:
        payload = (
            await response.json() if response.content_type == "application/json" else await response.text()
        )
        return response.status, payload, response.headers.get("Retry-After", "")


def grpc_chat(model: str) -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(model=model, messages=[v1.ChatMessage(role="user", content="hi")])


async def grpc_refusal(call: Any) -> GRPCError:
    started = time.perf_counter()
    with pytest.raises(GRPCError) as raised:
        await call
    assert time.perf_counter() - started < AT_ONCE
    return raised.value


async def grpc_stream(gw: Running, model: str) -> list[v1.ChatCompletionChunk]:
    return [chunk async for chunk in gw.grpc.create_chat_completion_stream(grpc_chat(model))]


async def test_beyond_the_process_bound_both_fronts_refuse_at_once_and_serve_again_once_requests_end(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    local = fakes["local"]
    local.script(Script(delay=HOLD), Script(delay=HOLD))
    async with running_gateway(bounds(fakes, max_in_flight=2)) as gw:
        held_rest = asyncio.create_task(post(session, gw, "local/llama"))
        held_grpc = asyncio.create_task(gw.grpc.create_chat_completion(grpc_chat("local/llama")))
        async with asyncio.timeout(HOLD / 2):
            await local.wait_for_requests(2)

        started = time.perf_counter()
        status, body, retry_after = await post(session, gw, "dashscope/qwen-turbo")
        streamed = await post(session, gw, "local/llama", stream=True)
        assert time.perf_counter() - started < 2 * AT_ONCE
        unary = await grpc_refusal(gw.grpc.create_chat_completion(grpc_chat("local/llama")))
        stream = await grpc_refusal(grpc_stream(gw, "local/llama"))
        async with session.get(f"{gw.rest_url}/v1/models") as listing:
            assert listing.status == 200
        assert (await gw.grpc.list_models(v1.ListModelsRequest())).data

        assert (status, retry_after) == (429, "1")
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "overloaded"
        assert (streamed[0], streamed[1]["error"]["code"], streamed[2]) == (429, "overloaded", "1")
        assert unary.status is stream.status is Status.RESOURCE_EXHAUSTED
        assert len(local.requests) == 2
        assert fakes["dashscope"].requests == []

        assert (await held_rest)[0] == 200
        assert (await held_grpc).id.startswith("gen-")

        assert (await post(session, gw, "local/llama"))[0] == 200
        assert (await gw.grpc.create_chat_completion(grpc_chat("dashscope/qwen-turbo"))).choices
        assert (await grpc_stream(gw, "local/llama"))[-1].choices


async def test_clients_that_leave_give_their_slots_back(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    local = fakes["local"]
    local.script(Script(hang=True), Script(hang_after_chunks=1))
    async with running_gateway(bounds(fakes, max_in_flight=2)) as gw:
        leaving = [
            asyncio.create_task(post(session, gw, "local/llama")),
            asyncio.create_task(grpc_stream(gw, "local/llama")),
        ]
        async with asyncio.timeout(HOLD):
            upstream = await local.wait_for_requests(2)
            assert (await post(session, gw, "local/llama"))[0] == 429

            for task in leaving:
                task.cancel()
            await asyncio.gather(*leaving, return_exceptions=True)
            for request in upstream:
                await request.disconnected.wait()

        assert (await post(session, gw, "local/llama"))[0] == 200
        assert (await post(session, gw, "local/llama", stream=True))[0] == 200


async def test_a_full_provider_refuses_on_both_fronts_while_other_providers_answer(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    local = fakes["local"]
    local.script(Script(hang=True))
    async with running_gateway(bounds(fakes, per_provider={"local": 1})) as gw:
        held = asyncio.create_task(post(session, gw, "local/llama"))
        async with asyncio.timeout(HOLD):
            await local.wait_for_requests(1)

        status, body, retry_after = await post(session, gw, "local/embed", input="hi")
        refused = await grpc_refusal(gw.grpc.create_chat_completion(grpc_chat("local/llama")))
        others = await asyncio.gather(*(post(session, gw, "dashscope/qwen-turbo") for _ in range(3)))

        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        assert (status, body["error"]["code"], retry_after) == (429, "overloaded", "1")
        assert "provider 'local'" in body["error"]["message"]
        assert refused.status is Status.RESOURCE_EXHAUSTED
        assert [answer[0] for answer in others] == [200, 200, 200]
        assert len(local.requests) == 1
