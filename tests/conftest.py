"""Shared fixtures: fake upstreams of each kind and a running gateway pointed at them."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for
from tests.log_capture import log_buffer  # noqa: F401  (a fixture for every test)


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


@pytest.fixture
async def postgres_schema_dsn() -> AsyncIterator[str]:
    """LLMGW_TEST_POSTGRES_DSN with a search_path naming a fresh schema, dropped afterwards (the machine's
    PostgreSQL is shared). Tests using it skip themselves when the variable is unset."""
    import asyncpg

    dsn = os.environ["LLMGW_TEST_POSTGRES_DSN"]
    schema = f"llmgw_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(dsn)
    await connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"
    finally:
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
        await connection.close()
