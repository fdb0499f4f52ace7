"""What one benchmark run measures: targets, kinds of request, concurrencies, and their interleaved order."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

UPSTREAM = "upstream"
REFERENCE = "reference"
LLMGW = "llmgw"
LLMGW_2 = "llmgw-2w"
#: llmgw whose provider uses the aiohttp transport (`transport = "aiohttp"`) instead of the default
LLMGW_AIOHTTP = "llmgw-aiohttp"
#: llmgw with `[auth] enabled = true`: every request carries a key minted through its admin API
LLMGW_AUTH = "llmgw-auth"
#: llmgw with auth on and `[cache] redis_url`: every request carries a key with limits that never refuse
LLMGW_LIMITS = "llmgw-limits"
GRPC_ECHO = "grpc-echo"
#: llmgw with `[metrics] enabled = false`, and llmgw with traces exported to a collector stub
#: (`benchmarks.observability`; the other servers run with metrics on, the default)
LLMGW_NO_METRICS = "llmgw-no-metrics"
LLMGW_TRACING = "llmgw-tracing"


class Kind(enum.Enum):
    """What is asked; the order is the report's."""

    CHAT = "chat"
    #: the headline stream: the upstream writes each chunk on its own, 1 ms apart, as real upstreams do
    PACED_STREAM = "stream (paced: 20 chunks 1 ms apart)"
    #: the upstream writes the whole stream at once, which makes batching on the way look free
    BURST_STREAM = "stream (burst: 20 chunks in one write)"
    EMBEDDINGS = "embeddings"
    #: paced streams one at a time, for time to first byte
    TTFB = "paced stream (TTFB)"

    @property
    def streamed(self) -> bool:
        return self in (Kind.PACED_STREAM, Kind.BURST_STREAM, Kind.TTFB)


class Front(enum.Enum):
    REST = "REST"
    GRPC = "gRPC"


@dataclass(frozen=True, slots=True)
class Target:
    """Something loaded: a front of a server process, whose process tree's CPU is what counts."""

    label: str
    server: str
    front: Front

    @property
    def gateway(self) -> bool:
        return self.server in (
            LLMGW,
            LLMGW_2,
            LLMGW_AIOHTTP,
            LLMGW_AUTH,
            LLMGW_LIMITS,
            LLMGW_NO_METRICS,
            LLMGW_TRACING,
        )


DIRECT = Target("direct (upstream)", UPSTREAM, Front.REST)
REFERENCE_PROXY = Target("reference proxy", REFERENCE, Front.REST)
LLMGW_REST = Target("llmgw REST", LLMGW, Front.REST)
LLMGW_GRPC = Target("llmgw gRPC", LLMGW, Front.GRPC)
LLMGW_REST_2 = Target("llmgw REST, 2 workers", LLMGW_2, Front.REST)
LLMGW_GRPC_2 = Target("llmgw gRPC, 2 workers", LLMGW_2, Front.GRPC)
LLMGW_REST_AIOHTTP = Target("llmgw REST, aiohttp transport", LLMGW_AIOHTTP, Front.REST)
LLMGW_GRPC_AIOHTTP = Target("llmgw gRPC, aiohttp transport", LLMGW_AIOHTTP, Front.GRPC)
LLMGW_REST_AUTH = Target("llmgw REST, auth on", LLMGW_AUTH, Front.REST)
LLMGW_GRPC_AUTH = Target("llmgw gRPC, auth on", LLMGW_AUTH, Front.GRPC)
LLMGW_REST_LIMITS = Target("llmgw REST, limits on", LLMGW_LIMITS, Front.REST)
LLMGW_GRPC_LIMITS = Target("llmgw gRPC, limits on", LLMGW_LIMITS, Front.GRPC)
BARE_GRPC = Target("bare grpclib echo", GRPC_ECHO, Front.GRPC)
#: in the order of the report's tables: each auth on, limits on and aiohttp transport row beside llmgw's
#: plain one
TARGETS = (
    DIRECT,
    REFERENCE_PROXY,
    LLMGW_REST,
    LLMGW_REST_AUTH,
    LLMGW_REST_LIMITS,
    LLMGW_REST_AIOHTTP,
    BARE_GRPC,
    LLMGW_GRPC,
    LLMGW_GRPC_AUTH,
    LLMGW_GRPC_LIMITS,
    LLMGW_GRPC_AIOHTTP,
    LLMGW_REST_2,
    LLMGW_GRPC_2,
)


@dataclass(frozen=True, slots=True)
class Row:
    target: Target
    kind: Kind
    concurrency: int


@dataclass(frozen=True, slots=True)
class Plan:
    concurrencies: tuple[int, ...] = (1, 32, 128)
    #: kinds measured at other concurrencies than `concurrencies`
    kind_concurrencies: tuple[tuple[Kind, tuple[int, ...]], ...] = (
        # At c1 a 1-s row holds ~50 paced streams, a few 10 ms clock ticks of CPU: no figure to judge on.
        (Kind.PACED_STREAM, (32, 128)),
        (Kind.TTFB, (1,)),
    )
    #: (kind, concurrency) pairs also run against llmgw with 2 workers
    workers_rows: tuple[tuple[Kind, int], ...] = (
        (Kind.CHAT, 32),
        (Kind.PACED_STREAM, 32),
        (Kind.CHAT, 128),
        (Kind.PACED_STREAM, 128),
        (Kind.EMBEDDINGS, 128),
    )
    #: (kind, concurrency) pairs also run against llmgw with the aiohttp transport: c32 only, to keep a
    #: run near ten minutes
    transport_rows: tuple[tuple[Kind, int], ...] = (
        (Kind.CHAT, 32),
        (Kind.PACED_STREAM, 32),
        (Kind.EMBEDDINGS, 32),
    )
    #: (kind, concurrency) pairs also run against llmgw with auth on (a cached key), each beside llmgw's
    #: plain row of the same round for the CPU that checking the key adds
    auth_rows: tuple[tuple[Kind, int], ...] = (
        (Kind.CHAT, 32),
        (Kind.PACED_STREAM, 32),
        (Kind.EMBEDDINGS, 32),
    )
    #: (kind, concurrency) pairs also run against llmgw with limits on (auth on, a key with limits, Redis),
    #: each right after the auth on row of the same round, which is the same row without limits
    limits_rows: tuple[tuple[Kind, int], ...] = (
        (Kind.CHAT, 32),
        (Kind.PACED_STREAM, 32),
        (Kind.EMBEDDINGS, 32),
    )
    #: servers that are not running (an optional one that did not start): their rows are left out
    missing: frozenset[str] = frozenset()

    def round(self, index: int) -> list[Row]:
        """One round: for each kind and concurrency every target in turn, the order rotated per round (by
        groups: a plain llmgw row and its auth on and limits on rows stay together, in that order)."""
        rows: list[Row] = []
        for kind in Kind:
            for concurrency in self.concurrencies_for(kind):
                pair = (kind, concurrency)
                wanted = _Wanted(
                    workers=pair in self.workers_rows,
                    aiohttp=pair in self.transport_rows,
                    auth=pair in self.auth_rows,
                    limits=pair in self.limits_rows,
                )
                groups = [
                    kept
                    for group in _groups(kind, wanted)
                    if (kept := [target for target in group if target.server not in self.missing])
                ]
                shift = index % len(groups)
                for group in groups[shift:] + groups[:shift]:
                    rows.extend(Row(target, kind, concurrency) for target in group)
        return rows

    def concurrencies_for(self, kind: Kind) -> tuple[int, ...]:
        return dict(self.kind_concurrencies).get(kind, self.concurrencies)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """Which optional targets a (kind, concurrency) pair is also run against."""

    workers: bool
    aiohttp: bool
    auth: bool
    limits: bool


def _groups(kind: Kind, wanted: _Wanted) -> list[list[Target]]:
    """The targets in a cyclic order where one server's rows rarely follow each other (see
    `Bench.measure`), in groups that a round's rotation keeps whole: each auth on row right after llmgw's
    plain one and each limits on row right after the auth on one, so that the rows compared are measured
    seconds apart."""
    grpc = kind is not Kind.EMBEDDINGS  # the issue asks for gRPC unary and streamed chat
    candidates = [
        [(DIRECT, True)],
        [
            (LLMGW_REST, True),
            (LLMGW_REST_AUTH, wanted.auth),
            (LLMGW_REST_LIMITS, wanted.auth and wanted.limits),
        ],
        [(LLMGW_REST_AIOHTTP, wanted.aiohttp)],
        [(LLMGW_REST_2, wanted.workers)],
        [(REFERENCE_PROXY, True)],
        [
            (LLMGW_GRPC, grpc),
            (LLMGW_GRPC_AUTH, grpc and wanted.auth),
            (LLMGW_GRPC_LIMITS, grpc and wanted.auth and wanted.limits),
        ],
        [(BARE_GRPC, grpc and kind is not Kind.TTFB)],
        [(LLMGW_GRPC_AIOHTTP, grpc and wanted.aiohttp)],
        [(LLMGW_GRPC_2, grpc and wanted.workers)],
    ]
    groups = [[target for target, want in group if want] for group in candidates]
    return [group for group in groups if group]


def model(target: Target, kind: Kind) -> str:
    """The model a target is asked for: upstream names directly, catalog ids through llmgw."""
    name = {
        Kind.CHAT: "chat",
        Kind.PACED_STREAM: "paced",
        Kind.BURST_STREAM: "chat",
        Kind.EMBEDDINGS: "embed",
        Kind.TTFB: "paced",
    }[kind]
    return f"bench/{name}" if target.gateway else name


def rest_path(kind: Kind) -> str:
    return "/v1/embeddings" if kind is Kind.EMBEDDINGS else "/v1/chat/completions"


def rest_body(target: Target, kind: Kind) -> bytes:
    body: dict[str, Any]
    if kind is Kind.EMBEDDINGS:
        body = {"model": model(target, kind), "input": "The quick brown fox jumps over the lazy dog."}
        return orjson.dumps(body)
    body = {
        "model": model(target, kind),
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 64,
    }
    if kind.streamed:
        # The upstream always sends its usage chunk; asking for it keeps every target's answer the same size.
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)
