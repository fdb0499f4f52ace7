"""Where llmgw spends its CPU under load: py-spy samples the running process (own time per function);
where py-spy is missing or cannot attach, llmgw is restarted under cProfile for each load instead."""

from __future__ import annotations

import asyncio
import pstats
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmarks.plan import LLMGW, LLMGW_GRPC, LLMGW_REST, UPSTREAM, Kind, Row
from benchmarks.processes import REPO_ROOT, start_llmgw, stop
from benchmarks.runner import Bench

CONCURRENCY = 32
ROWS = (
    Row(LLMGW_REST, Kind.CHAT, CONCURRENCY),
    Row(LLMGW_REST, Kind.PACED_STREAM, CONCURRENCY),
    Row(LLMGW_REST, Kind.EMBEDDINGS, CONCURRENCY),
    Row(LLMGW_GRPC, Kind.CHAT, CONCURRENCY),
    Row(LLMGW_GRPC, Kind.PACED_STREAM, CONCURRENCY),
)
_SPY_RATE = 200
_STARTUP = ("__main__.py", "cli.py", "serving.py")


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    own: float
    total: float


@dataclass(frozen=True, slots=True)
class Profile:
    row: Row
    tool: str
    samples: int
    frames: list[Frame]
    #: llmgw's own functions by inclusive time
    ours: list[Frame]


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile(bench: Bench, seconds: int, tool: str = "auto", top: int = 15) -> str:
    """Profile each of ROWS for `seconds`; the markdown for RESULTS.md and PROFILE.md."""
    spy = py_spy() if tool in ("auto", "py-spy") else None
    if tool == "py-spy" and spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    profiles: list[Profile] = []
    for row in ROWS:
        found = await _py_spy(bench, row, spy, seconds, top) if spy else None
        if found is None and tool != "py-spy":
            found = await _cprofile(bench, row, seconds, top)
        if found is not None:
            profiles.append(found)
    return render(profiles, seconds)


async def _py_spy(bench: Bench, row: Row, spy: str, seconds: int, top: int) -> Profile | None:
    output = bench.workdir / f"py-spy-{row.target.front.name}-{row.kind.name}.txt".lower()
    pid = bench.servers[LLMGW].pid
    command = [spy, "record", "--pid", str(pid), "--rate", str(_SPY_RATE), "--duration", str(seconds)]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--format",
        "raw",
        "--function",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(0.5)  # attaching takes a moment
    await bench.load(row, max(1.0, seconds - 1.0))
    async with asyncio.timeout(seconds + 30):
        _, err = await process.communicate()
    if process.returncode != 0 or not output.exists():
        print(f"py-spy failed ({process.returncode}): {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        return None
    return _from_stacks(row, output.read_text().splitlines(), top)


def _from_stacks(row: Row, lines: list[str], top: int) -> Profile:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            total[name] += int(count)
    scale = 100 / samples if samples else 0.0

    def frame(name: str) -> Frame:
        return Frame(name, own[name] * scale, total[name] * scale)

    ours = [name for name, _ in total.most_common() if _ours(name)][:top]
    return Profile(
        row, "py-spy", samples, [frame(n) for n, _ in own.most_common(top)], [frame(n) for n in ours]
    )


async def _cprofile(bench: Bench, row: Row, seconds: int, top: int) -> Profile:
    """A fresh llmgw under cProfile, loaded for `seconds`, stopped so it writes its stats."""
    name = f"cprofile-{row.target.front.name}-{row.kind.name}".lower()
    output = bench.workdir / f"{name}.pstats"
    wrapper = (sys.executable, "-m", "cProfile", "-o", str(output))
    server = await start_llmgw(bench.workdir, bench.servers[UPSTREAM], name, wrapper=wrapper)
    try:
        await bench.load(row, seconds, server=server)
    finally:
        await asyncio.to_thread(stop, server)
    stats = pstats.Stats(str(output))
    table = stats.stats  # type: ignore[attr-defined]
    overall = sum(entry[2] for entry in table.values()) or 1.0
    rows = [
        (f"{func} ({_short(file)}:{line})", entry[2], entry[3]) for (file, line, func), entry in table.items()
    ]
    by_own = sorted(rows, key=lambda item: item[1], reverse=True)[:top]
    ours = sorted((r for r in rows if _ours(r[0])), key=lambda item: item[2], reverse=True)[:top]

    def frame(item: tuple[str, float, float]) -> Frame:
        return Frame(item[0], 100 * item[1] / overall, 100 * item[2] / overall)

    return Profile(row, "cProfile", 0, [frame(r) for r in by_own], [frame(r) for r in ours])


def _ours(frame: str) -> bool:
    """An llmgw function, leaving out the start-up frames every sample passes through."""
    return "llmgw/" in frame and not any(f"llmgw/{name}" in frame for name in _STARTUP)


def _short(path: str) -> str:
    """A path the way py-spy shows it: relative to site-packages, the stdlib or the repository."""
    for prefix in (f"{REPO_ROOT}/", *sorted(sys.path, key=len, reverse=True)):
        if prefix and path.startswith(prefix.rstrip("/") + "/"):
            return path[len(prefix.rstrip("/")) + 1 :]
    return path


def _table(frames: list[Frame]) -> list[str]:
    lines = ["| own % | total % | function |", "|--:|--:|---|"]
    lines += [f"| {f.own:.1f} | {f.total:.1f} | `{f.function}` |" for f in frames]
    return lines


def render(profiles: list[Profile], seconds: int) -> str:
    if not profiles:
        return "No profile could be taken (neither py-spy nor cProfile worked)."
    lines = [
        f"llmgw, one worker, each load for {seconds} s at concurrency {CONCURRENCY}. py-spy samples at "
        f"{_SPY_RATE} Hz, idle time left out; own % = samples with the function on top of the stack, "
        "total % = samples with it anywhere on the stack (cProfile, used where py-spy cannot attach: "
        "tottime and cumtime over the whole process, start-up included). CPU figures are not taken from "
        "profiled runs. py-spy counts every thread, and does not always see a wait as idle: aiosqlite's "
        "`_connection_worker_thread` is mostly that thread waiting on its queue (an idle llmgw shows it, "
        "and `Runner.run`, in about 4% of samples each); the SQLite store writes its batches on the event "
        "loop thread, and only checkpoints and lookups run there.",
    ]
    for found in profiles:
        count = f", {found.samples} samples" if found.samples else ""
        title = f"{found.row.target.label} {found.row.kind.value}"
        lines += ["", f"### {title} ({found.tool}{count})", "", *_table(found.frames)]
        if found.ours:
            lines += ["", "llmgw's own functions by total time:", "", *_table(found.ours[:10])]
    return "\n".join(lines)
