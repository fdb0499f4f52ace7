"""gRPC request messages over `grpc.max_message_bytes` end their call with RESOURCE_EXHAUSTED before they are
read whole or forwarded (grpclib itself has no limit); a message of exactly the limit is served, and the
connection keeps serving after a refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

LIMIT = 100_000


def chat(content: str, model: str = "local/llama") -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(
        model=model, messages=[v1.ChatMessage(role="user", content=content)]
    )


def of_size(size: int) -> v1.CreateChatCompletionRequest:
    """A chat request whose encoded message is exactly `size` bytes."""
    content = "x" * size
    overshoot = len(bytes(chat(content))) - size
    request = chat(content[:-overshoot])
    assert len(bytes(request)) == size
    return request


async def call(gw: Running, request: v1.CreateChatCompletionRequest, *, streamed: bool) -> None:
    if streamed:
        async for _ in gw.grpc.create_chat_completion_stream(request):
            pass
    else:
        await gw.grpc.create_chat_completion(request)


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    settings = settings_for(fakes)
    settings = replace(settings, grpc=replace(settings.grpc, max_message_bytes=LIMIT))
    async with running_gateway(settings) as running:
        yield running


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_message_over_the_limit_is_resource_exhausted_and_never_forwarded(
    gw: Running, fakes: dict[str, FakeUpstream], streamed: bool
) -> None:
    request = chat("x" * 50_000_000)
    started = time.perf_counter()

    with pytest.raises(GRPCError) as caught:
        await asyncio.wait_for(call(gw, request, streamed=streamed), 10)

    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert "grpc.max_message_bytes (100000)" in (caught.value.message or "")
    # Refused on the message's 5-byte prefix, not after 50 MB arrived (grpclib would have waited for all).
    assert time.perf_counter() - started < 3.0
    assert fakes["local"].requests == []


async def test_a_message_of_exactly_the_limit_is_served(gw: Running, fakes: dict[str, FakeUpstream]) -> None:
    completion = await gw.grpc.create_chat_completion(of_size(LIMIT))

    assert completion.choices
    assert len(fakes["local"].requests) == 1


async def test_one_byte_over_the_limit_is_refused(gw: Running, fakes: dict[str, FakeUpstream]) -> None:
    with pytest.raises(GRPCError) as caught:
        await gw.grpc.create_chat_completion(of_size(LIMIT + 1))

    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert fakes["local"].requests == []


async def test_the_connection_serves_calls_before_during_and_after_a_refusal(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    channel = Channel("127.0.0.1", gw.fronts.ports["grpc"])
    stub = v1.LlmGatewayServiceStub(channel)
    try:
        assert (await stub.create_chat_completion(chat("hi"))).choices
        small = [stub.create_chat_completion(chat("hi")) for _ in range(5)]
        results = await asyncio.gather(
            stub.create_chat_completion(chat("x" * 5_000_000)), *small, return_exceptions=True
        )
        assert isinstance(results[0], GRPCError)
        assert results[0].status is Status.RESOURCE_EXHAUSTED
        assert all(isinstance(result, v1.ChatCompletion) for result in results[1:]), results
        assert (await stub.create_chat_completion(chat("hi"))).choices
    finally:
        channel.close()
    assert len(fakes["local"].requests) == 7
