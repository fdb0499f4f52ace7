"""Retry policies and retry budgets: how often, how soon and how much a request may be tried again."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """One provider's policy (`llm.retry`, overridden per provider by `llm.providers.<name>.retry`).

    - `max_attempts`: attempts per request in all, fallbacks included (the requested model's policy);
    - `attempt_timeout`: when set (not 0), each unary attempt (chat without streaming, embeddings) has at
      most this long before the next one is tried, within the deadline, so that an upstream that accepts
      and hangs costs one such wait, not the whole deadline (streams have `first_token_timeout`);
    - `timeout`: seconds from a request's arrival to its deadline, across all its attempts (the
      requested model's provider's `timeout`); a client's own deadline (gRPC) may be shorter;
    - `backoff`, `backoff_max`: a repeat attempt at a deployment already tried waits a random time in
      [0, min(backoff_max, backoff * 2 ** (tries - 1))) ("full jitter"); another deployment is tried at once;
    - `retry_after_max`: the longest upstream `Retry-After` honoured; a deployment asking for more is
      left out for the rest of the request;
    - `budget`, `budget_window`, `budget_floor`: attempts sent again to a provider that already failed the
      request are at most `budget` times its requests over the last `budget_window` seconds, plus
      `budget_floor` per window, so that an outage does not multiply the load on the sick upstream.
    """

    max_attempts: int = 3
    timeout: float = 600.0
    attempt_timeout: float = 0.0
    backoff: float = 0.25
    backoff_max: float = 4.0
    retry_after_max: float = 5.0
    budget: float = 0.2
    budget_window: float = 10.0
    budget_floor: int = 10

    def backoff_ceiling(self, tries: int) -> float:
        """The longest wait before attempt `tries + 1` at a deployment tried `tries` times."""
        return min(self.backoff_max, self.backoff * 2.0 ** max(tries - 1, 0))


DEFAULT_POLICY = RetryPolicy()


class RetryBudget:
    """Requests and retries to one provider over a sliding window, kept as two fixed windows (this one
    and the one before, weighed by how much of it still overlaps): two counters, no list of times."""

    __slots__ = ("_clock", "_floor", "_previous", "_ratio", "_started", "_window", "current")

    def __init__(self, policy: RetryPolicy, clock: Clock = time.monotonic) -> None:
        self._ratio = policy.budget
        self._window = policy.budget_window
        self._floor = policy.budget_floor
        self._clock = clock
        self._started = clock()
        self.current = [0, 0]  # requests, retries in the window begun at `_started`
        self._previous = (0, 0)

    def note_request(self) -> None:
        self._roll()[0] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget if it has one left."""
        current = self._roll()
        overlap = 1.0 - (self._clock() - self._started) / self._window
        requests = current[0] + self._previous[0] * overlap
        retries = current[1] + self._previous[1] * overlap
        if retries >= self._floor + self._ratio * requests:
            return False
        current[1] += 1
        return True

    def _roll(self) -> list[int]:
        now = self._clock()
        elapsed = now - self._started
        if elapsed >= self._window:
            windows = int(elapsed // self._window)
            self._previous = (self.current[0], self.current[1]) if windows == 1 else (0, 0)
            self.current = [0, 0]
            self._started += windows * self._window
        return self.current


class RetryBudgets:
    """One `RetryBudget` per provider, each by its provider's policy."""

    def __init__(self, policies: Mapping[str, RetryPolicy], clock: Clock = time.monotonic) -> None:
        self._policies = policies
        self._clock = clock
        self._budgets: dict[str, RetryBudget] = {}

    def policy(self, provider: str) -> RetryPolicy:
        return self._policies.get(provider, DEFAULT_POLICY)

    def __getitem__(self, provider: str) -> RetryBudget:
        budget = self._budgets.get(provider)
        if budget is None:
            budget = self._budgets[provider] = RetryBudget(self.policy(provider), self._clock)
        return budget
