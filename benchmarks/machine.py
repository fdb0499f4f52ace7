"""What the numbers were measured on: CPU, memory, kernel, versions, and the commit under test."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from benchmarks.processes import REPO_ROOT

# Files the benchmark itself writes: rewriting them does not make the code under test dirty.
_OWN_OUTPUT = (
    ":(exclude)benchmarks/RESULTS.md",
    ":(exclude)benchmarks/PROFILE.md",
    ":(exclude)benchmarks/CLIENT.md",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def commit(*paths: str) -> str:
    """Short hash of HEAD, `+dirty` when tracked files under `paths` (default: all but our own output)
    differ from it."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *(paths or (".", *_OWN_OUTPUT)))
    return f"{head}+dirty" if dirty else head


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "-"
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split("Copyright")[0].strip() if first else "-"


def describe() -> list[tuple[str, str]]:
    packages = ", ".join(
        f"{name} {_version(name)}" for name in ("aiohttp", "uvloop", "grpclib", "betterproto2", "orjson")
    )
    return [
        ("CPU", f"{cpu_model()}, {os.cpu_count()} cores"),
        ("memory", f"{memory_gib():.1f} GiB"),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("packages", packages),
        ("load generators", f"{_wrk_version()} (HTTP); benchmarks.grpc_load (gRPC, grpclib)"),
    ]
