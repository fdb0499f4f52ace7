"""gRPC answers are not held back by Nagle's algorithm: the gateway's sockets are bound by llmgw, which
grpclib does not recognise as TCP (its own TCP_NODELAY is skipped), so the connection guard sets it.

Without it, each unary call waits for the client's delayed ACK: ~40 ms on Linux loopback, where a call
takes 1-2 ms. The bound below sits between the two with a wide margin either side."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

CALLS = 20


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    async with FakeUpstream("openai") as fake, running_gateway(settings_for({"local": fake})) as running:
        yield running


async def test_sequential_grpc_calls_take_milliseconds_not_a_delayed_ack_each(gw: Running) -> None:
    await gw.grpc.list_models(v1.ListModelsRequest())  # the connection is open before the clock starts
    started = time.perf_counter()
    for _ in range(CALLS):
        await gw.grpc.list_models(v1.ListModelsRequest())
    per_call = (time.perf_counter() - started) / CALLS
    assert per_call < 0.02, f"{per_call * 1000:.1f} ms a call"
