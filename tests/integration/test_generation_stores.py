"""Every generation store keeps records exactly as written: in memory, in a SQLite file, in Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from llmgw.application.ports import GenerationStore
from llmgw.domain.generation import Attempt, GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.storage import postgres, rows, sqlite
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.integration.conftest import StoreFactory
from tests.stores import fresh_postgres_schema, opened

# Makes a new, unopened store over one and the same database.

DURABLE_STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

FULL = GenerationRecord(
    id="gen-full",
    request_id="req-1",
    kind=GenerationKind.CHAT,
    model="gpt-fast",
    provider="openai",
    upstream_model="gpt-4o-mini-2024-07-18",
    created_at=1_717_171_717.123456,
    streamed=True,
    status=GenerationStatus.COMPLETED,
    upstream_id="chatcmpl-abc",
    finish_reason="stop",
    prompt_tokens=12,
    completion_tokens=2**40,
    total_tokens=2**40 + 12,
    cached_tokens=3,
    reasoning_tokens=7,
    cost_usd=0.1 + 0.2,
    latency_ms=1234.5678901234,
    time_to_first_token_ms=1e-9,
    error_code="upstream_timeout",
    error_message="naïve “quotes” and 漢字 and an emoji 🚀, plus 'single' quotes",
    user="alice@example.com",
    attempts=(
        Attempt("openai", "gpt-4o-mini-2024-07-18", "gpt-fast", "error", "upstream_unavailable", 12.5),
        Attempt("openai", "gpt-4o-mini-2024-07-18", "gpt-fast", "completed", "", 1200.25),
    ),
    trace_id="0af7651916cd43dd8448eb211c80319c",
)
BARE = GenerationRecord(
    id="gen-bare",
    request_id="",
    kind=GenerationKind.EMBEDDINGS,
    model="embed",
    provider="local",
    upstream_model="",
    created_at=0.0,
    streamed=False,
    status=GenerationStatus.CANCELLED,
)
ZEROS = dataclasses.replace(
    BARE,
    id="gen-zeros",
    status=GenerationStatus.ERROR,
    cost_usd=0.0,
    latency_ms=0.0,
    time_to_first_token_ms=0.0,
)


def record(generation_id: str, created_at: float = 1_700_000_000.0) -> GenerationRecord:
    return dataclasses.replace(FULL, id=generation_id, created_at=created_at)


@pytest.mark.parametrize("written", [FULL, BARE, ZEROS], ids=["every-field", "optional-none", "zeros"])
async def test_a_record_reads_back_exactly_as_written(
    store: GenerationStore, written: GenerationRecord
) -> None:
    await store.put_many([written])

    read = await store.get(written.id)

    assert read == written
    assert read is not None
    # `==` alone takes SQLite's 1 for True.
    assert type(read.streamed) is bool


async def test_an_unknown_id_reads_as_none(store: GenerationStore) -> None:
    await store.put_many([FULL])

    assert await store.get("gen-never-written") is None


async def test_a_batch_of_a_thousand_records_is_all_readable(store: GenerationStore) -> None:
    batch = [record(f"gen-{index:04d}", created_at=1_700_000_000.0 + index / 7) for index in range(1000)]

    await store.put_many(batch)

    assert [await store.get(written.id) for written in batch] == batch


async def test_an_empty_batch_writes_nothing_and_does_not_fail(store: GenerationStore) -> None:
    await store.put_many([])

    assert await store.get(FULL.id) is None


async def test_writing_the_same_id_again_replaces_the_record(store: GenerationStore) -> None:
    retried = dataclasses.replace(FULL, status=GenerationStatus.ERROR, cost_usd=None, error_message="retried")
    await store.put_many([FULL])

    await store.put_many([retried])

    assert await store.get(FULL.id) == retried


async def test_prune_removes_only_older_records_and_counts_them(store: GenerationStore) -> None:
    await store.put_many([record("gen-old-1", 100.0), record("gen-old-2", 199.5), record("gen-edge", 200.0)])
    await store.put_many([record("gen-new", 300.0)])

    assert await store.prune(older_than=200.0) == 2
    assert await store.get("gen-old-1") is None
    assert await store.get("gen-old-2") is None
    assert await store.get("gen-edge") == record("gen-edge", 200.0)
    assert await store.get("gen-new") == record("gen-new", 300.0)
    assert await store.prune(older_than=200.0) == 0


async def test_an_open_store_answers_ping(store: GenerationStore) -> None:
    assert await store.ping() is True


@pytest.mark.parametrize("database", DURABLE_STORES, indirect=True)
async def test_records_survive_closing_and_reopening(database: StoreFactory) -> None:
    async with opened(database()) as first:
        await first.put_many([FULL, BARE])

    async with opened(database()) as second:
        assert await second.get(FULL.id) == FULL
        assert await second.get(BARE.id) == BARE


@pytest.mark.parametrize("database", DURABLE_STORES, indirect=True)
async def test_a_closed_store_does_not_answer_ping(database: StoreFactory) -> None:
    async with opened(database()) as closed:
        pass

    assert await closed.ping() is False


@pytest.mark.parametrize("database", DURABLE_STORES, indirect=True)
async def test_several_stores_opening_one_database_at_once_all_work(database: StoreFactory) -> None:
    stores = [database() for _ in range(4)]

    # Like replicas or workers starting together: the migrations must not race each other.
    await asyncio.gather(*(each.open() for each in stores))
    try:
        await stores[0].put_many([FULL])
        assert [await each.get(FULL.id) for each in stores] == [FULL] * len(stores)
    finally:
        await asyncio.gather(*(each.close() for each in stores))


async def applied_migrations(path: Path) -> list[tuple[int, float]]:
    async with (
        aiosqlite.connect(path) as db,
        db.execute("SELECT version, applied_at FROM llmgw_schema_version ORDER BY version") as cursor,
    ):
        return [(int(version), float(applied_at)) for version, applied_at in await cursor.fetchall()]


async def test_sqlite_records_the_schema_version_and_does_not_migrate_again_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.db"
    async with opened(SQLiteStore(f"sqlite:///{path}")) as first:
        await first.put_many([FULL])
    migrated = await applied_migrations(path)

    async with opened(SQLiteStore(f"sqlite:///{path}")) as second:
        assert await second.get(FULL.id) == FULL

    assert [version for version, _ in migrated] == list(range(1, len(sqlite.MIGRATIONS) + 1))
    assert await applied_migrations(path) == migrated


async def test_a_sqlite_file_of_the_first_schema_is_migrated_and_its_rows_read_with_no_attempts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "llmgw.db"
    old = dataclasses.replace(FULL, attempts=(), trace_id="")
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in sqlite.MIGRATIONS[0]:
            await db.execute(statement)
        await db.execute("INSERT INTO llmgw_schema_version VALUES (1, 0)")
        first = rows.COLUMNS.index("attempts")  # the columns of the first schema come before it
        columns = ", ".join(f'"{name}"' for name in rows.COLUMNS[:first])
        await db.execute(
            f"INSERT INTO generations ({columns}) VALUES ({', '.join('?' * first)})",  # noqa: S608
            rows.to_row(old)[:first],
        )
        await db.commit()

    async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
        assert await store.get(old.id) == old
        await store.put_many([FULL])
        assert await store.get(FULL.id) == FULL


async def test_sqlite_puts_the_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.db"
    async with opened(SQLiteStore(f"sqlite:///{path}")):
        pass

    async with aiosqlite.connect(path) as db, db.execute("PRAGMA journal_mode") as cursor:
        assert await cursor.fetchone() == ("wal",)


async def test_sqlite_creates_the_directories_of_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async with opened(SQLiteStore("sqlite:///./var/data/llmgw.db")) as store:
        await store.put_many([FULL])

    assert (tmp_path / "var" / "data" / "llmgw.db").is_file()


async def test_sqlite_in_memory_keeps_records_while_open() -> None:
    async with opened(SQLiteStore("sqlite:///:memory:")) as store:
        await store.put_many([FULL])

        assert await store.get(FULL.id) == FULL
        assert await store.ping() is True


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://relative.db", "postgresql://x/y"])
def test_sqlite_rejects_a_url_that_names_no_file(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        SQLiteStore(url)


@pytest.mark.postgres
async def test_postgres_records_the_schema_version_and_does_not_migrate_again_on_reopen() -> None:
    async with fresh_postgres_schema() as (dsn, schema):
        async with opened(PostgresStore(dsn, schema=schema)):
            pass
        connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            query = "SELECT version, applied_at FROM llmgw_schema_version ORDER BY version"
            migrated = [tuple(row) for row in await connection.fetch(query)]
            async with opened(PostgresStore(dsn, schema=schema)):
                pass
            again = [tuple(row) for row in await connection.fetch(query)]
        finally:
            await connection.close()

    assert [version for version, _ in migrated] == list(range(1, len(postgres.MIGRATIONS) + 1))
    assert again == migrated
    assert time.time() - migrated[0][1] < 60
