"""Rounds folded into one figure per row (the median of the rounds), and the issue's targets judged on them."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.plan import (
    BARE_GRPC,
    DIRECT,
    LLMGW_GRPC,
    LLMGW_GRPC_AIOHTTP,
    LLMGW_GRPC_AUTH,
    LLMGW_GRPC_LIMITS,
    LLMGW_REST,
    LLMGW_REST_AIOHTTP,
    LLMGW_REST_AUTH,
    LLMGW_REST_LIMITS,
    REFERENCE_PROXY,
    Front,
    Kind,
    Row,
    Target,
)
from benchmarks.procfs import PeakMemory
from benchmarks.runner import Sample

MIB_LIMIT = 120.0
#: how the aiohttp transport's figures are labelled beside the verdicts'
AIOHTTP = "aiohttp transport"
#: server CPU per request that auth on (a cached key) may add over the same llmgw row without auth, in µs
AUTH_LIMIT_US = 20.0
#: each auth on target with llmgw's plain target of the same front, which it is compared with
AUTH_PAIRS = ((LLMGW_REST_AUTH, LLMGW_REST), (LLMGW_GRPC_AUTH, LLMGW_GRPC))
#: server CPU per request (µs) and p50 latency (ms) that limits on (a key with limits, counters in Redis)
#: may add over the same row without limits: the auth on row, measured right before it
LIMITS_CPU_LIMIT_US = 50.0
LIMITS_P50_LIMIT_MS = 0.3
#: each limits on target with the auth on target of the same front, which it is compared with
LIMITS_PAIRS = ((LLMGW_REST_LIMITS, LLMGW_REST_AUTH), (LLMGW_GRPC_LIMITS, LLMGW_GRPC_AUTH))
#: the kinds' names in the verdicts
_KIND_NAMES = {
    Kind.CHAT: "chat",
    Kind.PACED_STREAM: "paced stream",
    Kind.BURST_STREAM: "burst stream",
    Kind.EMBEDDINGS: "embeddings",
    Kind.TTFB: "TTFB",
}


@dataclass(frozen=True, slots=True)
class Summary:
    row: Row
    rounds: int
    rps: float
    p50_ms: float
    p99_ms: float
    #: p50 latency in each round, for differences between rows measured side by side
    p50_ms_by_round: dict[int, float]
    server_ms: float
    #: server CPU ms per request in each round, for ratios between rows measured side by side
    server_ms_by_round: dict[int, float]
    upstream_ms: float
    #: the gRPC load generator's own CPU per request (NaN for wrk rows)
    client_ms: float
    peak: PeakMemory | None
    errors: int
    upstream_requests: int


def _median(values: Iterable[float]) -> float:
    kept = [value for value in values if not math.isnan(value)]
    return statistics.median(kept) if kept else math.nan


def _summary(row: Row, samples: list[Sample]) -> Summary:
    peaks = [s.peak for s in samples if s.peak is not None]
    return Summary(
        row=row,
        rounds=len(samples),
        rps=_median(s.load.requests / s.load.seconds if s.load.seconds else math.nan for s in samples),
        p50_ms=_median(s.load.p50_ms for s in samples),
        p99_ms=_median(s.load.p99_ms for s in samples),
        p50_ms_by_round={s.round: s.load.p50_ms for s in samples},
        server_ms=_median(s.server_ms_per_request for s in samples),
        server_ms_by_round={s.round: s.server_ms_per_request for s in samples},
        upstream_ms=_median(s.upstream_ms_per_request for s in samples),
        client_ms=_median(
            1000 * s.load.client_cpu_s / s.upstream_requests if s.upstream_requests else math.nan
            for s in samples
        ),
        peak=max(peaks, key=lambda peak: peak.total_mib) if peaks else None,
        errors=sum(s.load.errors for s in samples),
        upstream_requests=sum(s.upstream_requests for s in samples),
    )


class Summaries:
    """One Summary per row, with the comparisons the report needs."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        grouped: dict[Row, list[Sample]] = defaultdict(list)
        for sample in samples:
            grouped[sample.row].append(sample)
        self.rows = {row: _summary(row, found) for row, found in grouped.items()}

    def get(self, target: Target, kind: Kind, concurrency: int) -> Summary | None:
        return self.rows.get(Row(target, kind, concurrency))

    def added(self, summary: Summary) -> tuple[float, float]:
        """p50 and p99 over going straight to the upstream (its REST twin for gRPC rows)."""
        direct = self.get(DIRECT, summary.row.kind, summary.row.concurrency)
        if direct is None or summary.row.target == DIRECT:
            return math.nan, math.nan
        return summary.p50_ms - direct.p50_ms, summary.p99_ms - direct.p99_ms

    def cpu_ratio(self, summary: Summary) -> float:
        """Server CPU per request over the reference's (REST: the aiohttp proxy, gRPC: the bare grpclib
        echo), same kind and concurrency: the median of each round's ratio, since rows of one round ran
        minutes closer together than the rounds."""
        return _median(self.cpu_ratios(summary))

    def cpu_ratios(self, summary: Summary) -> list[float]:
        """Each round's ratio of `cpu_ratio`."""
        reference_target = BARE_GRPC if summary.row.target.front is Front.GRPC else REFERENCE_PROXY
        reference = self.get(reference_target, summary.row.kind, summary.row.concurrency)
        if reference is None:
            return []
        theirs = reference.server_ms_by_round
        return [
            ours / theirs[index]
            for index, ours in summary.server_ms_by_round.items()
            if theirs.get(index, 0.0) > 0 and not math.isnan(theirs[index]) and not math.isnan(ours)
        ]

    def added_cpu_us(self, summary: Summary, plain: Target) -> float:
        """Server CPU per request, in µs, that `summary`'s row spent over `plain`'s row of the same kind
        and concurrency: the median of each round's difference, as for `cpu_ratio`."""
        return _median(self.added_cpus_us(summary, plain))

    def added_cpus_us(self, summary: Summary, plain: Target) -> list[float]:
        """Each round's difference of `added_cpu_us`."""
        theirs = self.get(plain, summary.row.kind, summary.row.concurrency)
        if theirs is None:
            return []
        return [1000 * added for added in _differences(summary.server_ms_by_round, theirs.server_ms_by_round)]

    def added_p50_ms(self, summary: Summary, plain: Target) -> float:
        """p50 latency, in ms, that `summary`'s row added over `plain`'s row of the same kind and
        concurrency: the median of each round's difference, as for `added_cpu_us`."""
        return _median(self.added_p50s_ms(summary, plain))

    def added_p50s_ms(self, summary: Summary, plain: Target) -> list[float]:
        """Each round's difference of `added_p50_ms`."""
        theirs = self.get(plain, summary.row.kind, summary.row.concurrency)
        return [] if theirs is None else _differences(summary.p50_ms_by_round, theirs.p50_ms_by_round)

    def concurrencies(self, kind: Kind) -> list[int]:
        return sorted({row.concurrency for row in self.rows if row.kind is kind})


def _differences(ours: dict[int, float], theirs: dict[int, float]) -> list[float]:
    """Per round that both measured, ours minus theirs."""
    return [
        value - theirs[index]
        for index, value in ours.items()
        if index in theirs and not math.isnan(theirs[index]) and not math.isnan(value)
    ]


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    limit: float
    unit: str
    #: (where, measured)
    figures: tuple[tuple[str, float], ...]
    #: another row's figures at the same places, shown beside and not judged (label, {where: value})
    beside: tuple[str, dict[str, float]] | None = None
    #: a difference from another row, shown with its sign (noise can make it negative)
    signed: bool = False

    @property
    def met(self) -> bool | None:
        values = [value for _, value in self.figures if not math.isnan(value)]
        if not values:
            return None
        return all(value <= self.limit for value in values)


def judge(summaries: Summaries, final_peaks: dict[str, PeakMemory]) -> list[Verdict]:
    """The issue's targets for one worker with the default transport, each at every concurrency measured;
    the aiohttp transport's figures beside them, not judged."""

    def ratios(target: Target, kind: Kind) -> tuple[tuple[str, float], ...]:
        found = ((c, summaries.get(target, kind, c)) for c in summaries.concurrencies(kind))
        return tuple((f"c{c}", summaries.cpu_ratio(s)) for c, s in found if s is not None)

    def rest(name: str, limit: float, kind: Kind) -> Verdict:
        figures = ratios(LLMGW_REST, kind)
        beside = (AIOHTTP, dict(ratios(LLMGW_REST_AIOHTTP, kind)))
        return Verdict(f"REST {name} CPU/request vs reference proxy", limit, "x", figures, beside)

    def grpc(name: str, limit: float, kind: Kind) -> Verdict:
        figures = ratios(LLMGW_GRPC, kind)
        beside = (AIOHTTP, dict(ratios(LLMGW_GRPC_AIOHTTP, kind)))
        return Verdict(f"gRPC {name} CPU/request vs bare grpclib echo", limit, "x", figures, beside)

    verdicts = [
        rest("chat", 1.3, Kind.CHAT),
        rest("paced stream", 1.3, Kind.PACED_STREAM),
        rest("embeddings", 1.5, Kind.EMBEDDINGS),
        grpc("unary chat", 1.6, Kind.CHAT),
        grpc("paced stream", 1.6, Kind.PACED_STREAM),
    ]
    verdicts += auth_verdicts(summaries)
    verdicts += limits_verdicts(summaries)
    peak = final_peaks.get(LLMGW_REST.server)
    if peak is not None:
        theirs = final_peaks.get(LLMGW_REST_AIOHTTP.server)
        verdicts.append(
            Verdict(
                "peak RSS through the run (1 worker)",
                MIB_LIMIT,
                "MiB",
                (("VmHWM", peak.total_mib),),
                (AIOHTTP, {"VmHWM": theirs.total_mib} if theirs else {}),
            )
        )
    return verdicts


def auth_verdicts(summaries: Summaries) -> list[Verdict]:
    """For each auth on row measured, the server CPU per request that auth on added over llmgw's plain row
    of the same round (median of the rounds), judged against `AUTH_LIMIT_US`."""
    verdicts = []
    for auth, plain in AUTH_PAIRS:
        for kind in Kind:
            found = ((c, summaries.get(auth, kind, c)) for c in summaries.concurrencies(kind))
            figures = tuple((f"c{c}", summaries.added_cpu_us(s, plain)) for c, s in found if s is not None)
            if figures:
                name = f"{auth.front.value} {_KIND_NAMES[kind]}, auth on (cached key): added CPU/request"
                verdicts.append(Verdict(name, AUTH_LIMIT_US, "µs", figures, signed=True))
    return verdicts


def limits_verdicts(summaries: Summaries) -> list[Verdict]:
    """For each limits on row measured, the server CPU per request and the p50 latency that limits on
    added over the auth on row of the same round (medians of the rounds), judged against
    `LIMITS_CPU_LIMIT_US` and `LIMITS_P50_LIMIT_MS`."""
    verdicts = []
    for limited, plain in LIMITS_PAIRS:
        for kind in Kind:
            found = [
                (f"c{c}", s) for c in summaries.concurrencies(kind) if (s := summaries.get(limited, kind, c))
            ]
            if not found:
                continue
            name = f"{limited.front.value} {_KIND_NAMES[kind]}, limits on (Redis): added"
            cpu = tuple((where, summaries.added_cpu_us(s, plain)) for where, s in found)
            p50 = tuple((where, summaries.added_p50_ms(s, plain)) for where, s in found)
            verdicts.append(Verdict(f"{name} CPU/request", LIMITS_CPU_LIMIT_US, "µs", cpu, signed=True))
            verdicts.append(Verdict(f"{name} p50 latency", LIMITS_P50_LIMIT_MS, "ms", p50, signed=True))
    return verdicts
