"""Budget counters rebuilt from the generation records by the Limiter, with an injected clock and a fake
`spend`: an admission that finds a budget at 0 spent restores it in the background, once per window and
again at most once a minute while it stays at 0, never when money was spent, never delaying the request;
each scope reads its own records over its own window."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from llmgw.application.limits import Limiter
from llmgw.domain.catalog import Capability, ModelSpec, Pricing
from llmgw.domain.keys import ApiKey
from llmgw.domain.limits import Limits, Period
from llmgw.infrastructure.limits.memory import MemoryLimitStore

T0 = datetime(2023, 11, 15, 12, tzinfo=UTC).timestamp()  # a Wednesday, noon UTC
DAY_START = datetime(2023, 11, 15, tzinfo=UTC).timestamp()
HI = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
PRICED = ModelSpec(
    id="fake/priced",
    name="priced",
    capabilities=frozenset({Capability.CHAT}),
    provider="fake",
    upstream_model="priced",
    pricing=Pricing(prompt=1.0, completion=2.0),
)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSpend:
    """`GenerationStore.spend` answering `micros`, noting each call; `gate` (when set) holds every call
    until it opens, as a slow database would."""

    def __init__(self, micros: int = 0) -> None:
        self.micros = micros
        self.calls: list[tuple[float, float, dict[str, str]]] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        filters = (("key_id", key_id), ("team_id", team_id), ("model", model))
        self.calls.append((since, until, {name: value for name, value in filters if value}))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.micros


def key(**limits: Any) -> ApiKey:
    return ApiKey(public_id="abcdefgh2345", name="ci", secret_hash=b"", limits=Limits(**limits))


def limiter(spend: FakeSpend, clock: Clock, **options: Any) -> Limiter:
    return Limiter(MemoryLimitStore(), clock=clock, spend=spend, **options)


async def spent(limits: Limiter, api_key: ApiKey) -> int | None:
    (scope,) = await limits.scopes(api_key, PRICED)
    return (await limits.usage(scope)).status.spent_micros


async def test_a_budget_found_at_zero_is_restored_from_the_records_in_the_background() -> None:
    spend, clock = FakeSpend(1_234_567), Clock()
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)

    admitted = await limits.admit(api_key, PRICED, HI)
    await limits.restored()

    assert admitted is not None
    assert admitted.statuses[0].spent_micros == 0  # admitted before the restore
    assert spend.calls == [(DAY_START, DAY_START + 86_400, {"key_id": "abcdefgh2345"})]
    assert await spent(limits, api_key) == 1_234_567


async def test_a_slow_record_store_never_delays_an_admission() -> None:
    spend, clock = FakeSpend(500), Clock()
    spend.gate = asyncio.Event()
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)

    async with asyncio.timeout(1.0):
        for _ in range(3):
            assert await limits.admit(api_key, PRICED, HI) is not None
            await asyncio.sleep(0)  # the restore starts, and waits on the database
    assert len(spend.calls) == 1  # one restore under way, not one per request
    assert await spent(limits, api_key) == 0

    spend.gate.set()
    await limits.restored()
    assert await spent(limits, api_key) == 500


async def test_a_budget_that_stays_at_zero_is_restored_again_only_after_a_minute() -> None:
    spend, clock = FakeSpend(0), Clock()
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)

    for at in (0.0, 1.0, 30.0, 59.0):
        clock.now = T0 + at
        await limits.admit(api_key, PRICED, HI)
        await limits.restored()
    assert len(spend.calls) == 1

    clock.now = T0 + 60.0
    await limits.admit(api_key, PRICED, HI)
    await limits.restored()
    assert len(spend.calls) == 2


async def test_a_budget_with_money_spent_is_never_restored() -> None:
    spend, clock = FakeSpend(700), Clock()
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)
    await limits.admit(api_key, PRICED, HI)
    await limits.restored()

    for minutes in range(1, 5):
        clock.now = T0 + 60.0 * minutes
        await limits.admit(api_key, PRICED, HI)
        await limits.restored()

    assert len(spend.calls) == 1
    assert await spent(limits, api_key) == 700


async def test_a_new_period_restores_at_once_even_within_the_minute() -> None:
    spend, clock = FakeSpend(0), Clock(DAY_START + 86_400 - 10)
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)
    await limits.admit(api_key, PRICED, HI)
    await limits.restored()

    clock.now = DAY_START + 86_400 + 5
    await limits.admit(api_key, PRICED, HI)
    await limits.restored()

    assert [(since, until) for since, until, _ in spend.calls] == [
        (DAY_START, DAY_START + 86_400),
        (DAY_START + 86_400, DAY_START + 2 * 86_400),
    ]


async def test_a_counter_lost_again_after_money_was_spent_is_restored_by_the_next_request() -> None:
    spend, clock = FakeSpend(900), Clock()
    store = MemoryLimitStore()
    limits, api_key = Limiter(store, clock=clock, spend=spend), key(budget_usd=5, budget_period=Period.DAY)
    await limits.admit(api_key, PRICED, HI)
    await limits.restored()
    clock.now += 1
    await limits.admit(api_key, PRICED, HI)  # sees the 900 restored

    await store.close()  # every counter gone, as in a Redis restart
    clock.now += 1
    await limits.admit(api_key, PRICED, HI)
    await limits.restored()

    assert len(spend.calls) == 2
    assert await spent(limits, api_key) == 900


async def test_each_scope_reads_its_own_records_over_its_own_window() -> None:
    spend, clock = FakeSpend(0), Clock()
    team = Limits(budget_usd=50, budget_period=Period.MONTH)

    async def team_limits(team_id: str) -> Limits:
        return team

    limits = limiter(
        spend,
        clock,
        global_limits=Limits(budget_usd=1000, budget_period=Period.WEEK),
        team_limits=team_limits,
    )
    model = replace(PRICED, limits=Limits(soft_budget_usd=10))
    api_key = ApiKey(
        public_id="abcdefgh2345", name="ci", secret_hash=b"", team_id="team-a", limits=Limits(budget_usd=5)
    )

    await limits.admit(api_key, model, HI)
    await limits.restored()

    month = (datetime(2023, 11, 1, tzinfo=UTC).timestamp(), datetime(2023, 12, 1, tzinfo=UTC).timestamp())
    week = (datetime(2023, 11, 13, tzinfo=UTC).timestamp(), datetime(2023, 11, 20, tzinfo=UTC).timestamp())
    assert sorted(spend.calls, key=repr) == sorted(
        [
            (0.0, math.inf, {"key_id": "abcdefgh2345"}),
            (*month, {"team_id": "team-a"}),
            (0.0, math.inf, {"model": "fake/priced"}),
            (*week, {}),
        ],
        key=repr,
    )


async def test_a_scope_without_a_budget_is_never_restored() -> None:
    spend, clock = FakeSpend(100), Clock()
    limits = limiter(spend, clock)

    await limits.admit(key(rpm=60, tpm=100_000, max_parallel=2), PRICED, HI)
    await limits.restored()

    assert spend.calls == []


async def test_a_failing_record_store_is_logged_and_the_requests_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spend, clock = FakeSpend(100), Clock()
    spend.error = ConnectionError("the database is down")
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)

    with caplog.at_level(logging.ERROR, logger="llmgw.application.budget_restore"):
        assert await limits.admit(api_key, PRICED, HI) is not None
        await limits.restored()

    assert "budget of key:abcdefgh2345 not restored" in caplog.text
    assert "ConnectionError: the database is down" in caplog.text  # with its traceback
    assert await limits.admit(api_key, PRICED, HI) is not None


async def test_closing_the_limiter_cancels_a_restore_under_way() -> None:
    spend, clock = FakeSpend(100), Clock()
    spend.gate = asyncio.Event()
    limits, api_key = limiter(spend, clock), key(budget_usd=5, budget_period=Period.DAY)
    await limits.admit(api_key, PRICED, HI)

    async with asyncio.timeout(1.0):
        await limits.close()

    assert await spent(limits, api_key) == 0


async def test_a_limiter_without_records_never_restores_and_says_so_when_asked() -> None:
    limits = Limiter(MemoryLimitStore(), clock=Clock())
    api_key = key(budget_usd=5)
    await limits.admit(api_key, PRICED, HI)
    (scope,) = await limits.scopes(api_key, PRICED)

    with pytest.raises(RuntimeError, match="no generation records"):
        await limits.restore(scope)
