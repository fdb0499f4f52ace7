"""Which worker process of an llmgw serves a connection, read from /proc (Linux): for tests that must spread
requests over every worker of a supervisor."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def tcp_sockets() -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of every IPv4 TCP socket in this network namespace."""
    sockets = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if inode:
            sockets.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), inode))
    return sockets


def socket_inodes(pid: int | str) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def my_connections_to(port: int) -> set[int]:
    """The local ports of this process's connections to `port`."""
    mine = socket_inodes("self")
    return {local for local, remote, inode in tcp_sockets() if remote == port and inode in mine}


def worker_serving(client_port: int, server_port: int, workers: Iterable[int]) -> int:
    accepted = {
        inode for local, remote, inode in tcp_sockets() if (local, remote) == (server_port, client_port)
    }
    holders = [pid for pid in workers if socket_inodes(pid) & accepted]
    assert len(holders) == 1, (client_port, holders)
    return holders[0]


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = set()
    for child in children:
        with contextlib.suppress(FileNotFoundError):
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(int(child))
    return workers
