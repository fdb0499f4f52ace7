"""Fixtures for the `llmgw_client` tests: a real llmgw on loopback over fake upstreams, its records in a
store the test can watch, and a client pointed at its gRPC port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from llmgw_client import ChatCompletionStream, LLMGateway, NotFoundError
from llmgw_client.types import ChatCompletionChunk, Generation

from tests.fakes.ports import FakeStore
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

Json = dict[str, Any]
HI: list[Json] = [{"role": "user", "content": "Say hello."}]
# One chat model per upstream kind: openai, dashscope, openrouter.
CHAT_MODELS = ["local/llama", "dashscope/qwen-turbo", "openrouter/openai/gpt-4o"]
# Room for a loaded machine above a scripted delay.
SLACK = 0.7


def grpc_target(gw: Running) -> str:
    return f"127.0.0.1:{gw.fronts.ports['grpc']}"


@pytest.fixture
def records() -> FakeStore:
    """The generation records the gateway writes, as it writes them."""
    return FakeStore()


@pytest.fixture
async def served(fakes: dict[str, FakeUpstream], records: FakeStore) -> AsyncIterator[Running]:
    """llmgw with auth off and no gateway retries (one upstream attempt a request)."""
    async with running_gateway(settings_for(fakes), store=records) as running:
        yield running


@pytest.fixture
async def client(served: Running, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LLMGateway]:
    """A client without retries, so each scripted upstream failure is seen once."""
    monkeypatch.delenv("LLMGW_API_KEY", raising=False)
    async with LLMGateway(grpc_target(served), max_retries=0, timeout=5.0) as gateway:
        yield gateway


async def generation_with_status(
    client: LLMGateway, generation_id: str, status: str, within: float = 1.0
) -> Generation:
    """The generation once its record says `status` (records of streams left early land a moment later)."""
    deadline = time.monotonic() + within
    while True:
        try:
            generation = await client.generations.retrieve(generation_id)
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
        else:
            if generation.status == status or time.monotonic() > deadline:
                return generation
        await asyncio.sleep(0.02)


async def read_into(received: list[ChatCompletionChunk], stream: ChatCompletionStream) -> None:
    """Read a stream to its end, keeping each chunk as it arrives (what was seen before a failure)."""
    async with stream:
        async for chunk in stream:
            received.append(chunk)


async def stream_all(client: LLMGateway, **request: Any) -> list[ChatCompletionChunk]:
    """Open a stream and read it to its end: a failure raises whether it comes at the opening or later."""
    received: list[ChatCompletionChunk] = []
    await read_into(received, await client.chat.completions.create(stream=True, **request))
    return received
