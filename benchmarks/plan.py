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
GRPC_ECHO = "grpc-echo"


class Kind(enum.Enum):
    CHAT = "chat"
    STREAM = "stream"
    EMBEDDINGS = "embeddings"
    #: streams paced 5 ms a chunk, one at a time, for time to first byte
    PACED = "paced stream (TTFB)"


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
        return self.server in (LLMGW, LLMGW_2)


DIRECT = Target("direct (upstream)", UPSTREAM, Front.REST)
REFERENCE_PROXY = Target("reference proxy", REFERENCE, Front.REST)
LLMGW_REST = Target("llmgw REST", LLMGW, Front.REST)
LLMGW_GRPC = Target("llmgw gRPC", LLMGW, Front.GRPC)
LLMGW_REST_2 = Target("llmgw REST, 2 workers", LLMGW_2, Front.REST)
LLMGW_GRPC_2 = Target("llmgw gRPC, 2 workers", LLMGW_2, Front.GRPC)
BARE_GRPC = Target("bare grpclib echo", GRPC_ECHO, Front.GRPC)
TARGETS = (DIRECT, REFERENCE_PROXY, LLMGW_REST, BARE_GRPC, LLMGW_GRPC, LLMGW_REST_2, LLMGW_GRPC_2)


@dataclass(frozen=True, slots=True)
class Row:
    target: Target
    kind: Kind
    concurrency: int


@dataclass(frozen=True, slots=True)
class Plan:
    concurrencies: tuple[int, ...] = (1, 32, 128)
    #: (kind, concurrency) pairs also run against llmgw with 2 workers
    workers_rows: tuple[tuple[Kind, int], ...] = (
        (Kind.CHAT, 32),
        (Kind.STREAM, 32),
        (Kind.CHAT, 128),
        (Kind.STREAM, 128),
        (Kind.EMBEDDINGS, 128),
    )

    def round(self, index: int) -> list[Row]:
        """One round: for each kind and concurrency every target in turn, the order rotated per round."""
        rows: list[Row] = []
        for kind in (Kind.CHAT, Kind.STREAM, Kind.EMBEDDINGS, Kind.PACED):
            for concurrency in self.concurrencies if kind is not Kind.PACED else (1,):
                targets = _targets(kind, concurrency, (kind, concurrency) in self.workers_rows)
                shift = index % len(targets)
                rows.extend(Row(target, kind, concurrency) for target in targets[shift:] + targets[:shift])
        return rows


def _targets(kind: Kind, concurrency: int, with_workers: bool) -> list[Target]:
    """In a cyclic order where one server's rows rarely follow each other (see `Bench.measure`)."""
    grpc = kind is not Kind.EMBEDDINGS  # the issue asks for gRPC unary and streamed chat
    candidates = [
        (DIRECT, True),
        (LLMGW_REST, True),
        (LLMGW_REST_2, with_workers),
        (REFERENCE_PROXY, True),
        (LLMGW_GRPC, grpc),
        (BARE_GRPC, grpc and kind is not Kind.PACED),
        (LLMGW_GRPC_2, grpc and with_workers),
    ]
    return [target for target, wanted in candidates if wanted]


def model(target: Target, kind: Kind) -> str:
    """The model a target is asked for: upstream names directly, catalog ids through llmgw."""
    name = {Kind.CHAT: "chat", Kind.STREAM: "chat", Kind.EMBEDDINGS: "embed", Kind.PACED: "paced"}[kind]
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
    if kind in (Kind.STREAM, Kind.PACED):
        # The upstream always sends its usage chunk; asking for it keeps every target's answer the same size.
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)
