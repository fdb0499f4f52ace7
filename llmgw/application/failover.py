"""Failover: which deployment each attempt of one request goes to, after how long, and when to stop.

A request's first attempt goes to one of its model's available deployments (the preferred priority, by
weight); when none of them is available (every circuit open) to the first of its `fallbacks` that has
one, and when nothing in the whole chain is available, to the deployment whose circuit opened first.

After a failed attempt, by what failed (`judge`):

- connection errors, timeouts, 5xx: the next attempt goes at once to a deployment not tried yet (the
  model's own first, then its fallbacks', in order); once every one was tried, to one tried before, after
  a backoff with full jitter, within the provider's retry budget;
- 429: that deployment is tried again only after its `Retry-After` (capped; beyond the cap, never in
  this request), others at once;
- 401/402/403 (a bad key) and a missing key: that deployment is out for the request;
- a request longer than the model's context: the model's `fallbacks_on_context` instead of its chain;
- 400/404/413/422, the caller's own errors, cancellation and shutdown: no further attempt.

No attempt starts after `max_attempts` attempts or past the request's one deadline, nor one whose
backoff would end past it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from llmgw.application.retries import RetryBudgets, RetryPolicy
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.domain.errors import (
    ContextTooLong,
    GatewayError,
    Overloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

if TYPE_CHECKING:
    from llmgw.application.routing import Route, Router

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_BAD_KEY = frozenset({401, 402, 403})
MISSING_CREDENTIALS = "missing_credentials"


class Verdict(enum.Enum):
    STOP = "stop"  # no further attempt
    RETRY = "retry"  # the upstream failed: another deployment at once, the same one after a backoff
    RATE_LIMITED = "rate_limited"  # another deployment at once, the same one after its Retry-After
    LEAVE_OUT = "leave_out"  # this deployment cannot serve the request: others only
    CONTEXT = "context"  # too long for the model: its fallbacks_on_context


# Most specific first: the first matching class wins; an error of none of them ends the request.
_VERDICTS: tuple[tuple[type[GatewayError], Verdict], ...] = (
    (UpstreamRateLimited, Verdict.RATE_LIMITED),
    (ContextTooLong, Verdict.CONTEXT),
    (UpstreamRejected, Verdict.STOP),
    (UpstreamUnavailable, Verdict.RETRY),
    (UpstreamTimeout, Verdict.RETRY),
    (Overloaded, Verdict.LEAVE_OUT),  # the provider's own in-flight bound: another provider may take it
)


def judge(error: BaseException) -> Verdict:
    """What a failed attempt's error says about the next one."""
    if isinstance(error, UpstreamUnavailable) and (
        error.status in _BAD_KEY or error.code == MISSING_CREDENTIALS
    ):
        return Verdict.LEAVE_OUT
    for cls, verdict in _VERDICTS:
        if isinstance(error, cls):
            return verdict
    return Verdict.STOP


class Failover:
    """The attempts of one request. A request whose first attempt answers pays for this object and
    `first()`: with one available deployment, one availability check and no random draw."""

    __slots__ = (
        "_budgets",
        "_capability",
        "_chain",
        "_clock",
        "_draw",
        "_failed",
        "_left_out",
        "_may_use",
        "_more",
        "_not_before",
        "_policy",
        "_router",
        "_tries",
        "attempts",
        "deadline",
    )

    def __init__(
        self,
        router: Router,
        budgets: RetryBudgets,
        model: ModelSpec,
        capability: Capability,
        *,
        policy: RetryPolicy,
        deadline: float,
        clock: Clock,
        may_use: Callable[[str], bool] | None = None,
    ) -> None:
        self._router = router
        #: The caller's key's rule on model ids: a fallback it may not use is never tried.
        self._may_use = may_use
        self._budgets = budgets
        self._capability = capability
        self._policy = policy
        self._clock = clock
        self._draw = router.draw
        self.deadline = deadline
        #: Models in the order they may be tried; `_more` are the fallback ids not resolved yet.
        self._chain = [model]
        self._more: list[str] = list(model.fallbacks)
        self.attempts = 0
        self._tries: dict[Deployment, int] = {}
        self._left_out: set[Deployment] = set()
        self._not_before: dict[Deployment, float] = {}
        self._failed: set[str] = set()  # providers that failed this request

    def first(self) -> Route:
        """The first attempt's route."""
        model = self._chain[0]
        router = self._router
        # Without fallbacks (the common case) the model's own choice, open circuits and all.
        found = (model, router.choose(model.deployments)) if not model.fallbacks else self._untried()
        if found is None:  # nothing in the chain is available: the one whose circuit opened first
            everything = {d: m for m in self._models() for d in m.deployments}
            deployment = router.opened_first(list(everything))
            found = everything[deployment], deployment
        self._budgets[found[1].provider].note_request()
        return router.route_to(*found)

    def attempt_deadline(self) -> float:
        """When a unary attempt starting now must have answered: `attempt_timeout` from now, within the
        request's deadline."""
        limit = self._policy.attempt_timeout
        if not limit:
            return self.deadline
        return min(self.deadline, self._clock() + limit)

    def next(self, route: Route, error: BaseException) -> tuple[Route, float] | None:
        """After `route`'s attempt failed with `error`: the next route and how long to wait before it,
        or None when the request should end with `error`."""
        self.attempts += 1
        deployment = route.deployment
        self._tries[deployment] = self._tries.get(deployment, 0) + 1
        now = self._clock()
        if not self._note(route, error, now):
            return None
        if self.attempts >= self._policy.max_attempts or now >= self.deadline:
            return None
        found = self._untried()
        delay = 0.0
        if found is None:
            found = self._again(now)
            if found is None:
                return None
            delay = max(self._draw() * self._backoff(found[1]), self._not_before.get(found[1], now) - now)
            if now + delay >= self.deadline:
                return None
        if found[1].provider in self._failed and not self._budgets[found[1].provider].try_spend():
            log.info("retry budget of provider %s spent: no further attempt", found[1].provider)
            return None
        return self._router.route_to(*found), delay

    def _note(self, route: Route, error: BaseException, now: float) -> bool:
        """Take in what `error` says about `route`'s deployment; False when no attempt may follow."""
        deployment = route.deployment
        verdict = judge(error)
        if verdict is Verdict.STOP:
            return False
        if verdict is Verdict.LEAVE_OUT:
            self._left_out.add(deployment)
        elif verdict is Verdict.RATE_LIMITED:
            assert isinstance(error, UpstreamRateLimited)
            wait = error.retry_after
            if wait is None:
                wait = self._backoff(deployment)
            if wait > self._budgets.policy(deployment.provider).retry_after_max:
                self._left_out.add(deployment)
            else:
                self._not_before[deployment] = now + wait
        elif verdict is Verdict.CONTEXT:
            larger = route.model.fallbacks_on_context
            if not larger:
                return False
            self._chain, self._more = [], list(larger)
        else:
            self._failed.add(deployment.provider)
        return True

    def _backoff(self, deployment: Deployment) -> float:
        policy = self._budgets.policy(deployment.provider)
        return policy.backoff_ceiling(self._tries.get(deployment, 0))

    def _untried(self) -> tuple[ModelSpec, Deployment] | None:
        """The first model in the chain with available deployments not tried yet, and one of them."""
        for model in self._models():
            fresh = [
                d
                for d in model.deployments
                if d not in self._tries and d not in self._left_out and self._router.is_available(d)
            ]
            if fresh:
                return model, self._router.pick(fresh)
        return None

    def _again(self, now: float) -> tuple[ModelSpec, Deployment] | None:
        """The first model in the chain with available deployments that may be tried again, and the one
        of them to try: one ready now (by priority and weight), else the one ready soonest."""
        for model in self._models():
            candidates = [
                d for d in model.deployments if d not in self._left_out and self._router.is_available(d)
            ]
            if not candidates:
                continue
            ready = [d for d in candidates if self._not_before.get(d, now) <= now]
            if ready:
                return model, self._router.pick(ready)
            return model, min(candidates, key=lambda d: self._not_before[d])
        return None

    def _models(self) -> Iterator[ModelSpec]:
        """The chain's models, resolving fallbacks as they are reached; one that cannot serve the request
        (unknown, or lacking the capability) is skipped."""
        yield from self._chain
        while self._more:
            model_id = self._more.pop(0)
            try:
                model = self._router.resolve(model_id, self._capability)
            except GatewayError as exc:
                log.debug("fallback %s skipped: %s", model_id, exc.message)
                continue
            if model in self._chain:
                continue
            if self._may_use is not None and not self._may_use(model.id):
                log.debug("fallback %s skipped: the caller's key may not use it", model_id)
                continue
            self._chain.append(model)
            yield model
