"""What one process holds, read from `/proc` (Linux only): resident memory, open file descriptors by type,
and its TCP connections to given remote ports (its socket inodes matched against `/proc/<pid>/net/tcp`)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# /proc/net/tcp's `st` column
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True, slots=True)
class Holding:
    """A process at one moment: RSS in MiB, its fds (and by type), its connections to the upstream ports
    (and by TCP state)."""

    at: float
    rss_mib: float
    fds: int
    fd_types: dict[str, int]
    upstream: int
    upstream_states: dict[str, int]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fd_targets(pid: int) -> list[str]:
    targets = []
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            targets.append(os.readlink(f"{directory}/{name}"))
        except OSError:  # closed between listing and reading
            continue
    return targets


def _fd_type(target: str) -> str:
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("anon_inode:"):
        return target.removeprefix("anon_inode:").strip("[]")
    if target.startswith("pipe:"):
        return "pipe"
    return "file"


def _connections(pid: int, inodes: set[str], remote_ports: frozenset[int]) -> Counter[str]:
    """TCP states of the sockets among `inodes` whose remote port is one of `remote_ports`."""
    states: Counter[str] = Counter()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port in remote_ports and fields[9] in inodes:
                states[_TCP_STATES.get(fields[3], fields[3])] += 1
    return states


def hold(pid: int, upstream_ports: frozenset[int], at: float) -> Holding:
    targets = _fd_targets(pid)
    inodes = {t[len("socket:[") : -1] for t in targets if t.startswith("socket:[")}
    states = _connections(pid, inodes, upstream_ports)
    return Holding(
        at=at,
        rss_mib=rss_mib(pid),
        fds=len(targets),
        fd_types=dict(Counter(_fd_type(t) for t in targets)),
        upstream=sum(states.values()),
        upstream_states=dict(states),
    )
