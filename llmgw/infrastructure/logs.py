"""Log setup: readable text or one JSON object per line, every line carrying its request id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

import orjson
from aiohttp.http import HttpProcessingError

from llmgw.domain.generation import GenerationRecord
from llmgw.infrastructure.config.settings import LogFormat, LogSettings
from llmgw.infrastructure.request_ids import current_request_id

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


AIOHTTP_SERVER_LOGGER = "aiohttp.server"
# The reason quotes the client's bytes: enough to debug a client, not a page per request.
_MAX_REASON_CHARS = 200


class MalformedRequestFilter(logging.Filter):
    """On aiohttp's server logger: a request aiohttp cannot parse (not HTTP, a bad header, a line too
    long) is logged as one DEBUG line with the reason instead of an ERROR with a traceback.

    aiohttp answers such a request 400 itself; the traceback only shows its parser, and anyone who can
    reach the port could otherwise write one per request. Errors in our handlers are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        reason = " ".join(str(error).split())[:_MAX_REASON_CHARS]
        record.msg, record.args = "%s: %s", (record.getMessage(), reason)
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.exc_info, record.exc_text = None, None
        # The logger let the line through at its old level; at DEBUG it may not want it.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quiet_malformed_requests() -> Iterator[None]:
    """While the HTTP fronts serve: malformed requests are DEBUG lines (see `MalformedRequestFilter`)."""
    server_log = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    quiet = MalformedRequestFilter()
    server_log.addFilter(quiet)
    try:
        yield
    finally:
        server_log.removeFilter(quiet)


# Lines wait at most this long before they are written; WARNING and above are written at once.
FLUSH_SECONDS = 0.2
# ... or until this many characters wait.
_FLUSH_CHARS = 64 * 1024


class BufferedStreamHandler(logging.StreamHandler[TextIO]):
    """Writes lines in batches instead of one write and flush per line.

    On the event loop's thread a timer flushes what waits within `FLUSH_SECONDS`; anywhere else, and for
    WARNING and above, every line is written at once. `logging.shutdown()` (at exit) flushes the rest.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._chars = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001  (logging's contract: a bad record is reported, never raised)
            self.handleError(record)
            return
        self._lines.append(line)
        self._chars += len(line)
        if record.levelno >= logging.WARNING or self._chars >= _FLUSH_CHARS or not self._later():
            self.flush()

    def _later(self) -> bool:
        """Make sure a flush is due soon; False where no timer can be set (no loop on this thread)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        # A timer set on an earlier loop (closed since, in a process that ran several) would never fire.
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_later(FLUSH_SECONDS, self._timed_flush)
            self._timer_loop = loop
        return True

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            lines, self._lines, self._chars = self._lines, [], 0
            if lines:
                self.stream.write("".join(lines))
            super().flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing better to do
            pass
        finally:
            self.release()


class TextFormatter(logging.Formatter):
    """The text format, with the date and time formatted once per second instead of once per line.

    A message is one line whatever it quotes: control and other unprintable characters in it (a `%0A` in
    a model id or path, an ANSI escape) are written escaped (`\\n`, `\\x1b`), so a client cannot plant a
    forged line in the log. Tracebacks, appended after the message, keep their lines."""

    _second = -1
    _formatted = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if not message.isprintable():  # one C-level scan; escaping is for the rare message that needs it
            record.message = escape_unprintable(message)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._formatted = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._formatted},{int(record.msecs):03d}"


def escape_unprintable(text: str) -> str:
    """`text` with each unprintable character written as its Python escape (`\\n`, `\\r`, `\\x1b`)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        generation = getattr(record, "generation", None)
        if isinstance(generation, GenerationRecord):
            entry |= access_fields(generation)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def access_fields(generation: GenerationRecord) -> dict[str, object]:
    """The fields of a chat or embeddings request's line in the JSON log: which generation, whose key,
    which model and provider, how it ended, its tokens, cost and latency."""
    return {
        "generation_id": generation.id,
        "kind": str(generation.kind),
        "key_id": generation.key_id or None,
        "team_id": generation.team_id or None,
        "model": generation.model,
        "provider": generation.provider or None,
        "status": str(generation.status),
        "error_code": generation.error_code or None,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "cost_usd": generation.cost_usd,
        "latency_ms": generation.latency_ms,
        "attempts": len(generation.attempts),
        "trace_id": generation.trace_id or None,
    }


def configure_logging(settings: LogSettings) -> None:
    # The logging HOWTO's "Optimization": our formats use none of these, so do not collect them.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if settings.format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # grpclib logs every cancelled call as a failure; the gateway records cancellations itself.
    logging.getLogger("grpclib.server").setLevel(max(logging.ERROR, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
