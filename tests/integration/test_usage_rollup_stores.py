"""Every generation store keeps usage rollups as records are written, counts each record once, keeps them
when records are pruned, sums them by any dimensions, and lists records newest first by page: in memory,
in a SQLite file, in Postgres."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from llmgw.application.ports import GenerationStore
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.limits import usd_to_micros
from llmgw.domain.usage_report import (
    Dimension,
    GenerationQuery,
    UsageCounters,
    UsageQuery,
    UsageRow,
    hour_of,
)
from llmgw.infrastructure.storage import rows, sqlite
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.stores import fresh_postgres_schema, opened

# 2026-12-01 00:00:00 UTC.
DAY_ONE = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
EVERYTHING = UsageQuery(since=0, until=2**40, group_by=())
COSTS = (0.0000015, 0.0000005, 0.1 + 0.2, None, 0.0, 1.2345675, 0.000001499)
KEYS = (("key-a", "team-1"), ("key-b", "team-1"), ("key-c", "team-2"), ("key-d", ""))
MODELS = (("m-small", "openrouter"), ("m-big", "dashscope"), ("m-big", "openrouter"), ("m-local", "local"))
STATUSES = (GenerationStatus.COMPLETED, GenerationStatus.ERROR, GenerationStatus.CANCELLED)


def record(number: int, created_at: float, **fields: object) -> GenerationRecord:
    """Ids sort by number, as minted ids sort by time."""
    values: dict[str, object] = {
        "id": f"gen-{number:012x}{number:016x}",
        "request_id": f"req-{number}",
        "kind": GenerationKind.CHAT,
        "model": "m-small",
        "provider": "openrouter",
        "upstream_model": "up",
        "created_at": created_at,
        "streamed": False,
        "status": GenerationStatus.COMPLETED,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        **fields,
    }
    return GenerationRecord(**values)  # type: ignore[arg-type]


def mixed_batch(count: int = 120, start: int = 0) -> list[GenerationRecord]:
    """Records of every status, key, team, model, provider and awkward cost, over two UTC days."""
    batch = []
    combos = itertools.cycle(itertools.product(KEYS, MODELS, STATUSES))
    for number in range(start, start + count):
        (key_id, team_id), (model, provider), status = next(combos)
        batch.append(
            record(
                number,
                DAY_ONE + number * 1234.5,
                key_id=key_id,
                team_id=team_id,
                model=model,
                provider=provider,
                status=status,
                prompt_tokens=number,
                completion_tokens=2 * number,
                cached_tokens=number % 7,
                reasoning_tokens=number % 5,
                total_tokens=3 * number,
                cost_usd=COSTS[number % len(COSTS)],
            )
        )
    return batch


def summed(records: list[GenerationRecord]) -> UsageCounters:
    """What the rollups must say, summed straight from the records."""
    return UsageCounters(
        requests=len(records),
        errors=sum(r.status is GenerationStatus.ERROR for r in records),
        cancelled=sum(r.status is GenerationStatus.CANCELLED for r in records),
        prompt_tokens=sum(r.prompt_tokens for r in records),
        completion_tokens=sum(r.completion_tokens for r in records),
        cached_tokens=sum(r.cached_tokens for r in records),
        reasoning_tokens=sum(r.reasoning_tokens for r in records),
        total_tokens=sum(r.total_tokens for r in records),
        cost_micros=sum(usd_to_micros(r.cost_usd) for r in records if r.cost_usd is not None),
    )


async def totals(store: GenerationStore, query: UsageQuery = EVERYTHING) -> UsageCounters:
    rows = await store.usage(query)
    assert len(rows) <= 1
    return rows[0].counters if rows else UsageCounters()


def by(rows: list[UsageRow], *names: str) -> dict[tuple[object, ...], UsageCounters]:
    return {tuple(getattr(row, name) for name in names): row.counters for row in rows}


async def test_rollups_sum_a_mixed_batch_exactly_as_the_records_do(store: GenerationStore) -> None:
    batch = mixed_batch()
    await store.put_many(batch[:70])
    await store.put_many(batch[70:])

    assert await totals(store) == summed(batch)
    assert (await totals(store)).cost_micros == sum(
        usd_to_micros(r.cost_usd) for r in batch if r.cost_usd is not None
    )
    for key_id, _ in KEYS:
        mine = [r for r in batch if r.key_id == key_id]
        assert await totals(store, dataclasses.replace(EVERYTHING, key_id=key_id)) == summed(mine)


async def test_the_same_batch_written_twice_counts_once(store: GenerationStore) -> None:
    batch = mixed_batch(40)
    await store.put_many(batch)
    await store.put_many(batch)  # a write that timed out but landed, retried
    await store.put_many(batch[10:20] + mixed_batch(5, start=40))  # partly old, partly new

    assert await totals(store) == summed(batch + mixed_batch(5, start=40))


async def test_pruning_records_leaves_the_rollups_whole(store: GenerationStore) -> None:
    batch = mixed_batch()
    await store.put_many(batch)

    removed = await store.prune(DAY_ONE + 86400 * 10)

    assert removed == len(batch)
    assert await store.get(batch[0].id) is None
    assert await totals(store) == summed(batch)


async def test_each_dimension_groups_the_rollups_as_the_records_group(store: GenerationStore) -> None:
    batch = mixed_batch()
    await store.put_many(batch)
    dimensions: dict[Dimension, tuple[str, Callable[[GenerationRecord], object]]] = {
        Dimension.KEY: ("key_id", lambda r: r.key_id),
        Dimension.TEAM: ("team_id", lambda r: r.team_id),
        Dimension.MODEL: ("model", lambda r: r.model),
        Dimension.PROVIDER: ("provider", lambda r: r.provider),
        Dimension.HOUR: ("period", lambda r: hour_of(r.created_at)),
        Dimension.DAY: ("period", lambda r: int(r.created_at // 86400 * 86400)),
    }
    for dimension, (field, of) in dimensions.items():
        rows = await store.usage(dataclasses.replace(EVERYTHING, group_by=(dimension,)))
        groups = {of(r) for r in batch}
        expected = {(g,): summed([r for r in batch if of(r) == g]) for g in groups}
        assert by(rows, field) == expected, dimension


async def test_combined_dimensions_and_filters_group_and_narrow_together(store: GenerationStore) -> None:
    batch = mixed_batch()
    await store.put_many(batch)
    query = UsageQuery(
        since=0, until=2**40, group_by=(Dimension.DAY, Dimension.TEAM, Dimension.MODEL), provider="openrouter"
    )

    rows = await store.usage(query)

    chosen = [r for r in batch if r.provider == "openrouter"]
    keys = Counter((int(r.created_at // 86400 * 86400), r.team_id, r.model) for r in chosen)
    expected = {
        key: summed([r for r in chosen if (int(r.created_at // 86400 * 86400), r.team_id, r.model) == key])
        for key in keys
    }
    assert by(rows, "period", "team_id", "model") == expected
    assert all(row.key_id is None and row.provider is None for row in rows)


async def test_days_and_hours_are_cut_at_utc_boundaries(store: GenerationStore) -> None:
    midnight = DAY_ONE + 86400
    await store.put_many(
        [
            record(1, midnight - 0.001, cost_usd=0.000001),
            record(2, midnight, cost_usd=0.000002),
            record(3, midnight + 3599.999, cost_usd=0.000004),
            record(4, midnight + 3600, cost_usd=0.000008),
        ]
    )

    days = await store.usage(dataclasses.replace(EVERYTHING, group_by=(Dimension.DAY,)))
    hours = await store.usage(dataclasses.replace(EVERYTHING, group_by=(Dimension.HOUR,)))
    second_day = await store.usage(UsageQuery(since=int(midnight), until=int(midnight) + 86400, group_by=()))

    assert {p: c.cost_micros for (p,), c in by(days, "period").items()} == {
        int(DAY_ONE): 1,
        int(midnight): 14,
    }
    assert {p: c.cost_micros for (p,), c in by(hours, "period").items()} == {
        int(midnight) - 3600: 1,
        int(midnight): 6,
        int(midnight) + 3600: 8,
    }
    assert second_day[0].counters.cost_micros == 14


async def test_no_rollup_in_range_is_no_row(store: GenerationStore) -> None:
    await store.put_many(mixed_batch(10))
    assert await store.usage(UsageQuery(since=0, until=3600, group_by=())) == []
    assert await store.usage(UsageQuery(since=0, until=3600, group_by=(Dimension.DAY,))) == []


async def test_the_listing_walks_every_record_once_newest_first_page_by_page(store: GenerationStore) -> None:
    batch = mixed_batch(53)
    await store.put_many(batch)
    seen: list[str] = []
    before = ""
    while True:
        page = await store.list_generations(GenerationQuery(limit=10, before=before))
        seen += [r.id for r in page]
        if len(page) < 10:
            break
        before = page[-1].id

    assert seen == sorted((r.id for r in batch), reverse=True)


async def test_the_listing_filters_alone_and_together(store: GenerationStore) -> None:
    batch = mixed_batch()
    await store.put_many(batch)
    since, until = DAY_ONE + 20_000, DAY_ONE + 100_000
    cases: list[tuple[GenerationQuery, Callable[[GenerationRecord], bool]]] = [
        (GenerationQuery(limit=500, key_id="key-c"), lambda r: r.key_id == "key-c"),
        (GenerationQuery(limit=500, team_id="team-1"), lambda r: r.team_id == "team-1"),
        (GenerationQuery(limit=500, model="m-big"), lambda r: r.model == "m-big"),
        (
            GenerationQuery(limit=500, status=GenerationStatus.ERROR),
            lambda r: r.status is GenerationStatus.ERROR,
        ),
        (GenerationQuery(limit=500, since=since, until=until), lambda r: since <= r.created_at < until),
        (
            GenerationQuery(
                limit=500, team_id="team-1", model="m-big", status=GenerationStatus.CANCELLED, since=since
            ),
            lambda r: (
                r.team_id == "team-1"
                and r.model == "m-big"
                and r.status is GenerationStatus.CANCELLED
                and r.created_at >= since
            ),
        ),
    ]
    for query, wanted in cases:
        expected = sorted((r.id for r in batch if wanted(r)), reverse=True)
        assert expected, query
        assert [r.id for r in await store.list_generations(query)] == expected, query


async def test_a_trace_id_reads_back_from_the_listing(store: GenerationStore) -> None:
    traced = record(1, DAY_ONE, trace_id="0af7651916cd43dd8448eb211c80319c")
    await store.put_many([traced])
    assert await store.list_generations(GenerationQuery(limit=1)) == [traced]
    assert await store.get(traced.id) == traced


async def test_sqlite_migration_sums_the_records_already_stored_into_the_rollups(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    batch = mixed_batch(30)
    # A file at schema 6, records written before rollups existed.
    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for version, statements in enumerate(sqlite.MIGRATIONS[:6], start=1):
            for statement in statements:
                await db.execute(statement)
            await db.execute("INSERT INTO llmgw_schema_version VALUES (?, 0)", (version,))
        columns = [c for c in rows.COLUMNS if c != "trace_id"]
        quoted = ", ".join(f'"{c}"' for c in columns)
        stored = [
            tuple(v for c, v in zip(rows.COLUMNS, rows.to_row(r), strict=True) if c != "trace_id")
            for r in batch
        ]
        await db.executemany(
            f"INSERT INTO generations ({quoted}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608
            stored,
        )
        await db.commit()

    async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
        assert await totals(store) == summed(batch)
        await store.put_many(batch)  # already stored: counted at migration, not again
        assert await totals(store) == summed(batch)


@pytest.mark.postgres
async def test_postgres_migration_sums_the_records_already_stored_into_the_rollups() -> None:
    import asyncpg

    from llmgw.infrastructure.storage import postgres

    batch = mixed_batch(30)
    async with fresh_postgres_schema() as (dsn, schema):
        connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            await connection.execute(
                "CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            for version, statements in enumerate(postgres.MIGRATIONS[:6], start=1):
                for statement in statements:
                    await connection.execute(statement)
                await connection.execute("INSERT INTO llmgw_schema_version VALUES ($1, 0)", version)
            columns = [c for c in rows.COLUMNS if c != "trace_id"]
            quoted = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
            await connection.executemany(
                f"INSERT INTO generations ({quoted}) VALUES ({marks})",  # noqa: S608
                [
                    tuple(v for c, v in zip(rows.COLUMNS, rows.to_row(r), strict=True) if c != "trace_id")
                    for r in batch
                ],
            )
        finally:
            await connection.close()
        async with opened(PostgresStore(dsn, schema=schema)) as store:
            assert await totals(store) == summed(batch)
            await store.put_many(batch)
            assert await totals(store) == summed(batch)
