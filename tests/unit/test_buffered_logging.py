"""Log lines are written in batches: on the event loop within a fraction of a second, warnings and lines
logged off the loop at once, and whatever waits at shutdown."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import weakref

import pytest

from llmgw.infrastructure import logs
from llmgw.infrastructure.logs import BufferedStreamHandler, TextFormatter


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> tuple[logging.Logger, CountingStream]:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"test-buffered-{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log, stream


async def test_lines_on_the_loop_are_written_together_within_the_flush_interval(
    logger: tuple[logging.Logger, CountingStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "FLUSH_SECONDS", 0.05)
    log, stream = logger
    for n in range(100):
        log.info("line %d", n)
    assert stream.getvalue() == ""
    await asyncio.sleep(0.1)
    assert stream.getvalue().splitlines() == [f"INFO line {n}" for n in range(100)]
    assert stream.writes == 1


async def test_a_warning_is_written_at_once_with_the_lines_before_it(
    logger: tuple[logging.Logger, CountingStream],
) -> None:
    log, stream = logger
    log.info("before")
    log.warning("trouble")
    assert stream.getvalue() == "INFO before\nWARNING trouble\n"


def test_a_timer_left_on_a_closed_loop_does_not_hold_lines_back_on_the_next(
    logger: tuple[logging.Logger, CountingStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "FLUSH_SECONDS", 0.02)
    log, stream = logger

    async def log_and_leave() -> None:
        log.info("first loop")  # its timer is still pending when this loop closes

    async def log_and_wait() -> None:
        log.info("second loop")
        await asyncio.sleep(0.08)

    asyncio.run(log_and_leave())
    asyncio.run(log_and_wait())
    assert stream.getvalue() == "INFO first loop\nINFO second loop\n"


def test_off_the_loop_every_line_is_written_at_once(logger: tuple[logging.Logger, CountingStream]) -> None:
    log, stream = logger
    log.info("no loop here")
    assert stream.getvalue() == "INFO no loop here\n"


async def test_shutdown_flushes_what_waits(logger: tuple[logging.Logger, CountingStream]) -> None:
    log, stream = logger
    log.info("last words")
    assert stream.getvalue() == ""
    logging.shutdown([weakref.ref(handler) for handler in log.handlers])  # what runs at exit
    assert stream.getvalue() == "INFO last words\n"


def test_the_text_formatter_keeps_the_standard_time_format() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    expected = logging.Formatter("%(asctime)s").format(record)
    formatter = TextFormatter("%(asctime)s")
    assert formatter.format(record) == expected
    record.created += 1.5
    record.msecs = 500.0
    assert formatter.format(record) == logging.Formatter("%(asctime)s").format(record)
