"""Shared fixtures: fake upstreams of each kind and a running gateway pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    upstreams = {
        "dashscope": FakeUpstream("dashscope"),
        "openrouter": FakeUpstream("openrouter"),
        "local": FakeUpstream("openai"),
    }
    for fake in upstreams.values():
        await fake.start()
    try:
        yield upstreams
    finally:
        for fake in upstreams.values():
            await fake.close()


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    async with running_gateway(settings_for(fakes)) as running:
        yield running
