"""Budget counters rebuilt from the generation records after Redis lost them (issue 15, point 3), through a
real gateway sharing Redis (`LLMGW_TEST_REDIS_URL`): the next request of the key restores its counter in
the background, and `llmgw limits rebuild` restores every budget at once; without Redis the command says
there is nothing it could rebuild. Redis is shared: a test deletes only its own key's counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from llmgw.domain.limits import Period, format_usd
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running
from tests.integration.test_limit_usage_api import (
    REDIS_URL,
    chat,
    cli_config,
    gateway,
    llmgw,
    micros_of,
    ok,
    settled_usage,
)
from tests.stores import opened

UNPRICED = "local/no-price"


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        pytest.skip("LLMGW_TEST_REDIS_URL is not set: counters rebuilt in Redis need a server")
    return REDIS_URL


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A second reader of the gateway's SQLite file: what the records say, once written."""
    async with opened(SQLiteStore(f"sqlite:///{tmp_path}/llmgw.db")) as store:
        yield store


async def lose_budget_counters(url: str, owner: str) -> int:
    """Delete the budget counters of `owner` (`key:ID`) alone, as a Redis restart would lose them all."""
    client = redis.Redis.from_url(url)
    try:
        names = [name async for name in client.scan_iter(match=f"llmgw:limits:{owner}:budget:*")]
        return int(await client.delete(*names)) if names else 0
    finally:
        await client.aclose()


async def written(store: SQLiteStore, key_id: str, micros: int, within: float = 5.0) -> None:
    """Until the records of `key_id` today sum to `micros` in the store (the writer runs in the background)."""
    since, until = Period.DAY.bounds(time.time())
    deadline = time.monotonic() + within
    while await store.spend(since, until, key_id=key_id) != micros:
        assert time.monotonic() < deadline, "the records were not written"
        await asyncio.sleep(0.02)


async def spent_usd(gw: Running, path: str, *, above: float = 0.0, within: float = 5.0) -> float:
    """The budget's spent money once it is above `above` (a restore runs in the background)."""
    deadline = time.monotonic() + within
    while True:
        usage: dict[str, Any] = await ok(gw, "GET", path)
        spent = float(usage["budget"]["spent_usd"])
        if spent > above or time.monotonic() > deadline:
            return spent
        await asyncio.sleep(0.02)


async def spend_some(
    gw: Running, records: SQLiteStore, key: dict[str, Any], count: int, before: int = 0
) -> int:
    """`count` priced requests with `key`, settled and written; what all its records cost (those of `before`
    micro-USD and these), in micro-USD."""
    generation_ids = [await chat(gw, key["key"]) for _ in range(count)]
    await settled_usage(gw, f"/admin/v1/keys/{key['id']}/usage")
    micros = before + await micros_of(gw, generation_ids, key["key"])
    await written(records, key["id"], micros)
    return micros


@pytest.mark.redis
async def test_a_budget_counter_lost_in_redis_is_restored_from_the_records_by_the_next_request(
    fakes: dict[str, FakeUpstream], tmp_path: Path, redis_url: str, records: SQLiteStore
) -> None:
    async with gateway(fakes, f"sqlite:///{tmp_path}/llmgw.db", redis_url=redis_url) as gw:
        issued = await ok(
            gw, "POST", "/admin/v1/keys", {"name": "ci", "budget_usd": 5, "budget_period": "day"}
        )
        path = f"/admin/v1/keys/{issued['id']}/usage"
        micros = await spend_some(gw, records, issued, 3)
        micros = await spend_some(gw, records, issued, 1, micros)  # this one saw money spent
        assert micros > 0
        assert await spent_usd(gw, path) == micros / 1_000_000

        assert await lose_budget_counters(redis_url, f"key:{issued['id']}") == 2  # spent and reserved
        assert (await ok(gw, "GET", path))["budget"]["spent_usd"] == 0

        await chat(gw, issued["key"], model=UNPRICED)  # costs nothing; finds the counter missing
        assert await spent_usd(gw, path) == micros / 1_000_000
        usage = await settled_usage(gw, path)
        assert usage["budget"]["remaining_usd"] == (5_000_000 - micros) / 1_000_000


@pytest.mark.redis
async def test_limits_rebuild_restores_every_budget_from_the_records_and_prints_each(
    fakes: dict[str, FakeUpstream], tmp_path: Path, redis_url: str, records: SQLiteStore
) -> None:
    storage_url = f"sqlite:///{tmp_path}/llmgw.db"
    config = cli_config(tmp_path, storage_url, redis_url)
    async with gateway(fakes, storage_url, redis_url=redis_url) as gw:
        team = await ok(gw, "POST", "/admin/v1/teams", {"name": "search", "budget_usd": 100})
        daily = await ok(
            gw,
            "POST",
            "/admin/v1/keys",
            {"name": "daily", "team_id": team["id"], "budget_usd": 5, "budget_period": "day"},
        )
        await ok(gw, "POST", "/admin/v1/keys", {"name": "rates only", "rpm": 100})
        micros = await spend_some(gw, records, daily, 2)
        for owner in (f"key:{daily['id']}", f"team:{team['id']}"):
            assert await lose_budget_counters(redis_url, owner) == 2

        status, out, err = await asyncio.to_thread(llmgw, config, "limits", "rebuild")

        assert status == 0, err
        assert sorted(out.splitlines()) == sorted(
            [
                f"key:{daily['id']}  {format_usd(micros)} spent this day",
                f"team:{team['id']}  {format_usd(micros)} spent in its lifetime",
            ]
        )
        key_usage = await ok(gw, "GET", f"/admin/v1/keys/{daily['id']}/usage")
        team_usage = await ok(gw, "GET", f"/admin/v1/teams/{team['id']}/usage")
        assert key_usage["budget"]["spent_usd"] == team_usage["budget"]["spent_usd"] == micros / 1_000_000

        # Idempotent, and one key alone when named.
        status, out, err = await asyncio.to_thread(llmgw, config, "limits", "rebuild", "--key", daily["id"])
        assert (status, out) == (0, f"key:{daily['id']}  {format_usd(micros)} spent this day\n"), err
        assert (await ok(gw, "GET", f"/admin/v1/keys/{daily['id']}/usage"))["budget"][
            "spent_usd"
        ] == micros / 1e6

        status, out, err = await asyncio.to_thread(
            llmgw, config, "limits", "rebuild", "--key", "nosuchkey234"
        )
        assert (status, out) == (1, "")
        assert "not found" in err


async def test_limits_rebuild_without_redis_says_each_process_rebuilds_its_own(tmp_path: Path) -> None:
    config = cli_config(tmp_path, f"sqlite:///{tmp_path}/llmgw.db", "")

    status, out, err = await asyncio.to_thread(llmgw, config, "limits", "rebuild")

    assert (status, out) == (1, "")
    assert "cache.redis_url" in err
    assert "rebuilds them from the generation records by itself" in err
