"""Limit counters in this process's memory: the domain arithmetic over dicts. Each worker counts alone, so
a limit of N is N per process; `cache.redis_url` shares them.

Admission runs without awaiting, so it is atomic on the event loop. Entries that no longer matter are
dropped: a tat in the past acts as absent, an idle parallel counter is 0, a budget window whose period
ended starts again at 0 under a new id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from llmgw.domain.limits import (
    Admission,
    Demand,
    Scope,
    ScopeState,
    ScopeStatus,
    budget_window,
    decide,
    settle_state,
    status_of,
)

V = TypeVar("V")

#: Seconds of `now` between sweeps of expired entries.
SWEEP_EVERY = 60.0


@dataclass(slots=True)
class _Budget:
    spent: int
    reserved: int
    ends: float


class MemoryLimitStore:
    def __init__(self) -> None:
        self._requests: dict[str, float] = {}  # scope name -> tat
        self._tokens: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._budgets: dict[tuple[str, str], _Budget] = {}  # (scope name, window id)
        self._next_sweep = -math.inf

    async def admit(self, scopes: Sequence[Scope], demand: Demand, now: float) -> Admission:
        self._sweep(now)
        scopes = tuple(scopes)
        states = tuple(self._read(scope, now) for scope in scopes)
        admission, after = decide(scopes, states, demand, now)
        if admission.refusal is None:
            for scope, state in zip(scopes, after, strict=True):
                self._write(scope, state, now)
        return admission

    async def settle(
        self, scopes: Sequence[Scope], demand: Demand, actual: Demand, now: float, *, reached_upstream: bool
    ) -> None:
        self._sweep(now)
        for scope in scopes:
            state = settle_state(
                scope, self._read(scope, now), demand, actual, now, reached_upstream=reached_upstream
            )
            self._write(scope, state, now)

    async def status(self, scope: Scope, now: float) -> ScopeStatus:
        return status_of(scope, self._read(scope, now), now)

    async def restore(self, scope: Scope, now: float, spent_micros: int) -> None:
        limits = scope.limits
        if not limits.tracks_budget:
            return
        window, ends = budget_window(limits.budget_period, now)
        budget = self._budgets.get((scope.name, window))
        if budget is None:
            self._budgets[scope.name, window] = _Budget(spent_micros, 0, ends)
        elif spent_micros > budget.spent:
            budget.spent = spent_micros

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._requests.clear()
        self._tokens.clear()
        self._in_flight.clear()
        self._budgets.clear()

    def _read(self, scope: Scope, now: float) -> ScopeState:
        name = scope.name
        budget = self._budgets.get((name, budget_window(scope.limits.budget_period, now)[0]))
        return ScopeState(
            requests_tat=_live(self._requests.get(name), now),
            tokens_tat=_live(self._tokens.get(name), now),
            in_flight=self._in_flight.get(name, 0),
            spent_micros=budget.spent if budget else 0,
            reserved_micros=budget.reserved if budget else 0,
        )

    def _write(self, scope: Scope, state: ScopeState, now: float) -> None:
        name, limits = scope.name, scope.limits
        _put(self._requests, name, _live(state.requests_tat, now))
        _put(self._tokens, name, _live(state.tokens_tat, now))
        _put(self._in_flight, name, state.in_flight or None)
        if limits.tracks_budget:
            window, ends = budget_window(limits.budget_period, now)
            self._budgets[name, window] = _Budget(state.spent_micros, state.reserved_micros, ends)

    def _sweep(self, now: float) -> None:
        """Drop what has expired, at most once a minute of `now`: memory follows the active scopes."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        for tats in (self._requests, self._tokens):
            for name in [name for name, tat in tats.items() if tat <= now]:
                del tats[name]
        for window in [window for window, budget in self._budgets.items() if budget.ends <= now]:
            del self._budgets[window]


def _live(tat: float | None, now: float) -> float | None:
    """A tat in the past acts as absent (GCRA takes max(tat, now))."""
    return tat if tat is not None and tat > now else None


def _put(table: dict[str, V], name: str, value: V | None) -> None:
    if value is None:
        table.pop(name, None)
    else:
        table[name] = value
