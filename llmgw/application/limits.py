"""Admission against limits and budgets (issue 15): which scopes a request counts against, what it asks of
them, and the settling of its reservation once it ends.

A request counts against its key, the key's team, its model and the whole gateway, each where limits are
set. Before it goes upstream, `Limiter.admit` reserves an estimate in every scope at once (the store's one
atomic step) or refuses it (`RateLimited`: `rate_limit_exceeded` or `budget_exceeded`, with the seconds
until it could pass). When it ends, `Limiter.settle` replaces the estimate with what the generation record
says it used and cost; a request that never reached an upstream only gives its reservation back.

Budget counters missing from the store (Redis restarted) are rebuilt from the generation records when
the Limiter is given their `spend` (see `budget_restore`).

Estimate: prompt tokens from the request's text (about four characters a token, plus a few per message),
plus `max_completion_tokens` / `max_tokens`, or `default_max_tokens` when the request sets neither; priced
from the catalog in micro-dollars (an unpriced model asks nothing of USD budgets).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from llmgw.application.budget_restore import BudgetRestorer, Spend
from llmgw.application.ports import LimitStore
from llmgw.domain.catalog import ModelSpec
from llmgw.domain.errors import LimitStoreUnavailable
from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey
from llmgw.domain.limits import (
    NO_LIMITS,
    Admission,
    Demand,
    Limits,
    Scope,
    ScopeKind,
    ScopeStatus,
    format_usd,
    usd_to_micros,
)

log = logging.getLogger(__name__)

_CHARS_PER_TOKEN = 4
_TEAM_CACHE_MAX = 10_000
_TOKENS_PER_MESSAGE = 4


class OnStoreError(enum.StrEnum):
    """What a request meets while the limit store cannot be reached: refused (`closed`), or let through
    uncounted (`open`)."""

    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request's reservation, to settle when it ends; `statuses` for its response headers."""

    scopes: tuple[Scope, ...]
    demand: Demand
    statuses: tuple[ScopeStatus, ...]


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """What a scope has used of its limits and has left, read from the limit store `at` (Unix seconds).
    `period`: the current budget period's [start, end), None without a budget or for a lifetime one."""

    status: ScopeStatus
    at: float
    period: tuple[float, float] | None

    @property
    def scope(self) -> Scope:
        return self.status.scope


class Limiter:
    """Admits requests against the limits of their key, team, model and the gateway (see the module)."""

    def __init__(
        self,
        store: LimitStore,
        *,
        global_limits: Limits = NO_LIMITS,
        team_limits: Callable[[str], Awaitable[Limits]] | None = None,
        team_cache_ttl: float = 5.0,
        default_max_tokens: int = 4096,
        on_budget_store_error: OnStoreError = OnStoreError.CLOSED,
        on_rate_store_error: OnStoreError = OnStoreError.OPEN,
        clock: Callable[[], float] = time.time,
        spend: Spend | None = None,
    ) -> None:
        """`spend`: the generation records' cost (`GenerationStore.spend`), to rebuild budget counters the
        store lost; without it they start again from 0."""
        self.store = store
        self._global = global_limits
        self._global_set = not global_limits.empty
        self._team_limits = team_limits
        self._team_cache_ttl = team_cache_ttl
        self._teams: dict[str, tuple[float, Limits]] = {}
        self._default_max_tokens = default_max_tokens
        self._on_budget_error = on_budget_store_error
        self._on_rate_error = on_rate_store_error
        self._clock = clock
        self._restorer = None if spend is None else BudgetRestorer(store, spend, clock=clock)

    async def scopes(self, key: ApiKey | None, model: ModelSpec) -> tuple[Scope, ...]:
        """The scopes with limits that `key`'s request for `model` counts against."""
        found = []
        if key is not None:
            if not key.limits.empty:
                found.append(Scope(ScopeKind.KEY, key.public_id, key.limits))
            if key.team_id and self._team_limits is not None:
                team = await self._team(key.team_id)
                if not team.empty:
                    found.append(Scope(ScopeKind.TEAM, key.team_id, team))
        if not model.limits.empty:
            found.append(Scope(ScopeKind.MODEL, model.id, model.limits))
        if not self._global.empty:
            found.append(Scope(ScopeKind.GLOBAL, "", self._global))
        return tuple(found)

    async def _team(self, team_id: str) -> Limits:
        """A team's limits, read from the key store at most every `team_cache_ttl` seconds (a team's
        change reaches every replica within that)."""
        now = self._clock()
        cached = self._teams.get(team_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        assert self._team_limits is not None
        limits = await self._team_limits(team_id)
        if len(self._teams) >= _TEAM_CACHE_MAX:
            self._teams.clear()
        self._teams[team_id] = (now + self._team_cache_ttl, limits)
        return limits

    def demand(self, model: ModelSpec, body: Mapping[str, object], *, completes: bool = True) -> Demand:
        """What a request asks: its estimated tokens, priced (see the module). `completes`: a chat request
        (an embeddings request has no completion tokens)."""
        prompt = estimate_prompt_tokens(body)
        completion = (_max_tokens(body) or self._default_max_tokens) if completes else 0
        pricing = model.pricing
        if pricing is None:
            return Demand(tokens=prompt + completion, micros=0, priced=False)
        # USD per million tokens times tokens is micro-dollars.
        micros = round(prompt * pricing.prompt + completion * pricing.completion)
        return Demand(tokens=prompt + completion, micros=micros, priced=True)

    async def admit(
        self, key: ApiKey | None, model: ModelSpec, body: Mapping[str, object], *, completes: bool = True
    ) -> Admitted | None:
        """Reserve the request's demand in every scope, or raise the refusal (`RateLimited`). None: no
        limit applies (or the store is down and the limits that apply fail open)."""
        scopes = await self.scopes(key, model)
        if not scopes:
            return None
        demand = self.demand(model, body, completes=completes)
        now = self._clock()
        try:
            admission: Admission = await self.store.admit(scopes, demand, now)
        except LimitStoreUnavailable:
            if self._fails_closed(scopes, demand):
                raise
            log.warning("limit store unreachable: %d scope(s) let through uncounted", len(scopes))
            return None
        if self._restorer is not None:
            self._restorer.notice(admission.statuses, now)
        if admission.refusal is not None:
            refused = admission.refusal.error()
            refused.limit_statuses = admission.statuses
            raise refused
        for status in admission.statuses:
            if status.soft_exceeded:
                log.warning(
                    "soft budget passed: %s has spent %s of its soft budget of %s",
                    status.scope.name,
                    format_usd((status.spent_micros or 0) + (status.reserved_micros or 0)),
                    format_usd(usd_to_micros(status.scope.limits.soft_budget_usd or 0.0)),
                )
        return Admitted(scopes, demand, admission.statuses)

    def applies(self, key: ApiKey | None, model: ModelSpec) -> bool:
        """Whether a request by `key` for `model` may count against any limit (a cheap check that spares
        requests nothing limits an awaited admission)."""
        if self._global_set or not model.limits.empty:
            return True
        return key is not None and (bool(key.team_id) or not key.limits.empty)

    async def settle(self, admitted: Admitted, actual: Demand, *, reached_upstream: bool) -> None:
        """Replace the reservation with what the request used (never raises: the store being down then
        only leaves the estimate counted)."""
        try:
            await self.store.settle(
                admitted.scopes, admitted.demand, actual, self._clock(), reached_upstream=reached_upstream
            )
        except LimitStoreUnavailable:
            log.warning("limit store unreachable: a request's reservation stays as estimated")

    async def settle_record(self, admitted: Admitted, record: GenerationRecord) -> None:
        """`settle` with what the request's record says it used: its tokens, and its cost to the
        micro-dollar (what the budget tests sum)."""
        tokens = record.total_tokens or record.prompt_tokens + record.completion_tokens
        micros = usd_to_micros(record.cost_usd) if record.cost_usd is not None else 0
        actual = Demand(tokens=tokens, micros=micros, priced=admitted.demand.priced)
        await self.settle(admitted, actual, reached_upstream=bool(record.attempts))

    async def usage(self, scope: Scope) -> LimitUsage:
        """The scope's counters now (the usage API); raises `LimitStoreUnavailable` when the store cannot be
        reached, since a guess would read as "nothing used"."""
        now = self._clock()
        status = await self.store.status(scope, now)
        limits = scope.limits
        period = limits.budget_period
        bounds = period.bounds(now) if period is not None and limits.tracks_budget else None
        return LimitUsage(status, now, bounds)

    async def restore(self, scope: Scope) -> int:
        """Raise the scope's budget counter of the current window to what its generation records cost (never
        lowering it); return that cost in micro-USD. Raises `LimitStoreUnavailable`; needs `spend`."""
        if self._restorer is None:
            raise RuntimeError("this Limiter was given no generation records to restore from")
        return await self._restorer.restore(scope)

    async def restored(self) -> None:
        """Until every background restore under way ended (tests)."""
        if self._restorer is not None:
            await self._restorer.wait()

    async def close(self) -> None:
        """Cancel the background restores under way (before the limit store closes)."""
        if self._restorer is not None:
            await self._restorer.close()

    def _fails_closed(self, scopes: Sequence[Scope], demand: Demand) -> bool:
        budgets = any(scope.limits.budget_usd is not None for scope in scopes) and demand.priced
        rates = any(
            limits.rpm is not None or limits.tpm is not None or limits.max_parallel is not None
            for limits in (scope.limits for scope in scopes)
        )
        return (budgets and self._on_budget_error == OnStoreError.CLOSED) or (
            rates and self._on_rate_error == OnStoreError.CLOSED
        )


def estimate_prompt_tokens(body: Mapping[str, object]) -> int:
    """About how many tokens a chat request's messages (or an embeddings request's input) hold."""
    chars = 0
    count = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            count += 1
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        chars += len(text)
    given = body.get("input")
    if isinstance(given, str):
        chars += len(given)
    elif isinstance(given, list):
        for item in given:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, list):
                chars += _CHARS_PER_TOKEN * len(item)  # token ids: one token each
            elif isinstance(item, int):
                chars += _CHARS_PER_TOKEN
    return -(-chars // _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * count


def _max_tokens(body: Mapping[str, object]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0
