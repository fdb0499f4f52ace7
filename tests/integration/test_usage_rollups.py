"""Usage rollups (issue 16, point 3) in every store: kept as records are written, summed to the
micro-dollar, each record counted once even when a batch is written twice, untouched by pruning, and the
generations listing newest first with filters and a cursor; in memory, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmgw.application.ports import GenerationStore
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.limits import usd_to_micros
from llmgw.domain.usage_report import Dimension, GenerationQuery, UsageCounters, UsageQuery, UsageRow
from llmgw.infrastructure.storage.memory import MemoryStore
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.stores import fresh_postgres_schema, opened

DAY = 86400
T0 = 1_700_006_400  # 2023-11-15 00:00:00 UTC, a day's start
BASE = GenerationRecord(
    id="gen-0",
    request_id="req",
    kind=GenerationKind.CHAT,
    model="m/a",
    provider="p1",
    upstream_model="a",
    created_at=T0,
    streamed=False,
    status=GenerationStatus.COMPLETED,
)
KEYS = ("keyaaaaaaaaa", "keybbbbbbbbb", "keycccccccccc")
TEAMS = ("team-a", "team-b", "")
MODELS = (("m/a", "p1"), ("m/b", "p1"), ("m/c", "p2"))
STATUSES = (
    GenerationStatus.COMPLETED,
    GenerationStatus.COMPLETED,
    GenerationStatus.ERROR,
    GenerationStatus.CANCELLED,
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GenerationStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'llmgw.db'}")) as sqlite:
            yield sqlite
    else:
        async with fresh_postgres_schema() as (dsn, schema), opened(PostgresStore(dsn, schema=schema)) as pg:
            yield pg


def mixed(count: int, seed: int = 7) -> list[GenerationRecord]:
    """Records over three days (some a second either side of midnight), keys, teams, models, statuses and
    costs that do not sum exactly in floating point."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        model, provider = rng.choice(MODELS)
        key = rng.randrange(len(KEYS))
        at = (
            T0 + rng.choice([0, 1, DAY - 1, DAY, DAY + 3599, DAY + 3600, 2 * DAY + 7000]) + rng.random() * 0.5
        )
        records.append(
            dataclasses.replace(
                BASE,
                id=f"gen-{n:06d}",
                created_at=at,
                model=model,
                provider=provider,
                key_id=KEYS[key],
                team_id=TEAMS[key],
                status=rng.choice(STATUSES),
                prompt_tokens=rng.randrange(1000),
                completion_tokens=rng.randrange(1000),
                cached_tokens=rng.randrange(10),
                reasoning_tokens=rng.randrange(10),
                total_tokens=rng.randrange(2000),
                cost_usd=rng.choice([None, 0.0, 0.0000005, 0.0000015, 0.1 + 0.2, rng.random() / 1000]),
            )
        )
    return records


def expected(records: list[GenerationRecord]) -> UsageCounters:
    total = UsageCounters()
    for record in records:
        total = total.plus(UsageCounters.of(record))
    return total


def everything(group_by: tuple[Dimension, ...] = ()) -> UsageQuery:
    return UsageQuery(since=T0 - DAY, until=T0 + 4 * DAY, group_by=group_by)


async def test_rollups_sum_the_records_to_the_micro_dollar_in_every_grouping(store: GenerationStore) -> None:
    records = mixed(400)
    for start in range(0, len(records), 100):
        await store.put_many(records[start : start + 100])

    (totals,) = await store.usage(everything())
    assert totals.counters == expected(records)
    assert totals.counters.cost_micros == sum(
        usd_to_micros(r.cost_usd) for r in records if r.cost_usd is not None
    )
    assert totals.counters.errors == sum(r.status is GenerationStatus.ERROR for r in records)
    assert totals.counters.cancelled == sum(r.status is GenerationStatus.CANCELLED for r in records)

    by_day = await store.usage(everything((Dimension.DAY,)))
    assert [row.period for row in sorted(by_day, key=lambda r: r.period or 0)] == [T0, T0 + DAY, T0 + 2 * DAY]
    for row in by_day:
        assert row.period is not None
        assert row.counters == expected([r for r in records if row.period <= r.created_at < row.period + DAY])

    by_hour = await store.usage(everything((Dimension.HOUR,)))
    assert sum(row.counters.requests for row in by_hour) == len(records)
    assert {row.period for row in by_hour} == {(int(r.created_at) // 3600) * 3600 for r in records}

    grouped = await store.usage(everything((Dimension.KEY, Dimension.MODEL)))
    want = {
        (key, model): expected([r for r in records if r.key_id == key and r.model == model])
        for key in KEYS
        for model, _ in MODELS
    }
    assert {(row.key_id, row.model): row.counters for row in grouped} == {
        k: v for k, v in want.items() if v.requests
    }
    assert all(row.period is None and row.team_id is None and row.provider is None for row in grouped)

    for dimension, attribute in (
        (Dimension.TEAM, "team_id"),
        (Dimension.PROVIDER, "provider"),
    ):
        rows = await store.usage(everything((dimension,)))
        assert {getattr(row, attribute): row.counters for row in rows} == {
            value: expected([r for r in records if getattr(r, attribute) == value])
            for value in {getattr(r, attribute) for r in records}
        }


async def test_filters_and_the_range_narrow_the_sums(store: GenerationStore) -> None:
    records = mixed(200)
    await store.put_many(records)
    (row,) = await store.usage(dataclasses.replace(everything(), team_id="team-a", provider="p1"))
    assert row.counters == expected([r for r in records if r.team_id == "team-a" and r.provider == "p1"])
    (row,) = await store.usage(dataclasses.replace(everything(), key_id=KEYS[1], model="m/c"))
    assert row.counters == expected([r for r in records if r.key_id == KEYS[1] and r.model == "m/c"])
    (row,) = await store.usage(UsageQuery(since=T0 + DAY, until=T0 + 2 * DAY, group_by=()))
    assert row.counters == expected([r for r in records if T0 + DAY <= r.created_at < T0 + 2 * DAY])
    assert (
        await store.usage(UsageQuery(since=T0 + 10 * DAY, until=T0 + 11 * DAY, group_by=(Dimension.DAY,)))
        == []
    )


async def test_a_batch_written_twice_counts_once_and_pruning_keeps_the_rollups(
    store: GenerationStore,
) -> None:
    records = mixed(50)
    await store.put_many(records)
    await store.put_many(records)  # a write that timed out but landed, retried
    await store.put_many(records[:10] + mixed(60)[50:])  # part repeated, part new
    written = records + mixed(60)[50:]
    (row,) = await store.usage(everything())
    assert row.counters == expected(written)

    removed = await store.prune(T0 + 10 * DAY)
    assert removed == len(written)
    assert await store.get(written[0].id) is None
    (after,) = await store.usage(everything())
    assert after.counters == expected(written)


async def test_the_listing_walks_every_matching_record_once_newest_first(store: GenerationStore) -> None:
    records = mixed(120)
    await store.put_many(records)
    newest_first = sorted(records, key=lambda r: r.id, reverse=True)

    seen: list[GenerationRecord] = []
    before = ""
    while True:
        page = await store.list_generations(GenerationQuery(limit=25, before=before))
        seen += page
        if len(page) < 25:
            break
        before = page[-1].id
    assert [r.id for r in seen] == [r.id for r in newest_first]
    assert seen[0] == newest_first[0]

    query = GenerationQuery(
        limit=100, key_id=KEYS[0], team_id=TEAMS[0], model="m/a", status=GenerationStatus.COMPLETED
    )
    assert [r.id for r in await store.list_generations(query)] == [
        r.id
        for r in newest_first
        if (r.key_id, r.team_id, r.model, r.status) == (KEYS[0], TEAMS[0], "m/a", GenerationStatus.COMPLETED)
    ]
    window = GenerationQuery(limit=100, since=T0 + DAY, until=T0 + 2 * DAY)
    assert [r.id for r in await store.list_generations(window)] == [
        r.id for r in newest_first if T0 + DAY <= r.created_at < T0 + 2 * DAY
    ]


def test_a_usage_row_names_only_its_dimensions() -> None:
    row = UsageRow(UsageCounters(requests=1), model="m")
    assert (row.period, row.key_id, row.team_id, row.model, row.provider) == (None, None, None, "m", None)
