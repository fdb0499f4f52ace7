"""The gateway's own log configuration, writing into a buffer a test can read; logging restored after."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from llmgw.infrastructure.config.settings import LogFormat, LogSettings
from llmgw.infrastructure.logs import configure_logging


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """A buffer for `capture`; the root logger's handlers and level are put back after the test."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def capture(buffer: io.StringIO, fmt: LogFormat) -> None:
    """Configure logging as the gateway does (level info, `fmt`), writing into `buffer`."""
    configure_logging(LogSettings(level="info", format=fmt))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


def logged(buffer: io.StringIO) -> str:
    """What was logged so far: lines are written in batches, so flush the handlers first."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return buffer.getvalue()
