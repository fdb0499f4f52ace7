"""Every generation store sums what records cost (`GenerationStore.spend`, what budget counters are rebuilt
from) exactly as settling charged them: each cost rounded to the micro-dollar by `usd_to_micros`, over
the records created in [since, until) of one key, team or model, in memory, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from llmgw.application.ports import GenerationStore
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.limits import usd_to_micros
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.stores import fresh_postgres_schema, opened

T0 = 1_700_000_000.0
BASE = GenerationRecord(
    id="gen-0",
    request_id="req",
    kind=GenerationKind.CHAT,
    model="fake/priced",
    provider="fake",
    upstream_model="priced",
    created_at=T0,
    streamed=False,
    status=GenerationStatus.COMPLETED,
    cost_usd=0.0,
    key_id="keyaaaaaaaaa",
    team_id="team-a",
)


def record(
    number: int,
    cost: float | None,
    at: float = T0,
    *,
    key_id: str = BASE.key_id,
    team_id: str = BASE.team_id,
    model: str = BASE.model,
) -> GenerationRecord:
    return dataclasses.replace(
        BASE, id=f"gen-{number}", cost_usd=cost, created_at=at, key_id=key_id, team_id=team_id, model=model
    )


async def test_spend_sums_each_cost_rounded_to_the_micro_dollar_as_settling_does(
    store: GenerationStore,
) -> None:
    # Each half a micro-dollar: 1 each as settled (a naive sum would round 2.5 to 2 or 3); None is free.
    costs = [0.0000005, 0.0000005, 0.0000005, 0.1 + 0.2, 1e-7, None, 0.0, 0.0000015, 2.675, 1e-5]
    await store.put_many([record(n, cost) for n, cost in enumerate(costs)])

    expected = sum(usd_to_micros(cost) for cost in costs if cost is not None)
    assert expected == 3 + 300_000 + 0 + 0 + 2 + 2_675_000 + 10
    assert await store.spend(T0, T0 + 1) == expected


async def test_spend_counts_records_from_since_and_before_until(store: GenerationStore) -> None:
    await store.put_many(
        [
            record(1, 0.000001, T0 - 0.001),
            record(2, 0.000010, T0),
            record(3, 0.000100, T0 + 99.999),
            record(4, 0.001, T0 + 100),
        ]
    )
    assert await store.spend(T0, T0 + 100) == 110
    assert await store.spend(T0 - 1, T0 + 101) == 1111
    assert await store.spend(T0 + 100, T0 + 100) == 0
    assert await store.spend(0.0, math.inf) == 1111  # a lifetime budget's window


async def test_spend_keeps_to_the_key_team_and_model_asked_for(store: GenerationStore) -> None:
    await store.put_many(
        [
            record(1, 0.000001),
            record(2, 0.000010, key_id="keybbbbbbbbb"),
            record(3, 0.000100, key_id="keybbbbbbbbb", team_id="team-b"),
            record(4, 0.001000, model="fake/other"),
            record(5, 0.010000, key_id="", team_id=""),  # the admin key of the config, no team
        ]
    )
    window = (T0, T0 + 1)
    assert await store.spend(*window) == 11_111
    assert await store.spend(*window, key_id="keyaaaaaaaaa") == 1001
    assert await store.spend(*window, key_id="keybbbbbbbbb") == 110
    assert await store.spend(*window, team_id="team-a") == 1011
    assert await store.spend(*window, team_id="team-b") == 100
    assert await store.spend(*window, model="fake/priced") == 10_111
    assert await store.spend(*window, model="fake/other") == 1000
    assert await store.spend(*window, key_id="keyaaaaaaaaa", model="fake/other") == 1000
    assert await store.spend(*window, key_id="nosuchkey234") == 0


async def test_spend_agrees_with_usd_to_micros_record_by_record_on_awkward_costs(
    store: GenerationStore,
) -> None:
    chooser = random.Random(15)
    costs = [k / 1e6 + 5e-7 for k in range(0, 200, 7)]  # halfway between two micro-dollars, in decimal
    costs += [0.14089149999999998, 0.1408915]  # 17 digits a hair below the half, and the half itself
    costs += [tokens * price / 1e6 for tokens, price in ((1234, 0.15), (77, 2.5), (3, 10.0), (999_999, 0.6))]
    costs += [chooser.uniform(0, 10) ** chooser.choice((1, 3, 6)) / 1e4 for _ in range(150)]
    await store.put_many([record(n, cost, key_id=f"key{n:09d}") for n, cost in enumerate(costs)])

    for n, cost in enumerate(costs):
        assert await store.spend(T0, T0 + 1, key_id=f"key{n:09d}") == usd_to_micros(cost), cost
    assert await store.spend(T0, T0 + 1) == sum(usd_to_micros(cost) for cost in costs)


@pytest.mark.postgres
async def test_postgres_reads_each_cost_in_full_even_where_the_server_is_set_to_print_floats_short() -> None:
    """At 15 digits (extra_float_digits = 0) 0.14089149999999998 prints as 0.1408915 and would round up to
    140 892 micro-dollars; the pool pins the shortest exact digits, so the sum is the 140 891 settled."""
    cost = 0.14089149999999998
    async with fresh_postgres_schema() as (dsn, schema):
        short = f"{dsn}{'&' if '?' in dsn else '?'}extra_float_digits=0"
        connection = await asyncpg.connect(short)
        try:
            assert await connection.fetchval("SELECT ($1::float8)::text", cost) == "0.1408915"
        finally:
            await connection.close()
        async with opened(PostgresStore(short, schema=schema)) as store:
            await store.put_many([record(1, cost)])
            assert await store.spend(T0, T0 + 1) == usd_to_micros(cost) == 140_891


async def test_sqlite_sums_one_key_or_team_through_its_index_not_the_whole_period(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.db"
    async with opened(SQLiteStore(f"sqlite:///{path}")):
        pass  # migrated
    async with aiosqlite.connect(path) as db:
        for column in ("key_id", "team_id"):
            plan = await db.execute_fetchall(
                "EXPLAIN QUERY PLAN SELECT cost_usd FROM generations "  # noqa: S608
                f"WHERE created_at >= 0 AND created_at < 1e10 AND cost_usd IS NOT NULL AND {column} = 'x'"
            )
            assert f"USING INDEX generations_{column} ({column}=? AND created_at>? AND created_at<?)" in str(
                plan
            )
