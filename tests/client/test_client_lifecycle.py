"""A client can be built where no event loop runs yet (a module's top, a sync factory) and used from the
loop that runs later, as the openai SDK's `AsyncOpenAI` can: its channel is opened by the first call."""

from __future__ import annotations

import asyncio
import socket

import pytest
from llmgw_client import APIConnectionError, LLMGateway


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_client_built_outside_any_loop_works_in_the_loop_that_uses_it() -> None:
    client = LLMGateway(f"127.0.0.1:{closed_port()}", max_retries=0, timeout=5)

    async def use() -> None:
        async with client:
            await client.models.list()

    with pytest.raises(APIConnectionError):
        asyncio.run(use())


def test_a_closed_client_opens_a_new_channel_for_its_next_call() -> None:
    client = LLMGateway(f"127.0.0.1:{closed_port()}", max_retries=0, timeout=5)

    async def twice() -> None:
        for _ in range(2):
            with pytest.raises(APIConnectionError):
                await client.models.list()
            await client.close()

    asyncio.run(twice())
