"""Opening a store for a test, and a PostgreSQL schema of its own: shared by the store tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import asyncpg
import pytest

POSTGRES_DSN_VARIABLE = "LLMGW_TEST_POSTGRES_DSN"


class Openable(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Openable)


@asynccontextmanager
async def opened(store: S) -> AsyncIterator[S]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def fresh_postgres_schema() -> AsyncIterator[tuple[str, str]]:
    """A DSN and an empty schema of its own, dropped afterwards, so tests may run in parallel."""
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"{POSTGRES_DSN_VARIABLE} is not set: Postgres store tests need a server")
    schema = f"llmgw_test_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"CREATE SCHEMA {schema}")
        yield dsn, schema
    finally:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()
