"""Log setup: readable text or one JSON object per line, every line carrying its request id."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from llmgw.infrastructure.config.settings import LogFormat, LogSettings
from llmgw.infrastructure.request_ids import current_request_id

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(settings: LogSettings) -> None:
    # The logging HOWTO's "Optimization": our formats use none of these, so do not collect them
    # for every record (finding the caller walks the stack).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if settings.format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # grpclib logs every cancelled call as a failure; the gateway records cancellations itself.
    logging.getLogger("grpclib.server").setLevel(max(logging.ERROR, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
