"""CPU time and peak memory of a process tree, read from `/proc` (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Fields 14 and 15 of /proc/<pid>/stat (1-based), counted after the ")" that closes the command name.
_UTIME, _STIME = 14 - 3, 15 - 3


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, found through each thread's `children` list."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` and its live descendants, all threads included."""
    ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:  # exited between listing and reading
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[_UTIME]) + int(fields[_STIME])
    return ticks / _CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class PeakMemory:
    """VmHWM (peak resident set) in MiB: summed over the tree, and of its largest process."""

    total_mib: float
    largest_mib: float
    processes: int


def peak_memory(pid: int) -> PeakMemory:
    peaks: list[float] = []
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
                break
    return PeakMemory(sum(peaks), max(peaks, default=0.0), len(peaks))


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, all processes) since boot, from `/proc/stat`."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS
