"""Measure rows: load a target, read the server tree's CPU and the upstream's request count around it.

CPU per request = the server process tree's utime+stime over the row / the requests the upstream received
in it. The window opens before the warm-up and both the CPU and the request count include it. llmgw
writes generation records in the background (at least every second), so its CPU window stays open until
that writer has run: it closes `deferred_work` seconds after the load, while other targets are measured.

Requests to a server with an API key (`Server.api_key`: llmgw with auth on) carry it, as
`Authorization: Bearer <key>` (REST) or the same gRPC metadata; a refused request is an error of the row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procfs, wrk
from benchmarks.grpc_load import LoadProcess
from benchmarks.latency import percentile
from benchmarks.plan import UPSTREAM, Front, Kind, Row, Target, model, rest_body, rest_path
from benchmarks.processes import HOST, Server, check_alive
from benchmarks.rawhttp import Connection, call_json
from benchmarks.wrk import LoadResult


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float = 1.0
    warmup: float = 0.2
    #: after a load, time for abandoned in-flight requests to finish before the counts are read
    settle: float = 0.15
    ttfb_samples: int = 20
    ttfb_warmup: int = 2
    #: bounds the requests one load may send (wrk and gRPC alike), whatever its time
    max_requests_per_second: int = 100_000


@dataclass
class Sample:
    row: Row
    round: int
    load: LoadResult
    upstream_requests: int
    upstream_cpu_s: float
    server_cpu_s: float = math.nan
    peak: procfs.PeakMemory | None = None

    @property
    def server_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.upstream_requests if self.upstream_requests else math.nan

    @property
    def upstream_ms_per_request(self) -> float:
        return 1000 * self.upstream_cpu_s / self.upstream_requests if self.upstream_requests else math.nan


@dataclass
class _Window:
    sample: Sample
    server: Server
    cpu_start: float
    closes_at: float


@dataclass
class Bench:
    servers: dict[str, Server]
    grpc: LoadProcess
    workdir: Path
    settings: Settings = field(default_factory=Settings)
    samples: list[Sample] = field(default_factory=list)
    _open: dict[str, _Window] = field(default_factory=dict)
    _scripts: dict[tuple[Target, Kind, str], Path] = field(default_factory=dict)

    async def measure(self, row: Row, round_index: int) -> Sample:
        server = self.servers[row.target.server]
        upstream = self.servers[UPSTREAM]
        check_alive(server)
        await self._close_windows(due_only=True)
        await self._close_window(server.name)
        count_before = await self._upstream_count()
        upstream_before = procfs.cpu_seconds(upstream.pid)
        server_before = upstream_before if server is upstream else procfs.cpu_seconds(server.pid)
        warmup = await self._load(row, warmup=True)
        load = await self._load(row, warmup=False)
        await asyncio.sleep(self.settings.settle)
        check_alive(server)
        requests = await self._upstream_count() - count_before
        if not server.uses_upstream:  # nothing reaches the upstream: count what the client completed
            requests = warmup.requests + warmup.errors + load.requests + load.errors
        sample = Sample(
            row=row,
            round=round_index,
            load=_with_errors(load, warmup.errors),
            upstream_requests=requests,
            upstream_cpu_s=procfs.cpu_seconds(upstream.pid) - upstream_before,
        )
        window = _Window(sample, server, server_before, time.monotonic() + server.deferred_work)
        if server.deferred_work:
            self._open[server.name] = window
        else:
            self._close(window)
        self.samples.append(sample)
        return sample

    async def finish(self) -> None:
        await self._close_windows(due_only=False)

    async def _close_windows(self, *, due_only: bool) -> None:
        for name, window in list(self._open.items()):
            if not due_only or window.closes_at <= time.monotonic():
                await self._close_window(name)

    async def _close_window(self, name: str) -> None:
        window = self._open.pop(name, None)
        if window is not None:
            await asyncio.sleep(max(0.0, window.closes_at - time.monotonic()))
            self._close(window)

    def _close(self, window: _Window) -> None:
        window.sample.server_cpu_s = procfs.cpu_seconds(window.server.pid) - window.cpu_start
        window.sample.peak = procfs.peak_memory(window.server.pid)

    async def _upstream_count(self) -> int:
        stats = await call_json(HOST, self.servers[UPSTREAM].port, "/stats")
        return int(stats["total"])

    async def _load(self, row: Row, *, warmup: bool) -> LoadResult:
        settings = self.settings
        if row.kind is Kind.TTFB:
            samples = settings.ttfb_warmup if warmup else settings.ttfb_samples
            server = self.servers[row.target.server]
            if row.target.front is Front.GRPC:
                return await self._grpc_ttfb(row, server, samples)
            return await _rest_ttfb(
                server.port, rest_path(row.kind), rest_body(row.target, row.kind), samples, server.headers
            )
        return await self.load(row, settings.warmup if warmup else settings.duration)

    async def load(self, row: Row, seconds: float, server: Server | None = None) -> LoadResult:
        """Load a row other than TTFB for `seconds`, on `server` instead of the row's own if given."""
        server = server or self.servers[row.target.server]
        if row.target.front is Front.GRPC:
            return await self._grpc_load(row, server, seconds)
        url = f"http://{HOST}:{server.port}{rest_path(row.kind)}"
        return await wrk.run(url, self._script(row.target, row.kind, server), row.concurrency, seconds)

    def _script(self, target: Target, kind: Kind, server: Server) -> Path:
        key = (target, kind, server.api_key)
        if key not in self._scripts:
            name = f"{server.name}-{target.front.name}-{kind.name}".lower()
            # One script serves every load of the row (warm-up, measurement, profiling): bound it for the longest.
            cap = int(self.settings.max_requests_per_second * max(self.settings.duration, 10.0))
            body = rest_body(target, kind)
            self._scripts[key] = wrk.write_script(self.workdir, name, body, cap, server.headers)
        return self._scripts[key]

    async def _grpc_load(self, row: Row, server: Server, seconds: float) -> LoadResult:
        command = {
            "op": "load",
            "host": HOST,
            "port": server.grpc_port,
            "model": model(row.target, row.kind),
            "stream": row.kind.streamed,
            "concurrency": row.concurrency,
            "seconds": seconds,
            "max_requests": int(seconds * self.settings.max_requests_per_second) + 100,
            "metadata": _metadata(server),
        }
        answer = await self.grpc.ask(command, within=seconds + 90)
        if answer["errors"]:
            print(
                f"  {row.target.label} {row.kind.value}: {answer['errors']} errors, {answer['error_kinds']}"
            )
        return LoadResult(
            answer["requests"],
            answer["errors"],
            answer["seconds"],
            _number(answer["p50_ms"]),
            _number(answer["p99_ms"]),
            answer["client_cpu_s"],
        )

    async def _grpc_ttfb(self, row: Row, server: Server, samples: int) -> LoadResult:
        command = {
            "op": "ttfb",
            "host": HOST,
            "port": server.grpc_port,
            "model": model(row.target, row.kind),
            "samples": samples,
            "metadata": _metadata(server),
        }
        started = time.perf_counter()
        answer = await self.grpc.ask(command, within=samples * 2 + 60)
        if answer["errors"]:
            print(
                f"  {row.target.label} {row.kind.value}: {answer['errors']} errors, {answer['error_kinds']}"
            )
        return _ttfb_result(answer["samples"], answer["errors"], time.perf_counter() - started)


def _metadata(server: Server) -> dict[str, str]:
    """gRPC metadata: the server's headers with lower-case names."""
    return {name.lower(): value for name, value in server.headers.items()}


async def _rest_ttfb(
    port: int, path: str, body: bytes, samples: int, headers: Mapping[str, str] | None = None
) -> LoadResult:
    """One paced stream at a time on a keep-alive connection: time to the first body byte."""
    firsts: list[float] = []
    errors = 0
    started = time.perf_counter()
    async with asyncio.timeout(samples * 2 + 30), Connection(HOST, port) as connection:
        for _ in range(samples):
            answer = await connection.request("POST", path, body, headers)
            if answer.status == 200 and b"[DONE]" in answer.body:
                firsts.append(answer.first_byte)
            else:
                errors += 1
    return _ttfb_result(firsts, errors, time.perf_counter() - started)


def _ttfb_result(firsts: list[float], errors: int, seconds: float) -> LoadResult:
    return LoadResult(
        len(firsts), errors, seconds, percentile(firsts, 0.5) * 1000, percentile(firsts, 0.99) * 1000
    )


def _number(value: float | None) -> float:
    """JSON has no NaN: orjson writes it as null."""
    return math.nan if value is None else value


def _with_errors(load: LoadResult, more: int) -> LoadResult:
    return dataclasses.replace(load, errors=load.errors + more)
