"""Budget counters rebuilt from the generation records (issue 15): a counter that Redis lost in a restart
reads as nothing spent, and the records still know what was.

Automatically: an admission that finds a budget scope at 0 spent (a missing counter, or a new period)
restores it in the background, never delaying the request, at most once per scope and budget window, and
again at most once a minute while it stays at 0 (a Redis restart mid-period is caught by the next request
of each scope; once a counter was seen above 0, losing it again restores at once). By hand: `llmgw limits
rebuild`. A restore raises the counter to the records' sum and never lowers it, so it is idempotent and
requests settled since the restart are not counted twice; what it can miss is bounded by the requests that
settled after the restart whose records were not yet written when the records were summed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol

from llmgw.application.ports import LimitStore
from llmgw.domain.errors import LimitStoreUnavailable
from llmgw.domain.limits import Scope, ScopeKind, ScopeStatus, budget_window

log = logging.getLogger(__name__)

#: Seconds between two restores of one scope while its counter stays at 0 in one window.
RESTORE_EVERY = 60.0
_TRACKED_MAX = 10_000


class Spend(Protocol):
    """`GenerationStore.spend`: the records' cost in [since, until) matching the non-empty filters, micro-USD."""

    async def __call__(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int: ...


def records_of(scope: Scope) -> dict[str, str]:
    """The `spend` filters that select a scope's records: its key, team or model; the gateway's are all."""
    if scope.kind is ScopeKind.KEY:
        return {"key_id": scope.id}
    if scope.kind is ScopeKind.TEAM:
        return {"team_id": scope.id}
    if scope.kind is ScopeKind.MODEL:
        return {"model": scope.id}
    return {}


def window_range(scope: Scope, now: float) -> tuple[float, float]:
    """[start, end) of the scope's budget window at `now`; a lifetime budget's is all time."""
    period = scope.limits.budget_period
    return (0.0, math.inf) if period is None else period.bounds(now)


class BudgetRestorer:
    """Restores budget counters from the records (see the module); `close` cancels restores under way."""

    def __init__(self, store: LimitStore, spend: Spend, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._spend = spend
        self._clock = clock
        self._last: dict[str, tuple[str, float]] = {}  # scope name -> (window id, when last started)
        self._running: dict[str, asyncio.Task[None]] = {}

    async def restore(self, scope: Scope, now: float | None = None) -> int:
        """Raise the scope's current window's counter to what its records cost; return that sum."""
        now = self._clock() if now is None else now
        since, until = window_range(scope, now)
        spent = await self._spend(since, until, **records_of(scope))
        await self._store.restore(scope, now, spent)
        return spent

    def notice(self, statuses: Iterable[ScopeStatus], now: float) -> None:
        """Start a background restore for each budget scope at 0 spent that is due one."""
        for status in statuses:
            if status.spent_micros != 0:
                # None: no budget tracked. Above 0 the counter is there: should it go missing again later in
                # this window (another restart), the next request restores it without waiting a minute.
                if status.spent_micros is not None and self._last:
                    self._last.pop(status.scope.name, None)
                continue
            scope = status.scope
            name = scope.name
            window, _ = budget_window(scope.limits.budget_period, now)
            last = self._last.get(name)
            if name in self._running or (
                last is not None and last[0] == window and now - last[1] < RESTORE_EVERY
            ):
                continue
            if len(self._last) >= _TRACKED_MAX:
                self._last.clear()
            self._last[name] = (window, now)
            task = asyncio.get_running_loop().create_task(self._restore_logged(scope, now))
            self._running[name] = task
            task.add_done_callback(partial(self._ended, name))

    async def wait(self) -> None:
        """Until every restore under way ended (tests)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, name: str, _: asyncio.Task[None]) -> None:
        self._running.pop(name, None)

    async def _restore_logged(self, scope: Scope, now: float) -> None:
        try:
            spent = await self.restore(scope, now)
        except LimitStoreUnavailable as exc:
            log.warning("budget of %s not restored from the records: %s", scope.name, exc.message)
        except Exception:  # a task supervisor: whatever the record store raised
            log.exception("budget of %s not restored from the records", scope.name)
        else:
            if spent:
                log.info("budget of %s restored from the records: %d micro-USD spent", scope.name, spent)
