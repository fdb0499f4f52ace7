"""Prometheus metrics: what every chat and embeddings request did, and the gauges of the process.

Counters and histograms are updated once per request, from its generation record (`Metrics.finished`) or
its refusal (`Metrics.refused`), on the request's path: a handful of increments on label children cached
by their label values (prometheus-client's own `labels()` takes a lock and builds a key on every call).
Gauges (requests in flight, open circuits, records waiting, budgets left) are read, not pushed: `sample()`
sets them from the gateway's state, on each scrape and every `SAMPLE_EVERY` seconds, so the request path
never touches them.

Cardinality is bounded: key and team labels carry only the ids in `metrics.label_keys` (others are ""),
and model and error-code labels past their caps read `other` (catalog models are always their own).

Under `server.workers > 1` the supervisor points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the
workers start (prometheus-client picks its value store at import), each worker's values live in files
there, and whichever worker answers a scrape reports the sum of all (`MultiProcessCollector`); gauges say
how they combine (`livesum`: in flight, records waiting; `livemax`: a circuit open in any worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from llmgw.application.gateway import Gateway
from llmgw.application.tracking import RequestContext, Tracker
from llmgw.domain.errors import GatewayError, RateLimited
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.config.settings import MetricsSettings

log = logging.getLogger(__name__)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two samples of the gauges (each scrape samples too).
SAMPLE_EVERY = 5.0
#: Distinct error codes (and upstream attempt outcomes) labelled by name; beyond: "other".
MAX_ERROR_CODES = 100

# Whole requests, first byte to last: LLM answers take from tens of milliseconds (embeddings, cached
# prompts) to minutes (long generations, reasoning).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Time to the first token: what an interactive user waits for.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)

#: The budget left now of the key or team with this id, in USD, and which it is ("key", "team"); None when
#: neither has a budget (or it cannot be read).
BudgetOf = Callable[[str], Awaitable["tuple[str, float] | None"]]


_DEFAULTS = MetricsSettings()


def multiprocess() -> bool:
    """True when values go to `PROMETHEUS_MULTIPROC_DIR` (set before prometheus-client was imported)."""
    return bool(os.environ.get(MULTIPROC_DIR))


class _Capped:
    """Label values as given until `cap` distinct ones were seen, then `other`; `always` never counts."""

    __slots__ = ("always", "cap", "seen")

    def __init__(self, cap: int, always: Iterable[str] = ()) -> None:
        self.cap = cap
        self.always = frozenset(always)
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.always or value in self.seen:
            return value
        if len(self.seen) >= self.cap:
            return "other"
        self.seen.add(value)
        return value


class Metrics:
    """The gateway's metrics, in their own registry (so tests may build several); an `Observer`."""

    def __init__(
        self,
        settings: MetricsSettings = _DEFAULTS,
        *,
        catalog: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._multiprocess = multiprocess()
        self._labelled = frozenset(settings.label_keys)
        self._model = _Capped(settings.max_model_labels, catalog)
        self._code = _Capped(MAX_ERROR_CODES)
        self._children: dict[tuple[object, ...], Any] = {}
        self._gateway: Gateway | None = None
        self._budget_of: BudgetOf | None = None
        self._dropped_seen = 0
        self._circuits_shown: set[str] = set()
        self._sampler: asyncio.Task[None] | None = None
        r = self.registry
        self.requests = Counter(
            "llmgw_requests",
            "Chat and embeddings requests, by how they ended (status: completed, error, cancelled).",
            ("front", "kind", "model", "provider", "status", "error_code", "key", "team"),
            registry=r,
        )
        self.duration = Histogram(
            "llmgw_request_duration_seconds",
            "Time from a request's arrival to its answer's end (a stream's last chunk).",
            ("kind", "model", "provider"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmgw_time_to_first_token_seconds",
            "Time from a chat request's arrival to its first token (a unary answer's arrival).",
            ("model", "provider"),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llmgw_tokens",
            "Tokens the upstreams reported (type: prompt, completion, cached, reasoning).",
            ("model", "provider", "type", "key", "team"),
            registry=r,
        )
        self.cost = Counter(
            "llmgw_cost_usd",
            "What requests cost, in USD (the upstream's figure, else the catalog's prices).",
            ("model", "provider", "key", "team"),
            registry=r,
        )
        self.attempts = Counter(
            "llmgw_upstream_attempts",
            "Upstream attempts (retries and fallbacks included), by outcome: completed, cancelled, or "
            "the error code the attempt failed with.",
            ("provider", "outcome"),
            registry=r,
        )
        self.rate_limited = Counter(
            "llmgw_rate_limited",
            "Requests refused by the gateway's own limits (scope: key, team, model, global, process, "
            "provider; reason: requests, tokens, parallel, budget, in_flight).",
            ("scope", "reason"),
            registry=r,
        )
        self.records_dropped = Counter(
            "llmgw_records_dropped",
            "Generation records dropped because the store could not keep up (its buffer was full).",
            registry=r,
        )
        self.circuit_open = Gauge(
            "llmgw_circuit_open",
            "1 while a deployment's circuit is open or half-open (in any worker), else 0.",
            ("deployment",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            "llmgw_in_flight",
            "Chat and embeddings requests running now (streams included).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.records_pending = Gauge(
            "llmgw_records_pending",
            "Generation records waiting to be written to the store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.budget_remaining = Gauge(
            "llmgw_budget_remaining_usd",
            "Budget left in the current period, for the keys and teams in metrics.label_keys only.",
            ("key", "team"),
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    # -- the request path ---------------------------------------------------------------------------

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def finished(self, record: GenerationRecord, tracker: Tracker) -> None:
        model = self._model(record.model)
        provider = record.provider
        key = record.key_id if record.key_id in self._labelled else ""
        team = record.team_id if record.team_id in self._labelled else ""
        child = self._child
        status = record.status
        code = self._code(record.error_code) if record.error_code else ""
        child(self.requests, (tracker.ctx.front, record.kind, model, provider, status, code, key, team)).inc()
        if record.latency_ms is not None:
            child(self.duration, (record.kind, model, provider)).observe(record.latency_ms / 1000.0)
        if record.time_to_first_token_ms is not None and record.kind is GenerationKind.CHAT:
            child(self.ttft, (model, provider)).observe(record.time_to_first_token_ms / 1000.0)
        for kind, count in (
            ("prompt", record.prompt_tokens),
            ("completion", record.completion_tokens),
            ("cached", record.cached_tokens),
            ("reasoning", record.reasoning_tokens),
        ):
            if count:
                child(self.tokens, (model, provider, kind, key, team)).inc(count)
        if record.cost_usd:
            child(self.cost, (model, provider, key, team)).inc(record.cost_usd)
        for attempt in record.attempts:
            outcome = attempt.outcome
            if outcome == GenerationStatus.ERROR:
                outcome = self._code(attempt.error_code or "error")
            child(self.attempts, (attempt.provider, outcome)).inc()

    def refused(self, kind: GenerationKind, model: str, error: GatewayError, ctx: RequestContext) -> None:
        label = self._model(model) if model else ""
        code = self._code(error.code or "error")
        key_id = ctx.key.public_id if ctx.key is not None else ""
        team_id = ctx.key.team_id if ctx.key is not None else ""
        key = key_id if key_id in self._labelled else ""
        team = team_id if team_id in self._labelled else ""
        self._child(
            self.requests, (ctx.front, kind, label, "", GenerationStatus.ERROR, code, key, team)
        ).inc()
        if isinstance(error, RateLimited):
            self._child(self.rate_limited, (error.scope or "other", error.reason or "other")).inc()

    # -- gauges ---------------------------------------------------------------------------------------

    def watch(self, gateway: Gateway, budget_of: BudgetOf | None = None) -> None:
        """Sample `gateway`'s state from now on: on each scrape, and every `SAMPLE_EVERY` seconds (so
        that under several workers each keeps its own gauges fresh for whichever answers the scrape)."""
        self._gateway = gateway
        self._budget_of = budget_of
        self._sampler = asyncio.create_task(self._sample_forever(), name="metrics-sampler")

    async def stop(self) -> None:
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sample_forever(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a gauge that cannot be read must not stop the others' sampling
                log.exception("sampling the metrics' gauges failed")
            await asyncio.sleep(SAMPLE_EVERY)

    async def sample(self) -> None:
        gateway = self._gateway
        if gateway is None:
            return
        self.in_flight.set(gateway.in_flight)
        recorder = gateway.recorder
        self.records_pending.set(recorder.pending)
        dropped = recorder.dropped
        if dropped > self._dropped_seen:
            self.records_dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        self._sample_circuits(gateway)
        if self._budget_of is not None:
            await self._sample_budgets(self._budget_of)

    def _sample_circuits(self, gateway: Gateway) -> None:
        open_now = {f"{view.provider}/{view.upstream_model}" for view in gateway.circuit_views()}
        for deployment in open_now | self._circuits_shown:
            self.circuit_open.labels(deployment).set(1 if deployment in open_now else 0)
        self._circuits_shown |= open_now

    async def _sample_budgets(self, budget_of: BudgetOf) -> None:
        for owner in sorted(self._labelled):
            found = await budget_of(owner)
            if found is None:
                continue
            kind, remaining = found
            self.budget_remaining.labels(*((owner, "") if kind == "key" else ("", owner))).set(remaining)

    # -- exposition -----------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format, of this process or, in multiprocess mode, of every worker."""
        if self._multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def metrics_of(observers: Iterable[object]) -> Metrics | None:
    """The gateway's metrics among its observers, unless `metrics.enabled` is false."""
    return next((o for o in observers if isinstance(o, Metrics)), None)
