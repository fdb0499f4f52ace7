"""The limit arithmetic with an injected clock: request and token windows (GCRA), requests in flight,
budgets per period, all or nothing across scopes, and the errors a refused client reads."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmgw.domain.limits import (
    EMPTY_STATE,
    NO_LIMITS,
    SLACK,
    Admission,
    Demand,
    LimitReason,
    Limits,
    Period,
    Refusal,
    Scope,
    ScopeKind,
    ScopeState,
    budget_window,
    decide,
    micros_to_usd,
    settle_state,
    usd_to_micros,
)

T0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC, a Wednesday
SMALL = Demand(tokens=10, micros=0, priced=False)


def key(**limits: Any) -> Scope:
    return Scope(ScopeKind.KEY, "abcdefgh2345", Limits(**limits))


def utc(year: int, month: int, day: int, *time: int) -> float:
    """A UTC instant; `time` is (hour, minute, second), trailing zeros left out."""
    hour, minute, second = (*time, 0, 0, 0)[:3]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


class Counter:
    """One set of scopes and their states, admitted against and settled like a store would."""

    def __init__(self, *scopes: Scope) -> None:
        self.scopes = scopes
        self.states: tuple[ScopeState, ...] = tuple(EMPTY_STATE for _ in scopes)

    def admit(self, demand: Demand = SMALL, now: float = T0) -> Admission:
        admission, self.states = decide(self.scopes, self.states, demand, now)
        return admission

    def admitted(self, count: int, demand: Demand = SMALL, now: float = T0) -> int:
        return sum(self.admit(demand, now).refusal is None for _ in range(count))

    def settle(
        self, demand: Demand, actual: Demand, now: float = T0, *, reached_upstream: bool = True
    ) -> None:
        self.states = tuple(
            settle_state(scope, state, demand, actual, now, reached_upstream=reached_upstream)
            for scope, state in zip(self.scopes, self.states, strict=True)
        )

    def refusal(self, demand: Demand = SMALL, now: float = T0) -> Refusal:
        refusal = self.admit(demand, now).refusal
        assert refusal is not None
        return refusal


# Requests per minute


@pytest.mark.parametrize("rpm", [1, 7, 60, 61, 1000])
def test_a_burst_of_rpm_requests_is_admitted_and_the_next_refused(rpm: int) -> None:
    counter = Counter(key(rpm=rpm))
    assert counter.admitted(rpm) == rpm
    refusal = counter.refusal()
    assert refusal.reason is LimitReason.REQUESTS
    # less SLACK (see the domain's rules); float sums of intervals near 1.7e9 s move it by less than SLACK
    assert refusal.retry_after == pytest.approx(60 / rpm - SLACK, abs=SLACK)


def test_a_refusal_in_the_slack_millisecond_never_asks_for_a_longer_wait_than_needed() -> None:
    counter = Counter(key(rpm=60))
    counter.admitted(60)
    # Half a millisecond early: within SLACK, so admitted, and the window now ends SLACK late.
    assert counter.admit(now=T0 + 0.9995).refusal is None

    refusal = counter.refusal(now=T0 + 0.9996)

    assert refusal.retry_after <= 1.0  # Retry-After rounds up: 1, not 2
    assert counter.admit(now=T0 + 0.9996 + refusal.retry_after).refusal is None


def test_a_slot_frees_every_interval_and_retry_after_says_when() -> None:
    counter = Counter(key(rpm=60))
    counter.admitted(60)
    assert counter.refusal(now=T0 + 0.25).retry_after == pytest.approx(0.75 - SLACK)
    assert counter.admit(now=T0 + 1).refusal is None
    assert counter.admit(now=T0 + 1).refusal is not None


def test_the_window_slides_rather_than_resetting_at_the_minute() -> None:
    """A fixed minute bucket would admit 60 at second 59 and 60 more at second 61."""
    counter = Counter(key(rpm=60))
    assert counter.admitted(60, now=T0 + 59) == 60
    assert counter.admitted(60, now=T0 + 61) == 2
    assert counter.admitted(60, now=T0 + 59 + 60) == 58


def test_requests_spread_over_a_minute_are_never_refused() -> None:
    counter = Counter(key(rpm=60))
    assert all(counter.admit(now=T0 + second).refusal is None for second in range(600))


def test_the_status_counts_what_is_left_in_the_window_and_when_it_is_empty_again() -> None:
    counter = Counter(key(rpm=60))
    counter.admitted(45, now=T0)
    [status] = counter.admit(now=T0).statuses
    assert status.remaining_requests == 14
    assert status.reset_requests == pytest.approx(46)
    [later] = counter.admit(now=T0 + 30).statuses
    assert later.remaining_requests == 43
    assert later.remaining_tokens is None


# Tokens per minute


def test_tokens_are_admitted_up_to_tpm_and_retry_after_covers_the_overflow() -> None:
    counter = Counter(key(tpm=1000))
    demand = Demand(tokens=400, micros=0, priced=False)
    assert counter.admitted(2, demand) == 2
    refusal = counter.refusal(demand)
    assert refusal.reason is LimitReason.TOKENS
    assert refusal.retry_after == pytest.approx(12.0 - SLACK)  # 200 tokens over, at 1000 per minute
    assert counter.admit(demand, now=T0 + 12).refusal is None


def test_settling_more_tokens_than_estimated_pushes_the_window_forward() -> None:
    counter = Counter(key(tpm=1000))
    estimate = Demand(tokens=100, micros=0, priced=False)
    counter.admit(estimate)
    counter.settle(estimate, Demand(tokens=700, micros=0, priced=False))
    [status] = counter.admit(Demand(tokens=0, micros=0, priced=False)).statuses
    assert status.remaining_tokens == 300
    assert status.reset_tokens == pytest.approx(42.0)


def test_settling_fewer_tokens_than_estimated_gives_the_rest_back() -> None:
    counter = Counter(key(tpm=1000))
    estimate = Demand(tokens=900, micros=0, priced=False)
    counter.admit(estimate)
    counter.settle(estimate, Demand(tokens=50, micros=0, priced=False), now=T0 + 1)
    assert counter.admit(Demand(tokens=900, micros=0, priced=False), now=T0 + 1).refusal is None


def test_a_stream_overrunning_the_window_blocks_tokens_until_it_drains() -> None:
    counter = Counter(key(tpm=1000))
    estimate = Demand(tokens=100, micros=0, priced=False)
    counter.admit(estimate)
    counter.settle(estimate, Demand(tokens=3000, micros=0, priced=False), now=T0 + 5)
    refusal = counter.refusal(Demand(tokens=1, micros=0, priced=False), now=T0 + 5)
    assert refusal.retry_after == pytest.approx(180 + 0.06 - 5 - 60 - SLACK)


def test_a_request_asking_more_than_tpm_alone_is_refused_even_in_an_empty_window() -> None:
    counter = Counter(key(tpm=1000))
    refusal = counter.refusal(Demand(tokens=1001, micros=0, priced=False))
    assert refusal.reason is LimitReason.TOKENS
    assert refusal.exceeds_limit
    assert refusal.retry_after == 60
    assert "alone" in refusal.error().message
    assert counter.admit(Demand(tokens=1000, micros=0, priced=False)).refusal is None


# Requests in flight


def test_parallel_requests_are_admitted_up_to_the_limit_and_settling_frees_a_slot() -> None:
    counter = Counter(key(max_parallel=2))
    assert counter.admitted(3) == 2
    assert counter.refusal().reason is LimitReason.PARALLEL
    counter.settle(SMALL, SMALL, reached_upstream=False)
    [status] = counter.admit().statuses
    assert status.in_flight == 2


def test_settling_more_requests_than_in_flight_never_goes_below_zero() -> None:
    counter = Counter(key(max_parallel=1))
    counter.settle(SMALL, SMALL)
    assert counter.admitted(2) == 1


# Budgets


def priced(micros: int) -> Demand:
    return Demand(tokens=10, micros=micros, priced=True)


def test_a_budget_reserves_each_request_and_refuses_one_it_cannot_pay_for() -> None:
    counter = Counter(key(budget_usd=1.0, budget_period=Period.DAY))
    assert counter.admitted(2, priced(400_000)) == 2
    refusal = counter.refusal(priced(400_000), now=T0 + 3600)
    assert refusal.reason is LimitReason.BUDGET
    assert refusal.remaining_micros == 200_000
    assert refusal.retry_after == pytest.approx(23 * 3600)
    assert counter.admit(priced(200_000)).refusal is None


def test_settling_replaces_the_reservation_with_the_actual_cost() -> None:
    counter = Counter(key(budget_usd=1.0))
    counter.admit(priced(400_000))
    counter.settle(priced(400_000), priced(123_456))
    [status] = counter.admit(priced(0)).statuses
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (123_456, 0, 876_544)


def test_a_request_that_never_reached_the_upstream_costs_nothing_but_still_counts_as_a_request() -> None:
    counter = Counter(key(budget_usd=1.0, rpm=2, tpm=1000))
    demand = Demand(tokens=1000, micros=900_000, priced=True)
    counter.admit(demand)
    counter.settle(demand, demand, reached_upstream=False)
    [status] = counter.admit(Demand(tokens=0, micros=0, priced=True)).statuses
    assert (status.spent_micros, status.reserved_micros) == (0, 0)
    assert status.remaining_tokens == 1000
    assert status.remaining_requests == 0


def test_a_stream_that_cost_more_than_reserved_is_charged_in_full() -> None:
    counter = Counter(key(budget_usd=1.0))
    counter.admit(priced(100_000))
    counter.settle(priced(100_000), priced(1_300_000))
    [status] = counter.admit(priced(0)).statuses
    assert (status.spent_micros, status.remaining_micros) == (1_300_000, 0)
    assert counter.refusal(priced(1)).remaining_micros == 0


def test_unpriced_requests_are_never_refused_by_a_budget() -> None:
    counter = Counter(key(budget_usd=0.5, budget_period=Period.MONTH))
    counter.admit(priced(500_000))
    assert counter.refusal(priced(1)).reason is LimitReason.BUDGET
    assert counter.admitted(5, Demand(tokens=10_000, micros=0, priced=False)) == 5


def test_a_new_period_starts_the_budget_again() -> None:
    counter = Counter(key(budget_usd=1.0, budget_period=Period.DAY))
    midnight = T0 + 86_400
    counter.admit(priced(1_000_000), now=midnight - 1)
    assert counter.refusal(priced(1), now=midnight - 1).retry_after == pytest.approx(1)
    counter.states = tuple(EMPTY_STATE for _ in counter.scopes)  # the store reads the new window: empty
    assert budget_window(Period.DAY, midnight)[0] != budget_window(Period.DAY, midnight - 1)[0]
    assert counter.admit(priced(1_000_000), now=midnight).refusal is None


def test_a_lifetime_budget_never_renews_and_its_error_has_no_retry_after() -> None:
    counter = Counter(key(budget_usd=0.01))
    counter.admit(priced(10_000))
    refusal = counter.refusal(priced(1), now=T0 + 400 * 86_400)
    assert refusal.retry_after == math.inf
    error = refusal.error()
    assert error.retry_after is None
    assert "does not renew" in error.message
    assert budget_window(None, T0) == budget_window(None, T0 + 1e9) == ("lifetime", math.inf)


def test_the_soft_budget_only_flags_and_never_refuses() -> None:
    counter = Counter(key(soft_budget_usd=0.5))
    first = counter.admit(priced(400_000))
    assert first.refusal is None
    assert not first.statuses[0].soft_exceeded
    second = counter.admit(priced(400_000))
    assert second.refusal is None
    assert second.statuses[0].soft_exceeded
    assert second.statuses[0].remaining_micros is None


# Periods


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        (Period.DAY, utc(2024, 2, 28, 23, 59, 59), utc(2024, 2, 28), utc(2024, 2, 29)),
        (Period.DAY, utc(2024, 2, 29, 12), utc(2024, 2, 29), utc(2024, 3, 1)),
        (Period.DAY, utc(2023, 12, 31, 23), utc(2023, 12, 31), utc(2024, 1, 1)),
        (Period.WEEK, utc(2023, 11, 15, 9), utc(2023, 11, 13), utc(2023, 11, 20)),
        (Period.WEEK, utc(2023, 11, 13), utc(2023, 11, 13), utc(2023, 11, 20)),
        (Period.WEEK, utc(2023, 11, 19, 23, 59, 59), utc(2023, 11, 13), utc(2023, 11, 20)),
        (Period.WEEK, utc(2024, 12, 31), utc(2024, 12, 30), utc(2025, 1, 6)),
        (Period.MONTH, utc(2024, 1, 31, 23, 59, 59), utc(2024, 1, 1), utc(2024, 2, 1)),
        (Period.MONTH, utc(2024, 2, 29, 23), utc(2024, 2, 1), utc(2024, 3, 1)),
        (Period.MONTH, utc(2023, 2, 28, 23), utc(2023, 2, 1), utc(2023, 3, 1)),
        (Period.MONTH, utc(2100, 2, 28), utc(2100, 2, 1), utc(2100, 3, 1)),
        (Period.MONTH, utc(2023, 12, 31, 23, 59, 59), utc(2023, 12, 1), utc(2024, 1, 1)),
        (Period.MONTH, utc(2024, 4, 30, 12), utc(2024, 4, 1), utc(2024, 5, 1)),
    ],
)
def test_periods_are_utc_calendar_days_weeks_from_monday_and_months(
    period: Period, now: float, start: float, end: float
) -> None:
    assert period.bounds(now) == (start, end)
    assert period.bounds(end) == (end, period.bounds(end)[1])


def test_period_bounds_agree_with_the_calendar_for_every_day_of_two_centuries() -> None:
    day = datetime(1970, 1, 1, 13, tzinfo=UTC)
    while day.year < 2170:
        midnight = day.replace(hour=0)
        monday = midnight - timedelta(days=day.weekday())
        first = midnight.replace(day=1)
        following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        now = day.timestamp()
        assert Period.DAY.bounds(now) == (midnight.timestamp(), (midnight + timedelta(days=1)).timestamp())
        assert Period.WEEK.bounds(now) == (monday.timestamp(), (monday + timedelta(days=7)).timestamp())
        assert Period.MONTH.bounds(now) == (first.timestamp(), following.timestamp())
        day += timedelta(days=1)


# All or nothing


def test_a_refusal_in_one_scope_reserves_nothing_in_the_others() -> None:
    limited = Scope(ScopeKind.GLOBAL, "", Limits(rpm=1))
    own = key(rpm=10, tpm=1000, max_parallel=5, budget_usd=1.0)
    counter = Counter(own, limited)
    demand = Demand(tokens=100, micros=100_000, priced=True)
    assert counter.admit(demand).refusal is None
    before = counter.states
    admission = counter.admit(demand)
    assert admission.refusal is not None
    assert admission.refusal.scope == limited
    assert counter.states == before
    [key_status, _] = admission.statuses
    assert (key_status.remaining_requests, key_status.in_flight, key_status.reserved_micros) == (
        9,
        1,
        100_000,
    )


def test_an_admission_reserves_in_every_scope() -> None:
    team = Scope(ScopeKind.TEAM, "research", Limits(rpm=100, budget_usd=10.0))
    counter = Counter(key(rpm=10), team, Scope(ScopeKind.MODEL, "gpt-4o", NO_LIMITS))
    admission = counter.admit(priced(5))
    assert admission.refusal is None
    assert [status.remaining_requests for status in admission.statuses] == [9, 99, None]
    assert admission.statuses[1].reserved_micros == 5


def test_scopes_without_limits_are_always_admitted() -> None:
    counter = Counter(Scope(ScopeKind.GLOBAL, "", NO_LIMITS))
    assert NO_LIMITS.empty
    assert not Limits(rpm=1).empty
    assert counter.admitted(1000, priced(10**9)) == 1000


# Errors


def test_scope_names_tell_the_kind_and_the_id() -> None:
    assert key().name == "key:abcdefgh2345"
    assert Scope(ScopeKind.TEAM, "t1", NO_LIMITS).name == "team:t1"
    assert Scope(ScopeKind.MODEL, "gpt-4o", NO_LIMITS).name == "model:gpt-4o"
    assert Scope(ScopeKind.GLOBAL, "", NO_LIMITS).name == "global"


def test_a_rate_refusal_is_rate_limit_exceeded_with_when_to_retry() -> None:
    error = Refusal(key(rpm=60), LimitReason.REQUESTS, 1.5).error()
    assert error.code == "rate_limit_exceeded"
    assert error.retry_after == 1.5
    assert error.message == "Rate limit exceeded: this key allows 60 requests per minute; retry in 2 s."
    tokens = Refusal(Scope(ScopeKind.TEAM, "t", Limits(tpm=5000)), LimitReason.TOKENS, 30).error()
    assert (
        tokens.message == "Rate limit exceeded: this key's team allows 5000 tokens per minute; retry in 30 s."
    )
    parallel = Refusal(Scope(ScopeKind.GLOBAL, "", Limits(max_parallel=8)), LimitReason.PARALLEL, 1).error()
    assert parallel.code == "rate_limit_exceeded"
    assert parallel.message == "Too many requests in flight: the gateway allows 8 at once."


def test_a_budget_refusal_is_budget_exceeded_and_says_what_is_left() -> None:
    scope = Scope(ScopeKind.MODEL, "gpt-4o", Limits(budget_usd=5, budget_period=Period.DAY))
    error = Refusal(scope, LimitReason.BUDGET, 3 * 3600, remaining_micros=12_345).error()
    assert error.code == "budget_exceeded"
    assert error.retry_after == 3 * 3600
    assert error.message == (
        "Budget exceeded: model 'gpt-4o' has a budget of $5.00 per day with $0.012345 left, "
        "less than this request may cost; it renews in 3 h."
    )


def test_a_refusal_message_never_holds_the_key_id() -> None:
    for reason in LimitReason:
        scope = key(rpm=1, tpm=1, max_parallel=1, budget_usd=1.0)
        assert "abcdefgh2345" not in Refusal(scope, reason, 1.0, remaining_micros=0).error().message


# Money


@pytest.mark.parametrize(
    ("usd", "micros"),
    [
        (5, 5_000_000),
        (0.1, 100_000),
        (0.0000005, 1),
        (0.0000004999, 0),
        (1.0000015, 1_000_002),
        (0.3, 300_000),
    ],
)
def test_dollars_round_half_up_to_the_micro_dollar(usd: float, micros: int) -> None:
    assert usd_to_micros(usd) == micros


def test_micros_convert_back_to_dollars() -> None:
    assert micros_to_usd(1_234_567) == 1.234567
