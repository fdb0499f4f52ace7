"""The generation store fixtures the store tests share: each test runs on memory, SQLite and PostgreSQL
(skipped, saying why, without LLMGW_TEST_POSTGRES_DSN). A module may define its own `store` instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llmgw.application.ports import GenerationStore
from llmgw.infrastructure.storage.memory import MemoryStore
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.stores import fresh_postgres_schema, opened

#: Opens the same database again on each call (a memory store is the same object).
StoreFactory = Callable[[], GenerationStore]

ALL_STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ALL_STORES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    if request.param == "memory":
        # A memory store's records live in the object, so "the same database" is the same object.
        memory = MemoryStore()
        yield lambda: memory
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'llmgw.db'}"
        yield lambda: SQLiteStore(url)
    else:
        async with fresh_postgres_schema() as (dsn, schema):
            yield lambda: PostgresStore(dsn, schema=schema)


@pytest.fixture
async def store(database: StoreFactory) -> AsyncIterator[GenerationStore]:
    async with opened(database()) as opened_store:
        yield opened_store
