"""Admission: bounds on the requests in flight, for the process and per provider; beyond them a request is
refused at once (`Overloaded`), never queued."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from llmgw.domain.errors import Overloaded

#: The `Retry-After` an overloaded answer carries. Slots free up as fast as requests finish, so a short,
#: fixed wait is as good a hint as any estimate; clients add their own backoff and jitter.
RETRY_AFTER_SECONDS = 1.0


class Gate:
    """A counter of requests in flight with a bound; `None` (or 0) means no bound. No awaiting: a full
    gate refuses, it does not make anyone wait."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit or sys.maxsize
        self.in_flight = 0

    def try_enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


class Admission:
    """The process's gate and one gate per bounded provider. Entering costs two integer checks; a provider
    without a bound (0, or absent from `per_provider`) is bounded by the process's gate alone."""

    def __init__(
        self, max_in_flight: int | None = None, per_provider: Mapping[str, int] | None = None
    ) -> None:
        self.process = Gate(max_in_flight)
        self._providers = {name: Gate(limit) for name, limit in (per_provider or {}).items() if limit}

    def enter(self) -> None:
        """Take a slot of the process's bound, or raise `Overloaded` and take none."""
        if not self.process.try_enter():
            raise Overloaded(
                "The gateway has too many requests in flight; retry shortly.",
                retry_after=RETRY_AFTER_SECONDS,
                scope="process",
                reason="in_flight",
            )

    def leave(self) -> None:
        self.process.leave()

    def enter_provider(self, provider: str) -> None:
        """Take a slot of `provider`'s bound for one attempt, or raise `Overloaded` and take none."""
        gate = self._providers.get(provider)
        if gate is not None and not gate.try_enter():
            raise Overloaded(
                f"Too many requests to provider '{provider}' are in flight; retry shortly.",
                retry_after=RETRY_AFTER_SECONDS,
                scope="provider",
                reason="in_flight",
            )

    def leave_provider(self, provider: str) -> None:
        """Give back the slot `enter_provider(provider)` took."""
        gate = self._providers.get(provider)
        if gate is not None:
            gate.leave()
