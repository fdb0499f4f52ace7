"""Limit counters in Redis, shared by every worker and replica: `limits.lua` runs the domain arithmetic
server-side, so an admission (check every scope, then reserve in every scope), a settlement and a status
read are one round trip each; `restore.lua` rebuilds a budget counter from the records in one more.

Keys, under the prefix: `<scope name>:req` and `:tok` (GCRA tat, seconds, as a float's 17 digits),
`:par` (requests in flight), `:budget:<window start | lifetime>:spent` and `:reserved` (integer micro-USD).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from llmgw.domain.errors import LimitStoreUnavailable
from llmgw.domain.limits import (
    EMPTY_STATE,
    NOTHING,
    Admission,
    Demand,
    LimitReason,
    Refusal,
    Scope,
    ScopeState,
    ScopeStatus,
    budget_window,
    status_of,
    usd_to_micros,
)

_SCRIPTS = resources.files("llmgw.infrastructure.limits")
SCRIPT = _SCRIPTS.joinpath("limits.lua").read_text(encoding="utf-8")
RESTORE_SCRIPT = _SCRIPTS.joinpath("restore.lua").read_text(encoding="utf-8")
#: Fields of one scope's state in the script's reply.
STATE_FIELDS = 5
#: Tries when the server's clock names another budget window than the caller's (seconds at a boundary).
WINDOW_TRIES = 3


class RedisLimitStore:
    """`use_caller_clock=False` (production) times everything by the Redis server's clock, so replicas
    with skewed clocks agree; tests pass True to drive time through `now`.

    A command is never retried: a timed-out admission may have reserved, and running it again would
    reserve twice; such a reservation lasts until its window passes (rates: a minute; budgets: the
    period), its in-flight slot until `in_flight_ttl`. Connections are pooled (at most
    `max_connections`; a call waits up to `timeout` for one), so a call takes at most about
    `timeout` (pool) + `connect_timeout` + `timeout` (reply) before `LimitStoreUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llmgw:limits:",
        use_caller_clock: bool = False,
        connect_timeout: float = 1.0,
        timeout: float = 0.5,
        in_flight_ttl: float = 3600.0,
        max_connections: int = 64,
    ) -> None:
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,  # waiting for a free connection
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis.from_pool(pool)
        self._script = self._client.register_script(SCRIPT)
        self._restore_script = self._client.register_script(RESTORE_SCRIPT)
        self._prefix = prefix
        self._use_caller_clock = use_caller_clock
        self._in_flight_ttl_ms = str(max(1, math.ceil(in_flight_ttl * 1000)))

    async def admit(self, scopes: Sequence[Scope], demand: Demand, now: float) -> Admission:
        scopes = tuple(scopes)
        limited = [scope for scope in scopes if not scope.limits.empty]
        if not limited:
            return Admission(None, tuple(status_of(scope, EMPTY_STATE, now) for scope in scopes))
        reply = await self._run("admit", limited, (demand, NOTHING), now)
        now = float(reply[1])
        refusal = None
        if reply[0] == b"refused":
            index, reason, retry_after, left, exceeds = reply[2:7]
            refusal = Refusal(
                limited[int(index) - 1],
                LimitReason(reason.decode()),
                float(retry_after),
                remaining_micros=int(left) if left else None,
                exceeds_limit=exceeds == b"1",
            )
        states = iter(_states(reply[-len(limited) * STATE_FIELDS :]))
        statuses = tuple(
            status_of(scope, EMPTY_STATE if scope.limits.empty else next(states), now) for scope in scopes
        )
        return Admission(refusal, statuses)

    async def settle(
        self, scopes: Sequence[Scope], demand: Demand, actual: Demand, now: float, *, reached_upstream: bool
    ) -> None:
        limited = [scope for scope in scopes if not scope.limits.empty]
        if limited:
            await self._run("settle", limited, (demand, actual if reached_upstream else NOTHING), now)

    async def status(self, scope: Scope, now: float) -> ScopeStatus:
        if scope.limits.empty:
            return status_of(scope, EMPTY_STATE, now)
        reply = await self._run("status", [scope], (NOTHING, NOTHING), now)
        (state,) = _states(reply[2:])
        return status_of(scope, state, float(reply[1]))

    async def restore(self, scope: Scope, now: float, spent_micros: int) -> None:
        """A window the server's clock has already left is not restored (see `restore.lua`)."""
        limits = scope.limits
        if not limits.tracks_budget:
            return
        window, ends = budget_window(limits.budget_period, now)
        lifetime = math.isinf(ends)
        args = [
            str(spent_micros),
            repr(now) if self._use_caller_clock else "",
            "" if lifetime else window,
            "" if lifetime else repr(ends),
        ]
        await self._call(self._restore_script, [self._budget_key(scope, window, "spent")], args)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()

    async def _run(
        self, operation: str, scopes: Sequence[Scope], demands: tuple[Demand, Demand], now: float
    ) -> list[bytes]:
        demand, actual = demands
        head = [
            operation,
            repr(now) if self._use_caller_clock else "",
            self._in_flight_ttl_ms,
            str(demand.tokens),
            str(demand.micros),
            str(actual.tokens),
            str(actual.micros),
        ]
        clock = now  # names the budget windows; the script says when the server's clock disagrees
        for _ in range(WINDOW_TRIES):
            keys: list[str] = []
            args: list[str] = list(head)
            for scope in scopes:
                scope_keys, scope_args = self._scope(scope, clock)
                keys += scope_keys
                args += scope_args
            reply: list[bytes] = list(await self._call(self._script, keys, args))
            if reply[0] != b"period":
                return reply
            clock = float(reply[1])
        raise LimitStoreUnavailable("Limit store: the server's clock keeps crossing a budget period's end.")

    @staticmethod
    async def _call(script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        try:
            reply = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(
                f"The limit store (Redis) does not answer: {type(exc).__name__}: {exc}"
            ) from exc
        return reply

    def _budget_key(self, scope: Scope, window: str, counter: str) -> str:
        return f"{self._prefix}{scope.name}:budget:{window}:{counter}"

    def _scope(self, scope: Scope, clock: float) -> tuple[list[str], list[str]]:
        limits = scope.limits
        window, ends = budget_window(limits.budget_period, clock)
        base = f"{self._prefix}{scope.name}"
        keys = [f"{base}:req", f"{base}:tok", f"{base}:par"]
        keys += [self._budget_key(scope, window, "spent"), self._budget_key(scope, window, "reserved")]
        lifetime = math.isinf(ends)
        args = [
            _optional(limits.rpm),
            _optional(limits.tpm),
            _optional(limits.max_parallel),
            "" if limits.budget_usd is None else str(usd_to_micros(limits.budget_usd)),
            "1" if limits.tracks_budget else "",
            "" if lifetime else window,
            "" if lifetime else repr(ends),
        ]
        return keys, args


def _optional(value: int | None) -> str:
    return "" if value is None else str(value)


def _states(fields: Sequence[bytes]) -> list[ScopeState]:
    states = []
    for at in range(0, len(fields), STATE_FIELDS):
        requests_tat, tokens_tat, in_flight, spent, reserved = fields[at : at + STATE_FIELDS]
        states.append(
            ScopeState(
                requests_tat=float(requests_tat) if requests_tat else None,
                tokens_tat=float(tokens_tat) if tokens_tat else None,
                in_flight=int(in_flight),
                spent_micros=int(spent),
                reserved_micros=int(reserved),
            )
        )
    return states
