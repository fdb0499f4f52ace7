"""Several worker processes sharing the listening ports (SO_REUSEPORT), each with its own event loop.

The supervisor restarts a worker that dies, and on SIGTERM/SIGINT sends each worker one SIGTERM and waits
for every worker to drain its requests and flush its generation records; a second signal kills them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.logs import configure_logging
from llmgw.infrastructure.metrics import MULTIPROC_DIR

log = logging.getLogger("llmgw.workers")

_PR_SET_PDEATHSIG = 1
# A worker that dies sooner than this after its start is crash-looping: wait before the next try.
_MIN_UPTIME = 5.0
_RESTART_BACKOFF = 1.0


def _worker(settings: Settings, command: str, index: int) -> None:
    from llmgw.cli import run_loop

    _die_with_parent()
    # A Ctrl-C reaches the whole process group: only the supervisor acts on it (one SIGTERM per worker),
    # or each worker would take the supervisor's SIGTERM for a second signal and stop without draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log)
    logging.getLogger("llmgw").info("worker %d started", index)
    run_loop(settings, command)


def _die_with_parent() -> None:
    """On Linux, ask the kernel to SIGTERM this worker if the supervisor dies without stopping it,
    so a killed supervisor never leaves workers holding the ports."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: workers then outlive a killed supervisor
        log.warning("cannot tie worker lifetime to the supervisor")


class Supervisor:
    def __init__(self, settings: Settings, command: str) -> None:
        self._settings = settings
        self._command = command
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, tuple[BaseProcess, float]] = {}
        self._stopping = False

    def run(self) -> int:
        with self._metrics_folder():
            return self._supervise()

    @contextlib.contextmanager
    def _metrics_folder(self) -> Iterator[None]:
        """With metrics on, the workers write their values to files in one folder, so whichever worker
        answers a scrape reports them all (prometheus-client's multiprocess mode): a fresh one, removed
        at the end, unless the operator named one in `PROMETHEUS_MULTIPROC_DIR`. Set before any worker
        starts: prometheus-client chooses where values live when it is imported."""
        if not self._settings.metrics.enabled or os.environ.get(MULTIPROC_DIR):
            yield
            return
        folder = tempfile.mkdtemp(prefix="llmgw-metrics-")
        os.environ[MULTIPROC_DIR] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROC_DIR]
            shutil.rmtree(folder, ignore_errors=True)

    def _supervise(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for index in range(self._settings.server.workers):
            self._start(index)
        log.info("supervising %d %s workers", len(self._workers), self._command)
        while not self._stopping:
            sentinels = [process.sentinel for process, _ in self._workers.values()]
            wait(sentinels, timeout=0.5)
            self._restart_dead()
        return self._drain()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            return
        log.warning("second signal: killing the workers without draining")
        for process, _ in self._workers.values():
            if process.is_alive():
                process.kill()

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=_worker, args=(self._settings, self._command, index), name=f"llmgw-worker-{index}"
        )
        process.start()
        self._workers[index] = (process, time.monotonic())

    def _restart_dead(self) -> None:
        for index, (process, started) in list(self._workers.items()):
            if process.is_alive() or self._stopping:
                continue
            log.error(
                "worker %d (pid %s) exited with %s; restarting it", index, process.pid, process.exitcode
            )
            if os.environ.get(MULTIPROC_DIR) and process.pid is not None:
                from prometheus_client.multiprocess import mark_process_dead

                mark_process_dead(process.pid)  # type: ignore[no-untyped-call]  # its live gauges (in flight, records waiting) go
            process.close()
            if time.monotonic() - started < _MIN_UPTIME:
                time.sleep(_RESTART_BACKOFF)
            self._start(index)

    def _drain(self) -> int:
        log.info("stopping %d workers", len(self._workers))
        for process, _ in self._workers.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: each worker drains and flushes on its own
        deadline = time.monotonic() + self._settings.server.shutdown_grace + 15.0
        failed = 0
        for index, (process, _) in self._workers.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %d did not stop in time; killing it", index)
                process.kill()
                process.join()
            if process.exitcode not in (0, -signal.SIGTERM):
                failed += 1
        log.info("all workers stopped")
        return 1 if failed else 0
