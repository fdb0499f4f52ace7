"""Every limit store admits, reserves and settles by the same rules, through the `LimitStore` port: in
this process's memory and in Redis (`LLMGW_TEST_REDIS_URL`, a fresh key prefix per test)."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from llmgw.application.ports import LimitStore
from llmgw.domain.limits import NO_LIMITS, Demand, LimitReason, Limits, Period, Scope, ScopeKind
from llmgw.infrastructure.limits.memory import MemoryLimitStore

REDIS_URL_VARIABLE = "LLMGW_TEST_REDIS_URL"
SMALL = Demand(tokens=10, micros=0, priced=False)
GLOBAL_OPEN = Scope(ScopeKind.GLOBAL, "", NO_LIMITS)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        memory = MemoryLimitStore()
        yield memory
        await memory.close()
        return
    url = os.environ.get(REDIS_URL_VARIABLE)
    if not url:
        pytest.skip(f"{REDIS_URL_VARIABLE} is not set: the Redis limit store tests need a server")
    from llmgw.infrastructure.limits.redis import RedisLimitStore

    prefix = f"llmgw:test:{secrets.token_hex(4)}:"
    shared = RedisLimitStore(url, prefix=prefix, use_caller_clock=True)
    try:
        yield shared
    finally:
        await shared.close()
        client = redis.Redis.from_url(url)
        try:
            keys = [name async for name in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
def t0() -> float:
    """The real time, whole seconds: stores that expire keys by the clock see sensible times."""
    return float(int(time.time()))


def key(public_id: str = "abcdefgh2345", **limits: Any) -> Scope:
    return Scope(ScopeKind.KEY, public_id, Limits(**limits))


def priced(micros: int, tokens: int = 10) -> Demand:
    return Demand(tokens=tokens, micros=micros, priced=True)


def near(seconds: float) -> Any:
    return pytest.approx(seconds, abs=0.01)


async def admitted(store: LimitStore, scopes: list[Scope], count: int, demand: Demand, now: float) -> int:
    results = [await store.admit(scopes, demand, now) for _ in range(count)]
    return sum(result.refusal is None for result in results)


async def test_a_burst_of_rpm_requests_is_admitted_and_the_next_refused_with_when_to_retry(
    store: LimitStore, t0: float
) -> None:
    scopes = [key(rpm=60)]
    assert await admitted(store, scopes, 60, SMALL, t0) == 60
    refused = await store.admit(scopes, SMALL, t0 + 0.25)
    assert refused.refusal is not None
    assert refused.refusal.reason is LimitReason.REQUESTS
    assert refused.refusal.retry_after == near(0.75)
    assert refused.refusal.error().code == "rate_limit_exceeded"
    assert (await store.admit(scopes, SMALL, t0 + 1)).refusal is None


async def test_the_request_window_slides_rather_than_resetting_at_the_minute(
    store: LimitStore, t0: float
) -> None:
    scopes = [key(rpm=60)]
    assert await admitted(store, scopes, 60, SMALL, t0 + 59) == 60
    assert await admitted(store, scopes, 60, SMALL, t0 + 61) == 2


async def test_two_hundred_concurrent_requests_against_60_rpm_admit_exactly_60(
    store: LimitStore, t0: float
) -> None:
    scopes = [key(rpm=60), GLOBAL_OPEN]
    results = await asyncio.gather(*(store.admit(scopes, SMALL, t0) for _ in range(200)))
    assert sum(result.refusal is None for result in results) == 60


async def test_two_hundred_concurrent_priced_requests_never_reserve_past_the_budget(
    store: LimitStore, t0: float
) -> None:
    scopes = [key(budget_usd=0.5, budget_period=Period.DAY)]
    results = await asyncio.gather(*(store.admit(scopes, priced(10_000), t0) for _ in range(200)))
    assert sum(result.refusal is None for result in results) == 50
    status = await store.status(scopes[0], t0)
    assert (status.reserved_micros, status.remaining_micros) == (500_000, 0)


async def test_tokens_are_admitted_up_to_tpm_and_retry_after_covers_the_overflow(
    store: LimitStore, t0: float
) -> None:
    scopes = [key(tpm=1000)]
    demand = Demand(tokens=400, micros=0, priced=False)
    assert await admitted(store, scopes, 2, demand, t0) == 2
    refused = await store.admit(scopes, demand, t0)
    assert refused.refusal is not None
    assert refused.refusal.reason is LimitReason.TOKENS
    assert refused.refusal.retry_after == near(12.0)
    assert (await store.admit(scopes, demand, t0 + 12)).refusal is None


async def test_a_request_asking_more_than_tpm_alone_is_refused_in_an_empty_window(
    store: LimitStore, t0: float
) -> None:
    refused = await store.admit([key(tpm=1000)], Demand(tokens=1001, micros=0, priced=False), t0)
    assert refused.refusal is not None
    assert refused.refusal.exceeds_limit
    assert refused.refusal.retry_after == near(60)
    assert "alone" in refused.refusal.error().message


async def test_settling_a_stream_that_used_more_than_estimated_charges_what_it_used(
    store: LimitStore, t0: float
) -> None:
    scope = key(tpm=1000, budget_usd=1.0)
    estimate = priced(100_000, tokens=100)
    assert (await store.admit([scope], estimate, t0)).refusal is None
    await store.settle([scope], estimate, priced(250_000, tokens=700), t0 + 2, reached_upstream=True)
    status = await store.status(scope, t0 + 2)
    assert status.remaining_tokens == 333  # 700 tokens at 1000 per minute, 2 s after a window 42 s deep
    assert status.reset_tokens == near(40)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (250_000, 0, 750_000)


async def test_settling_fewer_tokens_than_estimated_gives_the_rest_back(store: LimitStore, t0: float) -> None:
    scope = key(tpm=1000)
    estimate = Demand(tokens=900, micros=0, priced=False)
    await store.admit([scope], estimate, t0)
    await store.settle(
        [scope], estimate, Demand(tokens=50, micros=0, priced=False), t0 + 1, reached_upstream=True
    )
    assert (await store.admit([scope], estimate, t0 + 1)).refusal is None


async def test_a_request_that_never_reached_the_upstream_gives_its_reservation_back_but_counts(
    store: LimitStore, t0: float
) -> None:
    scope = key(rpm=2, tpm=1000, budget_usd=1.0)
    demand = priced(900_000, tokens=1000)
    assert (await store.admit([scope], demand, t0)).refusal is None
    await store.settle([scope], demand, demand, t0, reached_upstream=False)
    status = await store.status(scope, t0)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (0, 0, 1_000_000)
    assert status.remaining_tokens == 1000
    assert status.remaining_requests == 1


async def test_requests_in_flight_are_bounded_and_settling_frees_a_slot(store: LimitStore, t0: float) -> None:
    scopes = [key(max_parallel=2)]
    assert await admitted(store, scopes, 3, SMALL, t0) == 2
    refused = await store.admit(scopes, SMALL, t0)
    assert refused.refusal is not None
    assert refused.refusal.reason is LimitReason.PARALLEL
    await store.settle(scopes, SMALL, SMALL, t0, reached_upstream=True)
    assert (await store.status(scopes[0], t0)).in_flight == 1
    assert (await store.admit(scopes, SMALL, t0)).refusal is None


async def test_a_budget_refuses_a_request_it_cannot_pay_for_and_says_what_is_left(
    store: LimitStore, t0: float
) -> None:
    scope = key(budget_usd=1.0, budget_period=Period.DAY)
    assert await admitted(store, [scope], 2, priced(400_000), t0) == 2
    refused = await store.admit([scope], priced(400_000), t0)
    assert refused.refusal is not None
    assert refused.refusal.reason is LimitReason.BUDGET
    assert refused.refusal.remaining_micros == 200_000
    assert refused.refusal.retry_after == near(Period.DAY.bounds(t0)[1] - t0)
    error = refused.refusal.error()
    assert error.code == "budget_exceeded"
    assert "$0.20 left" in error.message
    assert (await store.admit([scope], priced(200_000), t0)).refusal is None


async def test_unpriced_requests_are_never_refused_by_a_budget(store: LimitStore, t0: float) -> None:
    scopes = [key(budget_usd=0.5, budget_period=Period.MONTH)]
    await store.admit(scopes, priced(500_000), t0)
    assert (await store.admit(scopes, priced(1), t0)).refusal is not None
    assert await admitted(store, scopes, 5, Demand(tokens=10_000, micros=0, priced=False), t0) == 5


async def test_a_new_period_starts_the_budget_again(store: LimitStore, t0: float) -> None:
    scopes = [key(budget_usd=1.0, budget_period=Period.DAY)]
    midnight = Period.DAY.bounds(t0)[1]
    assert (await store.admit(scopes, priced(1_000_000), midnight - 1)).refusal is None
    refused = await store.admit(scopes, priced(1), midnight - 1)
    assert refused.refusal is not None
    assert refused.refusal.retry_after == near(1)
    assert (await store.admit(scopes, priced(1_000_000), midnight)).refusal is None


async def test_a_lifetime_budget_is_never_renewed(store: LimitStore, t0: float) -> None:
    scopes = [key(budget_usd=0.01)]
    await store.admit(scopes, priced(10_000), t0)
    refused = await store.admit(scopes, priced(1), t0 + 40 * 86_400)
    assert refused.refusal is not None
    assert refused.refusal.retry_after == math.inf
    assert refused.refusal.error().retry_after is None


async def test_the_soft_budget_flags_without_refusing(store: LimitStore, t0: float) -> None:
    scopes = [key(soft_budget_usd=0.5, budget_period=Period.WEEK)]
    first = await store.admit(scopes, priced(400_000), t0)
    second = await store.admit(scopes, priced(400_000), t0)
    assert (first.refusal, second.refusal) == (None, None)
    assert (first.statuses[0].soft_exceeded, second.statuses[0].soft_exceeded) == (False, True)


async def test_a_refusal_in_the_global_scope_reserves_nothing_in_the_key_scope(
    store: LimitStore, t0: float
) -> None:
    own = key(rpm=10, tpm=1000, max_parallel=5, budget_usd=1.0)
    gateway = Scope(ScopeKind.GLOBAL, "", Limits(rpm=1))
    demand = priced(100_000, tokens=100)
    assert (await store.admit([own, gateway], demand, t0)).refusal is None
    refused = await store.admit([own, gateway], demand, t0)
    assert refused.refusal is not None
    assert refused.refusal.scope == gateway
    status = await store.status(own, t0)
    assert (status.remaining_requests, status.remaining_tokens, status.in_flight) == (9, 900, 1)
    assert (status.reserved_micros, status.remaining_micros) == (100_000, 900_000)
    assert refused.statuses[0] == status


async def test_an_admission_reports_every_scope_after_reserving(store: LimitStore, t0: float) -> None:
    team = Scope(ScopeKind.TEAM, "research", Limits(rpm=100, tpm=10_000, budget_usd=10.0))
    admission = await store.admit([key(rpm=10), team, GLOBAL_OPEN], priced(5, tokens=100), t0)
    assert admission.refusal is None
    own, shared, gateway = admission.statuses
    assert (own.scope.kind, shared.scope.kind, gateway.scope.kind) == (
        ScopeKind.KEY,
        ScopeKind.TEAM,
        ScopeKind.GLOBAL,
    )
    assert (own.remaining_requests, own.remaining_tokens, own.spent_micros) == (9, None, None)
    assert (shared.remaining_requests, shared.remaining_tokens, shared.reserved_micros) == (99, 9900, 5)
    assert shared.reset_requests == near(0.6)
    assert gateway.remaining_requests is None


async def test_the_status_of_an_unused_scope_is_its_full_limits(store: LimitStore, t0: float) -> None:
    status = await store.status(key(rpm=60, tpm=1000, max_parallel=3, budget_usd=2.5), t0)
    assert (status.remaining_requests, status.reset_requests) == (60, 0)
    assert (status.remaining_tokens, status.reset_tokens) == (1000, 0)
    assert status.in_flight == 0
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (0, 0, 2_500_000)
    assert not status.soft_exceeded


async def test_scopes_count_apart(store: LimitStore, t0: float) -> None:
    assert await admitted(store, [key("aaaaaaaaaaaa", rpm=1)], 2, SMALL, t0) == 1
    assert await admitted(store, [key("bbbbbbbbbbbb", rpm=1)], 2, SMALL, t0) == 1
    assert await admitted(store, [Scope(ScopeKind.TEAM, "aaaaaaaaaaaa", Limits(rpm=1))], 2, SMALL, t0) == 1


async def test_the_store_answers_a_ping(store: LimitStore) -> None:
    assert await store.ping()


async def test_restoring_a_missing_budget_counter_charges_what_the_records_say(
    store: LimitStore, t0: float
) -> None:
    scope = key(budget_usd=1.0, budget_period=Period.DAY)
    await store.restore(scope, t0, 600_000)

    status = await store.status(scope, t0)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (600_000, 0, 400_000)
    refused = await store.admit([scope], priced(400_001), t0)
    assert refused.refusal is not None
    assert refused.refusal.remaining_micros == 400_000
    assert (await store.admit([scope], priced(400_000), t0)).refusal is None


async def test_restoring_never_lowers_a_counter_and_is_idempotent(store: LimitStore, t0: float) -> None:
    scope = key(budget_usd=1.0, budget_period=Period.DAY)
    await store.admit([scope], priced(300_000), t0)
    await store.settle([scope], priced(300_000), priced(250_000), t0, reached_upstream=True)
    await store.admit([scope], priced(100_000), t0)  # in flight

    await store.restore(scope, t0, 200_000)
    assert (
        (await store.status(scope, t0)).spent_micros,
        (await store.status(scope, t0)).reserved_micros,
    ) == (
        250_000,
        100_000,
    )
    for _ in range(2):
        await store.restore(scope, t0, 700_000)
    status = await store.status(scope, t0)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (
        700_000,
        100_000,
        200_000,
    )


async def test_restores_from_several_processes_at_once_leave_the_largest(
    store: LimitStore, t0: float
) -> None:
    scope = key(budget_usd=10.0, budget_period=Period.MONTH)
    await asyncio.gather(*(store.restore(scope, t0, micros) for micros in (5, 1_000_005, 999_999, 0, 42)))
    assert (await store.status(scope, t0)).spent_micros == 1_000_005


async def test_a_restore_fills_the_window_its_time_names_and_no_other(store: LimitStore, t0: float) -> None:
    scope = key(budget_usd=1.0, budget_period=Period.DAY)
    start, end = Period.DAY.bounds(t0)
    await store.restore(scope, start, 123_456)

    assert (await store.status(scope, end - 1)).spent_micros == 123_456
    assert (await store.status(scope, end)).spent_micros == 0
    assert (
        await store.status(key("otherkey2345", budget_usd=1.0, budget_period=Period.DAY), t0)
    ).spent_micros == 0


async def test_a_restored_lifetime_budget_and_soft_budget_count_like_any_other(
    store: LimitStore, t0: float
) -> None:
    lifetime = key(budget_usd=0.01)
    await store.restore(lifetime, t0, 10_000)
    refused = await store.admit([lifetime], priced(1), t0 + 400 * 86_400)
    assert refused.refusal is not None
    assert refused.refusal.remaining_micros == 0

    soft = Scope(ScopeKind.TEAM, "research", Limits(soft_budget_usd=0.5, budget_period=Period.WEEK))
    await store.restore(soft, t0, 500_000)
    assert (await store.admit([soft], priced(1), t0)).statuses[0].soft_exceeded


async def test_restoring_a_scope_without_a_budget_changes_nothing(store: LimitStore, t0: float) -> None:
    scope = key(rpm=60)
    await store.restore(scope, t0, 1_000)
    status = await store.status(scope, t0)
    assert (status.spent_micros, status.remaining_requests) == (None, 60)
