"""Write `benchmarks/RESULTS.md`: machine and commit, the table, targets, auth on vs off, limits on vs off,
1 vs 2 workers, method, profile."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.plan import (
    LLMGW_GRPC,
    LLMGW_GRPC_2,
    LLMGW_GRPC_AIOHTTP,
    LLMGW_GRPC_AUTH,
    LLMGW_GRPC_LIMITS,
    LLMGW_LIMITS,
    LLMGW_REST,
    LLMGW_REST_2,
    LLMGW_REST_AIOHTTP,
    LLMGW_REST_AUTH,
    LLMGW_REST_LIMITS,
    TARGETS,
    UPSTREAM,
    Kind,
    Plan,
)
from benchmarks.procfs import PeakMemory
from benchmarks.runner import Settings
from benchmarks.summary import (
    AIOHTTP,
    AUTH_LIMIT_US,
    AUTH_PAIRS,
    LIMITS_CPU_LIMIT_US,
    LIMITS_P50_LIMIT_MS,
    LIMITS_PAIRS,
    Summaries,
    Summary,
    Verdict,
)

PROFILE_START = "<!-- profile:start -->"
PROFILE_END = "<!-- profile:end -->"
PROFILE_PLACEHOLDER = "Not profiled in this run: `python -m benchmarks --profile` fills this section."

_KIND_TITLES = {
    Kind.CHAT: "Chat completion (JSON)",
    Kind.PACED_STREAM: "Streamed chat, paced (SSE, 20 chunks + usage chunk, each its own write, 1 ms apart)",
    Kind.BURST_STREAM: "Streamed chat, burst (SSE, 20 chunks + usage chunk in one write)",
    Kind.EMBEDDINGS: "Embeddings (one input, 1536 dims)",
    Kind.TTFB: "Time to first byte: paced stream (20 chunks 1 ms apart), one at a time",
}


@dataclass(frozen=True, slots=True)
class RunInfo:
    date: str
    commit: str
    machine: list[tuple[str, str]]
    settings: Settings
    rounds: int
    plan: Plan
    wall_seconds: float
    #: core-seconds the whole machine was busy during the run, and how many of them were ours
    machine_busy_s: float
    own_cpu_s: float
    final_peaks: dict[str, PeakMemory]
    #: per server, the share of its CPU over the rounds that fell inside some row's window
    coverage: dict[str, float]
    #: optional servers that did not start, with the reason: their rows are missing
    skipped: dict[str, str]
    #: the Redis of the limits on rows, its password masked ("": those rows did not run)
    redis_url: str = ""


def _f(value: float, digits: int = 2, suffix: str = "") -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}{suffix}"


def _signed(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:+.{digits}f}"


def _peak(peak: PeakMemory | None) -> str:
    if peak is None:
        return "-"
    if peak.processes == 1:
        return f"{peak.total_mib:.0f}"
    return f"{peak.total_mib:.0f} ({peak.processes} procs, largest {peak.largest_mib:.0f})"


def _row_table(summaries: Summaries, kind: Kind) -> list[str]:
    latency = "TTFB" if kind is Kind.TTFB else "latency"
    lines = [
        f"| target | conc | req/s | p50 {latency} ms | p99 {latency} ms | +p50 ms | +p99 ms "
        "| server CPU ms/req | x reference | upstream CPU ms/req | peak RSS MiB | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for concurrency in summaries.concurrencies(kind):
        for target in TARGETS:
            summary = summaries.get(target, kind, concurrency)
            if summary is not None:
                lines.append(_row_line(summaries, summary))
    return lines


def _row_line(summaries: Summaries, s: Summary) -> str:
    added = summaries.added(s)
    if s.row.kind is Kind.TTFB:  # too few requests for CPU figures in 10 ms clock ticks
        cpu = "| - | - | -"
    else:
        ratio = _f(summaries.cpu_ratio(s), 2, "x")
        cpu = f"| **{_f(s.server_ms, 3)}** | {ratio} | {_f(s.upstream_ms, 3)}"
    return (
        f"| {s.row.target.label} | {s.row.concurrency} | {_f(s.rps, 0)} | {_f(s.p50_ms, 3)} | {_f(s.p99_ms, 3)} "
        f"| {_signed(added[0], 3)} | {_signed(added[1], 3)} {cpu} | {_peak(s.peak)} | {s.errors} |"
    )


def _ratio_table(summaries: Summaries) -> list[str]:
    concurrencies = summaries.concurrencies(Kind.CHAT)
    lines = [
        "| llmgw row | " + " | ".join(f"c{c}" for c in concurrencies) + " |",
        "|---|" + "--:|" * len(concurrencies),
    ]
    # The headline stream (paced) first; each auth on, limits on and aiohttp transport row under llmgw's
    # plain one.
    kinds = (Kind.CHAT, Kind.PACED_STREAM, Kind.BURST_STREAM, Kind.EMBEDDINGS)
    rest = (LLMGW_REST, LLMGW_REST_AUTH, LLMGW_REST_LIMITS, LLMGW_REST_AIOHTTP)
    grpc = (LLMGW_GRPC, LLMGW_GRPC_AUTH, LLMGW_GRPC_LIMITS, LLMGW_GRPC_AIOHTTP)
    for targets in (rest, grpc):
        for kind in kinds:
            for target in targets:
                cells = [summaries.get(target, kind, c) for c in concurrencies]
                if any(cells):
                    ratios = [_ratio_with_range(summaries, s) if s else "-" for s in cells]
                    lines.append(f"| {target.label} {kind.value} | " + " | ".join(ratios) + " |")
    return lines


def _ratio_with_range(summaries: Summaries, summary: Summary) -> str:
    """The median ratio, and with several rounds the lowest and highest round's: how far a verdict
    could move between runs."""
    median = _f(summaries.cpu_ratio(summary), 2, "x")
    ratios = summaries.cpu_ratios(summary)
    if len(ratios) < 2:
        return median
    return f"{median} ({min(ratios):.2f}-{max(ratios):.2f})"


def _verdict_table(verdicts: list[Verdict]) -> list[str]:
    lines = ["| target | limit | measured | verdict |", "|---|--:|---|---|"]
    for verdict in verdicts:
        digits = 1 if verdict.unit in ("MiB", "µs") else 3 if verdict.unit == "ms" else 2
        unit = verdict.unit if verdict.unit == "x" else f" {verdict.unit}"
        show = _signed if verdict.signed else _f
        label, beside = verdict.beside or ("", {})
        measured = ", ".join(
            f"{where} {show(value, digits)}{unit}"
            + (f" ({label} {show(beside[where], digits)}{unit})" if where in beside else "")
            for where, value in verdict.figures
        )
        state = {True: "**met**", False: "**not met**", None: "not measured"}[verdict.met]
        lines.append(f"| {verdict.name} | ≤ {verdict.limit:g}{unit} | {measured or '-'} | {state} |")
    return lines


def _auth_lines(summaries: Summaries, plan: Plan) -> list[str]:
    """Per auth on row: the server CPU per request with and without auth and what auth on added, the
    median of each round's difference (in parentheses: the lowest and highest round's)."""
    lines = [
        "| llmgw row | conc | CPU ms/req, auth off | CPU ms/req, auth on | auth on adds | limit | verdict "
        "| errors, auth on |",
        "|---|--:|--:|--:|---|--:|---|--:|",
    ]
    for auth, plain in AUTH_PAIRS:
        for kind, concurrency in plan.auth_rows:
            on, off = summaries.get(auth, kind, concurrency), summaries.get(plain, kind, concurrency)
            if on is None or off is None:
                continue
            added = summaries.added_cpu_us(on, plain)
            rounds = summaries.added_cpus_us(on, plain)
            spread = f" ({min(rounds):+.1f} to {max(rounds):+.1f})" if len(rounds) > 1 else ""
            met = None if math.isnan(added) else added <= AUTH_LIMIT_US
            state = {True: "**met**", False: "**not met**", None: "not measured"}[met]
            lines.append(
                f"| llmgw {auth.front.value} {kind.value} | {concurrency} | {_f(off.server_ms, 3)} "
                f"| {_f(on.server_ms, 3)} | {_signed(added, 1)} µs CPU/request{spread} "
                f"| ≤ {AUTH_LIMIT_US:g} µs | {state} | {on.errors} |"
            )
    return lines


def _limits_lines(summaries: Summaries, plan: Plan) -> list[str]:
    """Per limits on row: server CPU per request and p50 latency without limits (the auth on row) and with
    them, and what limits on added, the medians of each round's difference (in parentheses: the lowest
    and highest round's)."""
    lines = [
        "| llmgw row | conc | CPU ms/req, off | CPU ms/req, on | limits on add | verdict "
        "| p50 ms, off | p50 ms, on | limits on add | verdict | errors, limits on |",
        "|---|--:|--:|--:|---|---|--:|--:|---|---|--:|",
    ]
    for limited, plain in LIMITS_PAIRS:
        for kind, concurrency in plan.limits_rows:
            on, off = summaries.get(limited, kind, concurrency), summaries.get(plain, kind, concurrency)
            if on is None or off is None:
                continue
            cpu = _added(
                summaries.added_cpu_us(on, plain),
                summaries.added_cpus_us(on, plain),
                LIMITS_CPU_LIMIT_US,
                (1, "µs CPU/request"),
            )
            p50 = _added(
                summaries.added_p50_ms(on, plain),
                summaries.added_p50s_ms(on, plain),
                LIMITS_P50_LIMIT_MS,
                (3, "ms p50"),
            )
            lines.append(
                f"| llmgw {limited.front.value} {kind.value} | {concurrency} | {_f(off.server_ms, 3)} "
                f"| {_f(on.server_ms, 3)} | {cpu} | {_f(off.p50_ms, 3)} | {_f(on.p50_ms, 3)} | {p50} "
                f"| {on.errors} |"
            )
    return lines


def _added(median: float, rounds: list[float], limit: float, shown: tuple[int, str]) -> str:
    """Two cells: the median of the rounds' differences with their range (`shown`: digits and unit), and
    its verdict against `limit`."""
    digits, unit = shown
    spread = f" ({min(rounds):+.{digits}f} to {max(rounds):+.{digits}f})" if len(rounds) > 1 else ""
    met = None if math.isnan(median) else median <= limit
    state = {True: "**met**", False: "**not met**", None: "not measured"}[met]
    return f"{_signed(median, digits)} {unit}{spread}, limit ≤ {limit:g} | {state}"


def _workers_table(summaries: Summaries, plan: Plan) -> list[str]:
    lines = [
        "| row | conc | req/s 1w | req/s 2w | speed-up | p50 ms 1w | p50 ms 2w | p99 ms 1w | p99 ms 2w "
        "| CPU ms/req 1w | CPU ms/req 2w | peak RSS MiB 2w |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for kind, concurrency in plan.workers_rows:
        for one, two in ((LLMGW_REST, LLMGW_REST_2), (LLMGW_GRPC, LLMGW_GRPC_2)):
            a, b = summaries.get(one, kind, concurrency), summaries.get(two, kind, concurrency)
            if a is None or b is None:
                continue
            lines.append(
                f"| llmgw {two.front.value} {kind.value} | {concurrency} | {_f(a.rps, 0)} | {_f(b.rps, 0)} "
                f"| {_f(b.rps / a.rps if a.rps else math.nan, 2, 'x')} | {_f(a.p50_ms, 3)} | {_f(b.p50_ms, 3)} "
                f"| {_f(a.p99_ms, 3)} | {_f(b.p99_ms, 3)} | {_f(a.server_ms, 3)} | {_f(b.server_ms, 3)} "
                f"| {_peak(b.peak)} |"
            )
    return lines


def _method(info: RunInfo, summaries: Summaries) -> list[str]:
    settings = info.settings
    loaded = [s for s in summaries.rows.values() if s.row.kind is not Kind.TTFB]
    upstream_worst = max((s.upstream_ms for s in loaded if not math.isnan(s.upstream_ms)), default=math.nan)
    direct_ms = [s.server_ms for s in loaded if s.row.target.server == UPSTREAM]
    client = [s.client_ms for s in summaries.rows.values() if not math.isnan(s.client_ms)]
    foreign = info.machine_busy_s - info.own_cpu_s
    available = info.wall_seconds * (os.cpu_count() or 1)
    return [
        f"- {info.rounds} round{'s' if info.rounds != 1 else ''}; in each, every target is loaded in turn "
        "for each kind and concurrency (order rotated per round); figures are the medians of the rounds, "
        "errors their sum.",
        f"- A row: {settings.warmup:g} s warm-up, then {settings.duration:g} s of load "
        f"(TTFB rows: {settings.ttfb_warmup} + {settings.ttfb_samples} streams one at a time). "
        "HTTP rows use wrk (one thread, `conc` keep-alive connections, a Lua script for the POST body and "
        "a cap on the requests; stopped by SIGINT when the time is up, so the requests in flight then are "
        "abandoned, which llmgw logs as cancelled); "
        "gRPC rows the project's bounded grpclib driver (`benchmarks/grpc_load.py`, `conc` callers over "
        "up to 8 channels) in a process of its own; TTFB rows a raw HTTP/1.1 client (time from sending "
        "the request to the first body byte) and, for gRPC, the time to the first streamed message.",
        "- **server CPU ms/req** = utime+stime (`/proc/<pid>/stat`) of the server's process tree over the "
        "row, warm-up included / the requests the upstream received over the same span (the bare grpclib "
        "echo, which has no upstream: the calls its client completed). For llmgw the CPU span ends after its "
        "record writer's next flush (≤ 1.1 s after the load), so writing records counts. The direct row's "
        f"server is the upstream itself. Rows' spans hold {_coverage(info)} of each server's CPU over the "
        "rounds (the rest: idle time between its rows). The x reference column is the median of each "
        "round's ratio to the reference row (REST: the aiohttp proxy, gRPC: the bare grpclib echo). TTFB "
        "rows have too few requests for CPU figures in 10 ms clock ticks.",
        "- Streams: the fake upstream sends 20 content chunks, a usage chunk and `[DONE]`. Paced (the headline "
        "stream rows, as real upstreams send): the headers with the first chunk, then each part in a write of "
        "its own once the previous one drained, on a shared 1 ms timer; the bare grpclib echo sends its 20 "
        "messages 1 ms apart too. Paced rows start at concurrency 32: at 1 a row holds about 50 streams, a few "
        "clock ticks of CPU. Burst: the whole answer in one write, which lets a proxy handle many chunks per "
        "read and makes batching look free.",
        f"- The fake upstream (`benchmarks/upstream.py`, raw asyncio on uvloop, precomputed answers) "
        f"spends at most {_f(upstream_worst, 3)} ms of CPU per request in any row "
        f"(direct rows: {_f(min(direct_ms, default=math.nan), 3)}-{_f(max(direct_ms, default=math.nan), 3)} ms); "
        "it is not the bottleneck.",
        f"- The gRPC load generator spends {_f(min(client, default=math.nan), 3)}-"
        f"{_f(max(client, default=math.nan), 3)} ms CPU per request itself: on 2 cores it competes with the "
        "server, so gRPC req/s and latency are lower bounds; CPU per request is not affected.",
        "- +p50/+p99: the row's latency minus the direct row's at the same kind and concurrency (gRPC rows: "
        "minus direct REST). Peak RSS: VmHWM, summed over the process tree (2 workers: supervisor, workers "
        "and multiprocessing's helper).",
        *_limits_method(info),
        f"- Run took {info.wall_seconds:.0f} s. The machine was busy {info.machine_busy_s:.0f} core-seconds "
        f"of {available:.0f}; {max(0.0, foreign):.0f} of them were other processes than this benchmark's "
        "(other work on the machine makes latency and req/s noisier; CPU per request much less so).",
    ]


def _limits_method(info: RunInfo) -> list[str]:
    if not info.redis_url:
        return []
    return [
        "- Limits on: with Redis, llmgw's limit store makes a round trip to Redis per admission (one Lua "
        "script checks and reserves every limit) and another when the request ends (settling the reservation "
        "with the real tokens and cost). The server CPU per request includes llmgw's side of both (redis-py "
        "client work: encoding the call, reading the answer), not Redis's own CPU, which runs in a process "
        f"outside the measured tree ({info.redis_url}, shared with whatever else uses it); the added p50 "
        "includes the admission's round trip, which a request waits for before going upstream."
    ]


def _limits_setup(info: RunInfo) -> list[str]:
    if not info.redis_url:
        return []
    return [
        f"- Limits on rows (at {_concurrencies(info.plan.limits_rows)}): auth on as above plus "
        f"`[cache] redis_url = {info.redis_url}` (counters in Redis), every request with a key minted with "
        "`rpm`, `tpm`, `max_parallel` and `budget_usd` set far above what the run sends."
    ]


def _transport_concurrencies(plan: Plan) -> str:
    return _concurrencies(plan.transport_rows)


def _concurrencies(pairs: tuple[tuple[Kind, int], ...]) -> str:
    found = sorted({concurrency for _, concurrency in pairs})
    return "concurrency " + ", ".join(str(c) for c in found) if found else "no concurrency"


def _coverage(info: RunInfo) -> str:
    shares = sorted(info.coverage.values())
    if not shares:
        return "-"
    return f"{100 * shares[0]:.0f}%" if len(shares) == 1 else f"{100 * shares[0]:.0f}-{100 * shares[-1]:.0f}%"


def render(
    summaries: Summaries,
    verdicts: list[Verdict],
    info: RunInfo,
    profile: str | None,
    before: str | None = None,
) -> str:
    lines = [
        "# llmgw benchmarks",
        "",
        "Written by `python -m benchmarks` (`tox -e bench`); do not edit by hand.",
        "",
        f"- date: {info.date}",
        f"- commit: `{info.commit}`",
        *(f"- {name}: {value}" for name, value in info.machine),
        "- llmgw: one worker (and two for the workers rows), provider `bench` (kind `openai`) on the fake "
        'upstream with the default transport (the aiohttp transport rows: `transport = "aiohttp"`, at '
        f"{_transport_concurrencies(info.plan)}), SQLite records through the background writer, "
        "`log.level = info` to a file. Auth off (`[auth] enabled = false`) but for the auth on rows (at "
        f"{_concurrencies(info.plan.auth_rows)}): `enabled = true`, every request with a key minted through "
        "the admin API, which llmgw's key cache holds after the first.",
        *_limits_setup(info),
        *(f"- not measured: {reason}" for reason in info.skipped.values()),
        "",
        "## Results",
        "",
    ]
    for kind in Kind:
        if summaries.concurrencies(kind):
            lines += [f"### {_KIND_TITLES[kind]}", "", *_row_table(summaries, kind), ""]
    lines += [
        "## llmgw CPU per request over the reference's",
        "",
        "REST rows over the aiohttp pass-through proxy, gRPC rows over the bare grpclib echo; the median of the "
        "rounds' ratios (in parentheses: the lowest and highest round's).",
        "",
        *_ratio_table(summaries),
        "",
    ]
    lines += [
        "## Targets (one worker)",
        "",
        f"Judged on the default transport; the {AIOHTTP}'s figures in parentheses, not judged.",
        "",
        *_verdict_table(verdicts),
        "",
    ]
    lines += [
        "## Auth on (cached key) vs off",
        "",
        "The same llmgw (one worker, default transport) with `[auth] enabled = true`, each request carrying a "
        "key minted through `POST /admin/v1/keys` (scope `inference`; REST `Authorization: Bearer`, gRPC the "
        "same metadata), beside the plain llmgw row of the same round. Auth on adds: the median of the "
        "rounds' differences in server CPU per request (in parentheses: the lowest and highest round's). A "
        "refused key would show as errors.",
        "",
        *_auth_lines(summaries, info.plan),
        "",
    ]
    lines += [
        "## Limits on vs off",
        "",
        "llmgw with auth on as above plus `[cache] redis_url`, each request carrying a key minted with every "
        "limit set far above what the run sends (`rpm`, `tpm`, `max_parallel`, `budget_usd` with no period), "
        "so each is checked and reserved on admission and settled when the request ends (the bench models "
        "are priced, so the budget too) and none refuses; beside the auth on row of the same round, measured "
        "right before it: the same row without limits. Limits on add: the median of the rounds' differences "
        f"(in parentheses: the lowest and highest round's). Limits: ≤ {LIMITS_CPU_LIMIT_US:g} µs of server CPU "
        f"and ≤ {LIMITS_P50_LIMIT_MS:g} ms of p50 latency per request. A refusal would show as errors.",
        "",
        *(
            _limits_lines(summaries, info.plan)
            if info.redis_url
            else [f"Not measured: {info.skipped.get(LLMGW_LIMITS, 'no limits on rows in this run')}."]
        ),
        "",
    ]
    lines += ["## Workers: 1 vs 2", "", *_workers_table(summaries, info.plan), ""]
    lines += ["## How it was measured", "", *_method(info, summaries), ""]
    lines += ["## Profile", "", PROFILE_START, profile or PROFILE_PLACEHOLDER, PROFILE_END, ""]
    if before:
        lines += ["### Before", "", before, ""]
    return "\n".join(lines)


def before_profile(path: Path) -> str | None:
    """The tables of a profile taken before the hot-path work (`PROFILE-before.md`), its title dropped."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text.split("\n", 1)[1].strip() if "\n" in text else None


def replace_profile(results: Path, profile: str) -> bool:
    """Put `profile` into an existing RESULTS.md's Profile section; False when there is none."""
    try:
        text = results.read_text()
    except OSError:
        return False
    start, end = text.find(PROFILE_START), text.find(PROFILE_END)
    if start < 0 or end < start:
        return False
    results.write_text(text[: start + len(PROFILE_START)] + "\n" + profile + "\n" + text[end:])
    return True
