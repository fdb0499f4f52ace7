"""`python -m benchmarks`: start the fake upstream, the reference proxy and llmgw (one and two workers, one
with the aiohttp transport, one with auth on and one with auth and limits on, its counters in Redis),
measure interleaved rounds of every row, write `benchmarks/RESULTS.md`; `--profile` adds a profile."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from benchmarks import machine, procfs, profiling, report, wrk
from benchmarks.grpc_load import LoadProcess
from benchmarks.plan import (
    GRPC_ECHO,
    LLMGW,
    LLMGW_2,
    LLMGW_AIOHTTP,
    LLMGW_AUTH,
    LLMGW_LIMITS,
    REFERENCE,
    UPSTREAM,
    Plan,
)
from benchmarks.processes import (
    LIMITED_KEY_REQUEST,
    REPO_ROOT,
    Server,
    public_url,
    redis_unanswered,
    start_grpc_echo,
    start_llmgw,
    start_reference,
    start_upstream,
    stop,
)
from benchmarks.runner import Bench, Settings
from benchmarks.summary import Summaries, judge

RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
PROFILE = REPO_ROOT / "benchmarks" / "PROFILE.md"
PROFILE_BEFORE = REPO_ROOT / "benchmarks" / "PROFILE-before.md"
#: where the limits on llmgw keeps its counters (`[cache] redis_url`), unless LLMGW_BENCH_REDIS_URL says
REDIS_URL = "redis://127.0.0.1:6379/0"
# Five rounds, not three: on a shared 2-core machine one server's CPU per request moves by a third between
# identical rows seconds apart (the reference proxy's REST stream at c128, eight 4-s rows: 0.30-0.42 ms),
# and a ratio of two such rows moves more; the median of five rounds' ratios is steadier than of three.
# Rows of 1 s instead of 1.25 kept the run near seven minutes; the paced stream, aiohttp transport, auth on
# and limits on rows bring it near twelve.
ROUNDS = 5
QUICK = Settings(duration=0.35, warmup=0.1, settle=0.1, ttfb_samples=6, ttfb_warmup=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="one short round (about a minute), for development"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds of load per row (default 1, --quick 0.35)")
    parser.add_argument("--profile", action="store_true", help="after the rounds, profile llmgw under load")
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only profile: write PROFILE.md and RESULTS.md's Profile section",
    )
    parser.add_argument(
        "--profile-seconds", type=int, default=5, help="seconds per profiled load (default 5)"
    )
    parser.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"default {RESULTS.relative_to(REPO_ROOT)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SQLite file)")
    return parser


def main() -> int:
    args = _parser().parse_args()
    if not wrk.available():
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else Settings()
    if args.duration:
        settings = dataclasses.replace(settings, duration=args.duration)
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    return uvloop.run(_run(args, settings, rounds))


async def _run(args: argparse.Namespace, settings: Settings, rounds: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    print(f"work directory (logs, SQLite): {workdir}", flush=True)
    started, busy_before = time.monotonic(), procfs.machine_busy_seconds()
    servers: dict[str, Server] = {}
    grpc: LoadProcess | None = None
    keep = args.keep
    try:
        skipped = await _start(workdir, servers, full=not args.profile_only)
        grpc = await LoadProcess.start(str(REPO_ROOT))
        bench = Bench(servers, grpc, workdir, settings)
        if args.profile_only:
            return await _profile_only(bench, args)
        plan = Plan(missing=frozenset(skipped))
        coverage = await _rounds(bench, plan, rounds)
        final_peaks = {name: procfs.peak_memory(server.pid) for name, server in servers.items()}
        profile = await _profile(bench, args) if args.profile else None
    except BaseException:
        keep = True  # the logs say what went wrong
        print(f"failed; the logs stay in {workdir}", file=sys.stderr)
        raise
    finally:
        if grpc is not None:
            await grpc.close()
        for server in reversed(list(servers.values())):
            stop(server)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info = report.RunInfo(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=machine.commit(),
        machine=machine.describe(),
        settings=settings,
        rounds=rounds,
        plan=plan,
        wall_seconds=time.monotonic() - started,
        machine_busy_s=procfs.machine_busy_seconds() - busy_before,
        own_cpu_s=_own_cpu(),
        final_peaks=final_peaks,
        coverage=coverage,
        skipped=skipped,
        redis_url=public_url(_redis_url()) if LLMGW_LIMITS in servers else "",
    )
    summaries = Summaries(bench.samples)
    args.output.write_text(
        report.render(
            summaries, judge(summaries, final_peaks), info, profile, report.before_profile(PROFILE_BEFORE)
        )
    )
    print(f"wrote {args.output}")
    return 0


async def _start(workdir: Path, servers: dict[str, Server], *, full: bool) -> dict[str, str]:
    """Start the servers into `servers`; the optional ones that did not start, with the reason."""
    servers[UPSTREAM] = await start_upstream(workdir)
    servers[LLMGW] = await start_llmgw(workdir, servers[UPSTREAM], LLMGW)
    if not full:
        return {}
    servers[REFERENCE] = await start_reference(workdir, servers[UPSTREAM])
    servers[LLMGW_2] = await start_llmgw(workdir, servers[UPSTREAM], LLMGW_2, workers=2)
    servers[GRPC_ECHO] = await start_grpc_echo(workdir)
    # Auth on: a key minted through the admin API once llmgw is ready; every request to it carries it.
    servers[LLMGW_AUTH] = await start_llmgw(workdir, servers[UPSTREAM], LLMGW_AUTH, auth=True)
    skipped = {}
    reason = await _start_limits(workdir, servers)
    if reason:
        print(f"{reason}\nthe limits on rows are left out", file=sys.stderr, flush=True)
        skipped[LLMGW_LIMITS] = reason
    try:
        servers[LLMGW_AIOHTTP] = await start_llmgw(
            workdir, servers[UPSTREAM], LLMGW_AIOHTTP, transport="aiohttp"
        )
    except RuntimeError as exc:
        # An llmgw without the `transport` key refuses the config: the run goes on without these rows.
        reason = f'llmgw did not start with `transport = "aiohttp"`: {_last_line(str(exc))}'
        print(f"{reason}\nthe aiohttp transport rows are left out", file=sys.stderr, flush=True)
        skipped[LLMGW_AIOHTTP] = reason
    return skipped


async def _start_limits(workdir: Path, servers: dict[str, Server]) -> str | None:
    """Limits on: auth on, `[cache] redis_url`, and a key whose limits are all checked and never refuse.
    Without a Redis that answers, or an llmgw that starts with it, the run goes on without these rows:
    the reason why."""
    url = _redis_url()
    reason = await redis_unanswered(url)
    if reason:
        return f"limits on rows: {reason} (LLMGW_BENCH_REDIS_URL sets the URL)"
    try:
        servers[LLMGW_LIMITS] = await start_llmgw(
            workdir,
            servers[UPSTREAM],
            LLMGW_LIMITS,
            auth=True,
            key_request=LIMITED_KEY_REQUEST,
            redis_url=url,
        )
    except RuntimeError as exc:
        return f"limits on rows: llmgw did not start with Redis at {public_url(url)}: {_last_line(str(exc))}"
    return None


def _redis_url() -> str:
    return os.environ.get("LLMGW_BENCH_REDIS_URL") or REDIS_URL


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


async def _rounds(bench: Bench, plan: Plan, rounds: int) -> dict[str, float]:
    """Measure every row `rounds` times; for each server but the upstream, the share of its CPU over the
    rounds that its rows' windows account for."""
    servers = {name: server for name, server in bench.servers.items() if name != UPSTREAM}
    before = {name: procfs.cpu_seconds(server.pid) for name, server in servers.items()}
    for index in range(rounds):
        rows = plan.round(index)
        for number, row in enumerate(rows, 1):
            started = time.monotonic()
            sample = await bench.measure(row, index)
            load = sample.load
            print(
                f"[round {index + 1}/{rounds} {number:2}/{len(rows)}] {row.target.label:30} "
                f"{row.kind.value:38} c{row.concurrency:<4} {load.requests / load.seconds:8.0f} req/s "
                f"p50 {load.p50_ms:8.3f} ms  p99 {load.p99_ms:8.3f} ms  errors {load.errors}  "
                f"({time.monotonic() - started:.1f} s)",
                flush=True,
            )
    await bench.finish()
    return _coverage(bench, servers, before)


def _coverage(bench: Bench, servers: dict[str, Server], before: dict[str, float]) -> dict[str, float]:
    coverage = {}
    for name, server in servers.items():
        spent = procfs.cpu_seconds(server.pid) - before[name]
        counted = sum(s.server_cpu_s for s in bench.samples if s.row.target.server == name)
        if spent > 0:
            coverage[name] = counted / spent
    return coverage


async def _profile(bench: Bench, args: argparse.Namespace) -> str:
    print("profiling llmgw ...", flush=True)
    text = await profiling.profile(bench, args.profile_seconds, args.profiler)
    PROFILE.write_text(f"# llmgw profile\n\nWritten by `python -m benchmarks --profile`.\n\n{text}\n")
    print(f"wrote {PROFILE}")
    return text


async def _profile_only(bench: Bench, args: argparse.Namespace) -> int:
    text = await _profile(bench, args)
    if report.replace_profile(args.output, text):
        print(f"updated the Profile section of {args.output}")
    return 0


def _own_cpu() -> float:
    """CPU of this process and every child it has waited for (servers, wrk, the gRPC driver)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
