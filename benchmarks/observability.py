"""What metrics and traces add to a request's CPU (issue 16: metrics ≤ 0.03 ms a request; tracing's cost
reported as it is).

Three `llmgw serve` processes on one benchmark upstream, alike but for their telemetry:

- **metrics off**: `[metrics] enabled = false` (no tracing);
- **metrics on**: the default (`/metrics` on the health port, scraped once a second during the load, as
  Prometheus would, at a far shorter interval than its usual 15 s);
- **metrics + tracing**: metrics on and every request traced (`sample_ratio = 1`), exported over OTLP/HTTP
  to a collector stub in this process that takes and drops the spans.

Each round loads the three side by side on each row, in an order that rotates between rounds; a row's
figure is the server process's CPU (user + system, from /proc, the exporter's thread included) over the
requests the upstream saw. The median over rounds of (on - off) per request decides.

    python -m benchmarks.observability                       # writes benchmarks/OBSERVABILITY.md
    python -m benchmarks.observability --rounds 3 --duration 1 --output /tmp/obs.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from benchmarks.grpc_load import LoadProcess
from benchmarks.machine import commit, describe
from benchmarks.plan import LLMGW, LLMGW_NO_METRICS, LLMGW_TRACING, UPSTREAM, Front, Kind, Row, Target
from benchmarks.processes import HOST, Server, start_llmgw, start_upstream, stop
from benchmarks.rawhttp import Connection
from benchmarks.runner import Bench, Sample
from benchmarks.runner import Settings as BenchSettings

HERE = Path(__file__).parent
REPO_ROOT = HERE.parent
#: µs of CPU metrics may add to a request
METRICS_LIMIT_US = 30.0
VARIANTS = (
    ("metrics off", LLMGW_NO_METRICS),
    ("metrics on", LLMGW),
    ("metrics + tracing", LLMGW_TRACING),
)
ROWS = (
    (Front.REST, Kind.CHAT, 32),
    (Front.REST, Kind.PACED_STREAM, 32),
    (Front.GRPC, Kind.CHAT, 32),
    (Front.REST, Kind.CHAT, 1),
)


class Collector:
    """An OTLP/HTTP traces endpoint that accepts every export and counts the bytes."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self.port = 0

    async def _take(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.exports += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Collector]:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()


async def scrape_while(server: Server, stop: asyncio.Event) -> int:
    """Scrape `server`'s /metrics once a second until `stop`; how many scrapes."""
    scrapes = 0
    while not stop.is_set():
        async with asyncio.timeout(10), Connection(HOST, server.health_port) as connection:
            answer = await connection.request("GET", "/metrics")
        if answer.status != 200:
            raise RuntimeError(f"{server.name}: GET /metrics answered {answer.status}")
        scrapes += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return scrapes


async def measure(bench: Bench, row: Row, round_index: int, scrape: bool) -> Sample:
    server = bench.servers[row.target.server]
    stop_scraping = asyncio.Event()
    scraper = asyncio.create_task(scrape_while(server, stop_scraping)) if scrape else None
    try:
        sample = await bench.measure(row, round_index)
    finally:
        stop_scraping.set()
        if scraper is not None:
            await scraper
    await bench.finish()
    return sample


async def run(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-observability-"))
    servers: dict[str, Server] = {}
    grpc: LoadProcess | None = None
    results: dict[tuple[Row, str], list[float]] = {}
    async with Collector().running() as collector:
        try:
            servers[UPSTREAM] = await start_upstream(workdir)
            tracing = f'\n[tracing]\notlp_endpoint = "http://{HOST}:{collector.port}"\nsample_ratio = 1.0\n'
            extras = {LLMGW_NO_METRICS: "\n[metrics]\nenabled = false\n", LLMGW: "", LLMGW_TRACING: tracing}
            for _, name in VARIANTS:
                servers[name] = await start_llmgw(workdir, servers[UPSTREAM], name, extra_config=extras[name])
            grpc = await LoadProcess.start(str(REPO_ROOT))
            bench = Bench(servers, grpc, workdir, BenchSettings(duration=args.duration))
            for round_index in range(args.rounds):
                for front, kind, concurrency in ROWS:
                    order = list(VARIANTS)
                    shift = round_index % len(order)
                    for label, name in order[shift:] + order[:shift]:
                        row = Row(Target(f"llmgw {front.value}, {label}", name, front), kind, concurrency)
                        sample = await measure(bench, row, round_index, scrape=name != LLMGW_NO_METRICS)
                        us = sample.server_ms_per_request * 1000
                        results.setdefault((Row(Target("", "", front), kind, concurrency), label), []).append(
                            us
                        )
                        print(
                            f"[round {round_index + 1}/{args.rounds}] {row.target.label:34} {kind.value[:18]:18} "
                            f"c{concurrency:<4} {us:7.1f} µs/request  {sample.load.requests} requests",
                            flush=True,
                        )
        finally:
            if grpc is not None:
                await grpc.close()
            for server in reversed(list(servers.values())):
                stop(server)
            shutil.rmtree(workdir, ignore_errors=True)
        exported = (collector.exports, collector.bytes)
    return render(results, args, exported)


def render(
    results: dict[tuple[Row, str], list[float]], args: argparse.Namespace, exported: tuple[int, int]
) -> str:
    lines = [
        "# Metrics and tracing: added CPU per request",
        "",
        f"Measured {_now()} on {describe()}, commit {commit()}, by `python -m benchmarks.observability` "
        f"({args.rounds} rounds of {args.duration:g}-s rows, the three servers side by side in rotating order).",
        "",
        "Server CPU (user + system) per request, median of the rounds; *added* is the median over rounds of "
        "each round's difference to metrics off, with the rounds' range. Metrics on: scraped once a second "
        "during each row. Tracing: every request traced, exported over OTLP/HTTP to a local collector stub "
        f"({exported[0]} exports, {exported[1] / 1e6:.1f} MB in all).",
        "",
        "| row | metrics off µs | metrics on µs | added by metrics µs (rounds) | limit | metrics + tracing µs "
        "| added by tracing over metrics µs (rounds) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    verdicts = []
    for front, kind, concurrency in ROWS:
        key = Row(Target("", "", front), kind, concurrency)
        off, on, traced = (results[(key, label)] for label, _ in VARIANTS)
        metrics_added = [b - a for a, b in zip(off, on, strict=True)]
        tracing_added = [c - b for b, c in zip(on, traced, strict=True)]
        added = statistics.median(metrics_added)
        met = added <= METRICS_LIMIT_US
        verdicts.append(met)
        lines.append(
            f"| {front.value} {kind.value} c{concurrency} | {statistics.median(off):.1f} | "
            f"{statistics.median(on):.1f} | {added:+.1f} ({min(metrics_added):+.1f}..{max(metrics_added):+.1f}) | "
            f"≤ {METRICS_LIMIT_US:.0f}: {'met' if met else 'not met'} | {statistics.median(traced):.1f} | "
            f"{statistics.median(tracing_added):+.1f} ({min(tracing_added):+.1f}..{max(tracing_added):+.1f}) |"
        )
    lines += [
        "",
        "Each observer's own CPU per request, in-process (`observer_costs`: no load, no noise):",
        "",
    ]
    lines += [f"- `{label}.finished`: {us:.1f} µs" for label, us in observer_costs()]
    lines += [
        "",
        f"Metrics target (≤ {METRICS_LIMIT_US:.0f} µs a request on every row): "
        f"{'met' if all(verdicts) else 'not met'}.",
        "",
    ]
    return "\n".join(lines)


def observer_costs(calls: int = 20_000) -> list[tuple[str, float]]:
    """Each observer's own CPU per finished request, in this process (no I/O, no noise from the load):
    a completed chat record of one attempt through `Metrics.finished` and `Tracing.finished` (spans
    handed to a processor that drops them: the exporter's work is in the load rows above)."""
    import time

    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    from llmgw.application.tracking import RequestContext, Tracker
    from llmgw.domain.generation import Attempt, GenerationKind, GenerationRecord, GenerationStatus
    from llmgw.infrastructure.config.settings import TracingSettings
    from llmgw.infrastructure.metrics import Metrics
    from llmgw.infrastructure.tracing import Tracing, provider_with

    class Drop(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            pass

    record = GenerationRecord(
        id="gen-0",
        request_id="r",
        kind=GenerationKind.CHAT,
        model="bench/chat",
        provider="bench",
        upstream_model="chat",
        created_at=time.time(),
        streamed=False,
        status=GenerationStatus.COMPLETED,
        prompt_tokens=12,
        completion_tokens=30,
        total_tokens=42,
        cost_usd=0.00005,
        latency_ms=12.0,
        time_to_first_token_ms=12.0,
        attempts=(Attempt("bench", "chat", "bench/chat", "completed", duration_ms=11.0),),
    )
    tracker = Tracker(
        "gen-0", "bench/chat", RequestContext("r"), streamed=False, user="", body={"model": "x"}
    )
    tracker.attempt_starts.append(time.perf_counter())
    tracing = Tracing(provider_with(TracingSettings(), Drop()))
    costs = []
    for label, observer in (("metrics", Metrics(catalog=["bench/chat"])), ("tracing", tracing)):
        observer.finished(record, tracker)
        started = time.process_time()
        for _ in range(calls):
            observer.finished(record, tracker)
        costs.append((label, (time.process_time() - started) / calls * 1e6))
    return costs


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of load per row")
    parser.add_argument("--output", type=Path, default=HERE / "OBSERVABILITY.md")
    args = parser.parse_args()
    text = asyncio.run(run(args))
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
