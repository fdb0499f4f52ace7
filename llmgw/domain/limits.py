"""Limits and budgets (rpm, tpm, requests in flight, USD per period) and the pure arithmetic that admits a
request against them. The stores keep the state; the Redis Lua script mirrors these functions line by line.

Rules (times are Unix seconds, `now` always passed in; money is integer micro-USD):

- requests (rpm): GCRA over WINDOW = 60 s. State `tat` (absent: now). interval = 60 / rpm.
  t = max(tat, now); admitted iff t + interval - now <= WINDOW + SLACK, then tat = t + interval; refused:
  retry_after = max(0, t + interval - now - WINDOW - SLACK) (a retry that late passes).
  remaining = clamp(floor((WINDOW + SLACK - (t - now)) / interval), 0, rpm); reset = max(0, tat - now). SLACK (1 ms) absorbs float rounding (tat near 1.7e9 s
  holds ~0.2 us; Lua's tostring keeps 14 digits, 0.1 ms), so the rpm-th request of a burst always passes.
- tokens (tpm): the same GCRA with cost = tokens * 60 / tpm. tokens > tpm never passes: refused with
  retry_after 60 and `exceeds_limit`. Settle: tat = max(tat, now) + (actual - demand) * 60 / tpm.
- parallel: `in_flight`; admitted iff in_flight < max_parallel, then in_flight + 1; settle: max(0, - 1).
- budget (tracked when budget_usd or soft_budget_usd is set): `spent`, `reserved` per window (`window_id`:
  the period's start, "lifetime" without a period). left = max(0, budget - spent - reserved); refused iff
  demand.micros > 0 and demand.micros > left (retry_after: the period's end - now, inf for lifetime);
  admitted: reserved += demand.micros. Settle: reserved = max(0, reserved - demand.micros),
  spent += actual.micros. soft_exceeded iff spent + reserved > soft budget.
- never reached the upstream: settle with actual = 0 tokens and 0 micros (the rpm slot stays used).
- all or nothing: every scope in order, each checked requests, tokens, parallel, budget; the first
  failure is the refusal and nothing is reserved anywhere; otherwise every scope reserves.
- periods in UTC, integer days (Hinnant's civil calendar, so Lua can do the same): day = now - now % 86400;
  week starts Monday (1970-01-05 = 345600 s); month = the 1st, from the civil date of floor(now / 86400).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from llmgw.domain.errors import RateLimited

MICROS_PER_USD = 1_000_000
WINDOW = 60.0
SLACK = 0.001
DAY = 86_400
WEEK = 7 * DAY
FIRST_MONDAY = 4 * DAY
LIFETIME = "lifetime"


def usd_to_micros(usd: float) -> int:
    """Round half up to the micro-dollar (from the float's shortest repr, so 0.0000005 is 1, not 0)."""
    return int(Decimal(repr(usd)).scaleb(6).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micros_to_usd(micros: int) -> float:
    return micros / MICROS_PER_USD


def format_usd(micros: int) -> str:
    """$5.00, $0.012345: cents when exact, else every micro-dollar."""
    if micros % 10_000 == 0:
        return f"${micros / MICROS_PER_USD:.2f}"
    return f"${micros / MICROS_PER_USD:.6f}".rstrip("0")


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day counted from 1970-01-01 (Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if month <= 2 else 0), month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    year -= 1 if month <= 2 else 0
    era = year // 400
    yoe = year - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


class Period(enum.StrEnum):
    """A budget's period; None on Limits means lifetime."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    def bounds(self, now: float) -> tuple[float, float]:
        """[start, end) in UTC: midnight; Monday 00:00; the 1st 00:00."""
        second = math.floor(now)
        if self is Period.DAY:
            start = second - second % DAY
            return float(start), float(start + DAY)
        if self is Period.WEEK:
            start = second - (second - FIRST_MONDAY) % WEEK
            return float(start), float(start + WEEK)
        year, month, _ = civil_from_days(second // DAY)
        following = (year + 1, 1) if month == 12 else (year, month + 1)
        return float(days_from_civil(year, month, 1) * DAY), float(days_from_civil(*following, 1) * DAY)


def budget_window(period: Period | None, now: float) -> tuple[str, float]:
    """The window's id (its start in whole seconds, or "lifetime") and its end (inf for lifetime)."""
    if period is None:
        return LIFETIME, math.inf
    start, end = period.bounds(now)
    return str(int(start)), end


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None
    soft_budget_usd: float | None = None

    @property
    def empty(self) -> bool:
        return self is NO_LIMITS or self == NO_LIMITS

    @property
    def tracks_budget(self) -> bool:
        return self.budget_usd is not None or self.soft_budget_usd is not None


NO_LIMITS = Limits()


class ScopeKind(enum.StrEnum):
    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    id: str
    limits: Limits

    @property
    def name(self) -> str:
        return "global" if self.kind is ScopeKind.GLOBAL else f"{self.kind}:{self.id}"

    @property
    def owner(self) -> str:
        """Who the limit belongs to, for messages: never an id that could be secret."""
        return {
            ScopeKind.KEY: "this key",
            ScopeKind.TEAM: "this key's team",
            ScopeKind.MODEL: f"model {self.id!r}",
            ScopeKind.GLOBAL: "the gateway",
        }[self.kind]


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request asks of every scope: tokens (prompt estimate + max_tokens) and their price."""

    tokens: int
    micros: int
    priced: bool


NOTHING = Demand(0, 0, priced=False)


class LimitReason(enum.StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    PARALLEL = "parallel"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: Scope
    reason: LimitReason
    retry_after: float  # math.inf: a lifetime budget, never renewed
    remaining_micros: int | None = None  # budget refusals: what is left
    exceeds_limit: bool = False  # tokens: the request alone is above tpm, waiting will not help

    def error(self) -> RateLimited:
        retry = None if math.isinf(self.retry_after) else self.retry_after
        code = "budget_exceeded" if self.reason is LimitReason.BUDGET else "rate_limit_exceeded"
        return RateLimited(
            self._message(retry), retry_after=retry, code=code, scope=str(self.scope.kind), reason=self.reason
        )

    def _message(self, retry: float | None) -> str:
        limits, owner = self.scope.limits, self.scope.owner
        if self.reason is LimitReason.BUDGET:
            period = f" per {limits.budget_period}" if limits.budget_period else ""
            budget = format_usd(usd_to_micros(limits.budget_usd or 0.0))
            left = format_usd(self.remaining_micros or 0)
            renews = "it does not renew" if retry is None else f"it renews in {_duration(retry)}"
            return (
                f"Budget exceeded: {owner} has a budget of {budget}{period} with {left} left, "
                f"less than this request may cost; {renews}."
            )
        if self.exceeds_limit:
            return (
                f"This request alone asks for more than the {limits.tpm} tokens per minute {owner} allows: "
                "lower max_tokens or shorten the prompt."
            )
        if self.reason is LimitReason.PARALLEL:
            return f"Too many requests in flight: {owner} allows {limits.max_parallel} at once."
        amount = f"{limits.rpm} requests" if self.reason is LimitReason.REQUESTS else f"{limits.tpm} tokens"
        return f"Rate limit exceeded: {owner} allows {amount} per minute; retry in {_duration(retry or 0.0)}."


def _duration(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{math.ceil(whole / 60)} min"
    return f"{math.ceil(whole / 3600)} h"


@dataclass(frozen=True, slots=True)
class ScopeStatus:
    scope: Scope
    remaining_requests: int | None = None
    reset_requests: float | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    in_flight: int | None = None
    spent_micros: int | None = None
    reserved_micros: int | None = None
    remaining_micros: int | None = None
    soft_exceeded: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    refusal: Refusal | None
    statuses: tuple[ScopeStatus, ...]


@dataclass(frozen=True, slots=True)
class ScopeState:
    """What a store holds for one scope (budget: the current window's counters)."""

    requests_tat: float | None = None
    tokens_tat: float | None = None
    in_flight: int = 0
    spent_micros: int = 0
    reserved_micros: int = 0


EMPTY_STATE = ScopeState()


class Gcra(NamedTuple):
    admitted: bool
    tat: float  # the new tat when admitted, else unchanged
    retry_after: float


def gcra(tat: float | None, cost: float, now: float) -> Gcra:
    t = now if tat is None else max(tat, now)
    over = t + cost - now - WINDOW
    if over <= SLACK:
        return Gcra(admitted=True, tat=t + cost, retry_after=0.0)
    # Admission allows SLACK past the window, so the wait ends SLACK before `over` does.
    return Gcra(admitted=False, tat=t, retry_after=max(0.0, over - SLACK))


def gcra_remaining(tat: float | None, cost: float, capacity: int, now: float) -> int:
    """How many more of `cost` fit now."""
    t = now if tat is None else max(tat, now)
    return min(capacity, max(0, math.floor((WINDOW + SLACK - (t - now)) / cost)))


def gcra_reset(tat: float | None, now: float) -> float:
    return 0.0 if tat is None else max(0.0, tat - now)


def token_cost(tokens: int, tpm: int) -> float:
    return tokens * WINDOW / tpm


def check(scope: Scope, state: ScopeState, demand: Demand, now: float) -> Refusal | None:
    limits = scope.limits
    if limits.rpm is not None:
        step = gcra(state.requests_tat, WINDOW / limits.rpm, now)
        if not step.admitted:
            return Refusal(scope, LimitReason.REQUESTS, step.retry_after)
    if limits.tpm is not None:
        if demand.tokens > limits.tpm:
            return Refusal(scope, LimitReason.TOKENS, WINDOW, exceeds_limit=True)
        step = gcra(state.tokens_tat, token_cost(demand.tokens, limits.tpm), now)
        if not step.admitted:
            return Refusal(scope, LimitReason.TOKENS, step.retry_after)
    if limits.max_parallel is not None and state.in_flight >= limits.max_parallel:
        # Nothing tells when a slot frees; a second is a polite guess.
        return Refusal(scope, LimitReason.PARALLEL, 1.0)
    if limits.budget_usd is not None and demand.micros > 0:
        left = budget_left(limits, state)
        if demand.micros > left:
            _, end = budget_window(limits.budget_period, now)
            return Refusal(scope, LimitReason.BUDGET, end - now, remaining_micros=left)
    return None


def budget_left(limits: Limits, state: ScopeState) -> int:
    budget = usd_to_micros(limits.budget_usd or 0.0)
    return max(0, budget - state.spent_micros - state.reserved_micros)


def reserve(scope: Scope, state: ScopeState, demand: Demand, now: float) -> ScopeState:
    """The state after admitting `demand` (call only once `check` passed in every scope)."""
    limits = scope.limits
    requests_tat, tokens_tat, in_flight = state.requests_tat, state.tokens_tat, state.in_flight
    if limits.rpm is not None:
        requests_tat = gcra(requests_tat, WINDOW / limits.rpm, now).tat
    if limits.tpm is not None:
        tokens_tat = gcra(tokens_tat, token_cost(demand.tokens, limits.tpm), now).tat
    if limits.max_parallel is not None:
        in_flight += 1
    reserved = state.reserved_micros + (demand.micros if limits.tracks_budget else 0)
    return ScopeState(requests_tat, tokens_tat, in_flight, state.spent_micros, reserved)


def settle_state(
    scope: Scope, state: ScopeState, demand: Demand, actual: Demand, now: float, *, reached_upstream: bool
) -> ScopeState:
    """The state once the request ended: `actual` replaces `demand`; NOTHING when it never reached upstream."""
    limits = scope.limits
    if not reached_upstream:
        actual = NOTHING
    tokens_tat = state.tokens_tat
    if limits.tpm is not None:
        base = now if tokens_tat is None else max(tokens_tat, now)
        tokens_tat = base + token_cost(actual.tokens - demand.tokens, limits.tpm)
    in_flight = max(0, state.in_flight - 1) if limits.max_parallel is not None else state.in_flight
    spent, reserved = state.spent_micros, state.reserved_micros
    if limits.tracks_budget:
        reserved = max(0, reserved - demand.micros)
        spent += actual.micros
    return replace(
        state, tokens_tat=tokens_tat, in_flight=in_flight, spent_micros=spent, reserved_micros=reserved
    )


def status_of(scope: Scope, state: ScopeState, now: float) -> ScopeStatus:
    limits = scope.limits
    status = ScopeStatus(scope)
    if limits.rpm is not None:
        status = replace(
            status,
            remaining_requests=gcra_remaining(state.requests_tat, WINDOW / limits.rpm, limits.rpm, now),
            reset_requests=gcra_reset(state.requests_tat, now),
        )
    if limits.tpm is not None:
        status = replace(
            status,
            remaining_tokens=gcra_remaining(state.tokens_tat, WINDOW / limits.tpm, limits.tpm, now),
            reset_tokens=gcra_reset(state.tokens_tat, now),
        )
    if limits.max_parallel is not None:
        status = replace(status, in_flight=state.in_flight)
    if limits.tracks_budget:
        used = state.spent_micros + state.reserved_micros
        soft = limits.soft_budget_usd
        status = replace(
            status,
            spent_micros=state.spent_micros,
            reserved_micros=state.reserved_micros,
            remaining_micros=None if limits.budget_usd is None else budget_left(limits, state),
            soft_exceeded=soft is not None and used > usd_to_micros(soft),
        )
    return status


def decide(
    scopes: tuple[Scope, ...], states: tuple[ScopeState, ...], demand: Demand, now: float
) -> tuple[Admission, tuple[ScopeState, ...]]:
    """All or nothing: the admission and every scope's state after it (unchanged when refused)."""
    for scope, state in zip(scopes, states, strict=True):
        refusal = check(scope, state, demand, now)
        if refusal is not None:
            statuses = tuple(status_of(s, st, now) for s, st in zip(scopes, states, strict=True))
            return Admission(refusal, statuses), states
    after = tuple(reserve(scope, state, demand, now) for scope, state in zip(scopes, states, strict=True))
    statuses = tuple(status_of(s, st, now) for s, st in zip(scopes, after, strict=True))
    return Admission(None, statuses), after
