"""`python -m benchmarks.soak`: a soak run of llmgw under injected faults and clients that leave.

It starts `benchmarks.fault_upstream` (three ports: providers `east`, `west`, `backup`) and `llmgw serve`
(one worker, SQLite in a temporary directory, its log in a file) as real processes, with model `soak/chat`
served by two deployments (east, west) and falling back to `soak/backup`, and `soak/embed` likewise. It sends
a warm-up, measures the gateway at rest, sends the run (20,000 mixed requests at concurrency 32 by default),
looks a sample of generation ids up on both fronts, measures it at rest again, stops it with SIGTERM and
reads its SQLite file and its log. It writes `benchmarks/SOAK.md`; the exit status is 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import processes, soak_probe, soak_report, soak_traffic
from benchmarks.processes import HOST, REPO_ROOT, free_port
from benchmarks.rawhttp import call_json
from benchmarks.soak_probe import Holding
from benchmarks.soak_report import Settings

OUTPUT = REPO_ROOT / "benchmarks" / "SOAK.md"
PROVIDERS = ("east", "west", "backup")
#: RSS, fds and upstream connections are sampled this often during the run
SAMPLE_EVERY = 0.25
_READY_TIMEOUT = 60.0
# As benchmarks/processes.py: `python -m llmgw` under a command line a broad `pkill -f "llmgw serve"` misses.
_LLMGW_MAIN = "from llmgw.cli import main; raise SystemExit(main())"
_NOT_PASSED = frozenset({"CONFIG_PATH", "MODE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"})


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Ports:
    upstream: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PROVIDERS})
    rest: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)


def llmgw_config(workdir: Path, ports: Ports, grace: float) -> str:
    providers = "".join(
        f"""
[llm.providers.{name}]
kind = "openai"
base_url = "http://{HOST}:{port}/v1"
timeout = "2s"
connect_timeout = "1s"
first_token_timeout = "400ms"
idle_timeout = "400ms"
max_connections = 64
"""
        for name, port in ports.upstream.items()
    )
    return f"""\
[log]
level = "info"
format = "text"

[http]
listen = "{HOST}:{ports.rest}"

[grpc]
listen = "{HOST}:{ports.grpc}"

[health]
listen = "{HOST}:{ports.health}"

[storage]
url = "sqlite:///{workdir / "soak.db"}"

[auth]
enabled = false  # the soak measures faults, not keys

[server]
workers = 1
shutdown_grace = "{grace:g}s"

[llm.retry]
max_attempts = 3
backoff = "10ms"
backoff_max = "50ms"
retry_after_max = "1s"

[llm.circuit]
failures = 5
cooldown = "2s"
{providers}
[[llm.models]]
id = "soak/chat"
capabilities = ["chat"]
pricing = {{ prompt = 0.5, completion = 1.5 }}
fallbacks = ["soak/backup"]
[[llm.models.deployments]]
provider = "east"
upstream_model = "chat-east"
[[llm.models.deployments]]
provider = "west"
upstream_model = "chat-west"

[[llm.models]]
id = "soak/backup"
provider = "backup"
upstream_model = "chat-backup"
capabilities = ["chat"]
pricing = {{ prompt = 1.0, completion = 3.0 }}

[[llm.models]]
id = "soak/embed"
capabilities = ["embeddings"]
pricing = {{ prompt = 0.1, completion = 0.0 }}
fallbacks = ["soak/backup-embed"]
[[llm.models.deployments]]
provider = "east"
upstream_model = "embed-east"
[[llm.models.deployments]]
provider = "west"
upstream_model = "embed-west"

[[llm.models]]
id = "soak/backup-embed"
provider = "backup"
upstream_model = "embed-backup"
capabilities = ["embeddings"]
pricing = {{ prompt = 0.2, completion = 0.0 }}
"""


def _spawn(name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None) -> Process:
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return Process(name, popen, log_path)


def start_upstream(workdir: Path, ports: Ports, keepalive: float) -> Process:
    listed = ",".join(str(port) for port in ports.upstream.values())
    command = [sys.executable, "-m", "benchmarks.fault_upstream", "--ports", listed]
    return _spawn("fault upstream", [*command, "--keepalive", str(keepalive)], workdir / "upstream.log")


def start_llmgw(workdir: Path, ports: Ports, grace: float) -> Process:
    config_dir = workdir / "config"
    config_dir.mkdir()
    (config_dir / "default.toml").write_text(llmgw_config(workdir, ports, grace))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LLMGW_") and not key.endswith("_API_KEY") and key.upper() not in _NOT_PASSED
    }
    command = [sys.executable, "-c", _LLMGW_MAIN, "serve", "--config-path", str(config_dir)]
    return _spawn("llmgw", command, workdir / "llmgw.log", env)


async def wait_ready(process: Process, port: int, path: str | None) -> None:
    def alive() -> None:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")

    await processes.wait_ready(process.name, port, path, alive=alive, tail=process.tail)


class Sampler:
    """Samples the gateway every `SAMPLE_EVERY` seconds while running."""

    def __init__(self, pid: int, upstream_ports: frozenset[int]) -> None:
        self._pid = pid
        self._ports = upstream_ports
        self.samples: list[Holding] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        started = time.monotonic()
        while True:
            self.samples.append(soak_probe.hold(self._pid, self._ports, time.monotonic() - started))
            await asyncio.sleep(SAMPLE_EVERY)


async def settle(
    pid: int, ports: frozenset[int], done: Callable[[Holding], bool], within: float
) -> tuple[Holding, float]:
    """Sample until `done` holds for a second in a row, or `within` seconds pass; the last sample and how
    long it took."""
    started = time.monotonic()
    held_since: float | None = None
    while True:
        now = time.monotonic()
        sample = soak_probe.hold(pid, ports, now - started)
        if done(sample):
            held_since = held_since if held_since is not None else now
            if now - held_since >= 1.0:
                return sample, now - started
        else:
            held_since = None
        if now - started > within:
            return sample, now - started
        await asyncio.sleep(0.1)


def _progress(total: int, started: float) -> Callable[[int], None]:
    step = max(total // 10, 1)

    def report(done: int) -> None:
        if done % step == 0 or done == total:
            elapsed = time.monotonic() - started
            print(f"  {done:6d}/{total} requests, {elapsed:6.1f} s, {done / elapsed:6.0f} req/s", flush=True)

    return report


async def _traffic(
    ports: Ports,
    specs: list[soak_traffic.Spec],
    concurrency: int,
    *,
    lookups: int,
    seed: int,
    sent: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[soak_traffic.Result], list[soak_traffic.Lookup], float]:
    """Send the requests through fresh clients, then `sent()`, look some ids up, close every client
    connection."""
    clients = soak_traffic.Clients(HOST, ports.rest, ports.grpc)
    try:
        started = time.monotonic()
        results = await soak_traffic.run(clients, specs, concurrency, _progress(len(specs), started))
        elapsed = time.monotonic() - started
        if sent is not None:
            await sent()
        known = [r.generation_id for r in results if r.generation_id]
        chosen = random.Random(seed).sample(known, min(lookups, len(known)))
        found = await soak_traffic.look_up(clients, chosen, concurrency) if chosen else []
    finally:
        await clients.close()
    return results, found, elapsed


async def stop_gateway(process: Process, grace: float) -> tuple[int | None, float]:
    """SIGTERM; the exit status (None if it had to be killed) and the seconds it took."""
    started = time.monotonic()
    process.popen.send_signal(signal.SIGTERM)
    limit = grace + 30.0
    while process.popen.poll() is None and time.monotonic() - started < limit:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    if process.popen.poll() is None:
        process.popen.kill()
        process.popen.wait()
        return None, elapsed
    return process.popen.returncode, elapsed


def read_records(path: Path) -> list[tuple[str, str, str, str, str, str]]:
    """(id, request_id, status, error_code, provider, attempts JSON) of every row of `generations`."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = "SELECT id, request_id, status, error_code, provider, attempts FROM generations"
        return list(db.execute(query))
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class Stopped:
    """What the run leaves for the report, once both processes have stopped."""

    run: soak_report.RunFigures
    upstream_seen: dict[str, Any]
    exit_status: int | None
    stop_seconds: float


async def _soak(settings: Settings, workdir: Path) -> Stopped:
    ports = Ports()
    upstream_ports = frozenset(ports.upstream.values())
    upstream: Process | None = None
    gateway: Process | None = None
    try:
        upstream = start_upstream(workdir, ports, settings.upstream_keepalive)
        await wait_ready(upstream, ports.upstream["east"], "/seen")
        gateway = start_llmgw(workdir, ports, settings.shutdown_grace)
        await wait_ready(gateway, ports.health, "/readyz")
        await wait_ready(gateway, ports.grpc, None)
        run = await _measure(settings, ports, gateway, upstream_ports)
        seen = await call_json(HOST, ports.upstream["east"], "/seen")
        print("stopping llmgw (SIGTERM) ...", flush=True)
        exit_status, stop_seconds = await stop_gateway(gateway, settings.shutdown_grace)
    finally:
        for process in (gateway, upstream):
            if process is not None:
                process.stop()
    return Stopped(run, seen, exit_status, stop_seconds)


async def _measure(
    settings: Settings, ports: Ports, gateway: Process, upstream_ports: frozenset[int]
) -> soak_report.RunFigures:
    pid = gateway.pid
    tag = f"{random.Random(settings.seed).getrandbits(24):06x}"
    warmup = soak_traffic.plan_requests(settings.warmup, settings.seed + 1, f"warm-{tag}")
    specs = soak_traffic.plan_requests(settings.requests, settings.seed, f"soak-{tag}")
    print(f"warm-up: {len(warmup)} requests at concurrency {settings.concurrency}", flush=True)
    warm_results, _, _ = await _traffic(ports, warmup, settings.concurrency, lookups=0, seed=settings.seed)
    idle, idle_seconds = await settle(
        pid, upstream_ports, lambda h: h.upstream == 0, settings.settle_max + settings.upstream_keepalive
    )
    print(f"at rest after warm-up: {_describe(idle)}", flush=True)
    sampler = Sampler(pid, upstream_ports)
    sampler.start()
    print(f"run: {len(specs)} requests at concurrency {settings.concurrency}", flush=True)
    busy_before = _cpu_seconds(pid)
    cpu = 0.0

    async def sent() -> None:
        nonlocal cpu
        cpu = _cpu_seconds(pid) - busy_before
        await sampler.stop()

    try:
        results, lookups, elapsed = await _traffic(
            ports, specs, settings.concurrency, lookups=settings.lookups, seed=settings.seed, sent=sent
        )
    finally:
        await sampler.stop()
    after, settle_seconds = await settle(
        pid,
        upstream_ports,
        lambda h: h.upstream <= idle.upstream and h.fds <= idle.fds,
        settings.settle_max,
    )
    print(f"at rest after the run ({settle_seconds:.1f} s): {_describe(after)}", flush=True)
    return soak_report.RunFigures(
        warmup=warm_results,
        results=results,
        lookups=lookups,
        samples=sampler.samples,
        idle=idle,
        idle_seconds=idle_seconds,
        after=after,
        settle_seconds=settle_seconds,
        run_seconds=elapsed,
        gateway_cpu_seconds=cpu,
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _describe(holding: Holding) -> str:
    return (
        f"RSS {holding.rss_mib:.1f} MiB, {holding.fds} fds {holding.fd_types}, "
        f"{holding.upstream} upstream connections {holding.upstream_states or ''}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests in the run (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests at once (default 32)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests (default 500)")
    parser.add_argument("--lookups", type=int, default=1000, help="generation ids looked up (default 1000)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the request mix (default 12)")
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help=f"default {OUTPUT.relative_to(REPO_ROOT)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SQLite file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings(
        requests=args.requests,
        concurrency=args.concurrency,
        warmup=args.warmup,
        seed=args.seed,
        lookups=args.lookups,
    )
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-soak-"))
    print(f"work directory (logs, SQLite): {workdir}", flush=True)
    try:
        stopped = uvloop.run(_soak(settings, workdir))
    except BaseException:
        print(f"failed; the logs stay in {workdir}", file=sys.stderr)
        raise
    report = soak_report.Report(
        settings=settings,
        run=stopped.run,
        records=read_records(workdir / "soak.db"),
        upstream_seen=stopped.upstream_seen,
        exit_status=stopped.exit_status,
        stop_seconds=stopped.stop_seconds,
        log_text=(workdir / "llmgw.log").read_text(errors="replace"),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    args.output.write_text(report.render())
    print(report.summary())
    print(f"wrote {args.output}")
    if args.keep or not report.passed:
        print(f"the logs and the SQLite file stay in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
