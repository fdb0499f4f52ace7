"""The gateway's own config sections: log, http, grpc, health, storage and server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgw.infrastructure.config.settings import (
    GrpcSettings,
    HealthSettings,
    HttpSettings,
    LogFormat,
    LogSettings,
    ServerSettings,
    StorageSettings,
)
from llmgw.infrastructure.config.validation import Checker, storage_url

LOG_LEVELS = ["debug", "info", "warning", "error"]


def build_log(data: Mapping[str, Any], check: Checker) -> LogSettings:
    table = check.table(data, ("log",))
    check.reject_unknown(table, ("log",), {"level", "format"})
    log_format = check.choice(table, ("log",), "format", "text", [item.value for item in LogFormat])
    return LogSettings(
        level=check.choice(table, ("log",), "level", "info", LOG_LEVELS),
        format=LogFormat(log_format),
    )


def build_http(data: Mapping[str, Any], check: Checker) -> HttpSettings:
    table = check.table(data, ("http",))
    check.reject_unknown(table, ("http",), {"listen", "max_body_bytes"})
    return HttpSettings(
        listen=check.listen(table, ("http",), "listen", ":8080"),
        max_body_bytes=check.integer(table, ("http",), "max_body_bytes", 10_485_760, minimum=1),
    )


def build_grpc(data: Mapping[str, Any], check: Checker) -> GrpcSettings:
    table = check.table(data, ("grpc",))
    check.reject_unknown(table, ("grpc",), {"listen"})
    return GrpcSettings(listen=check.listen(table, ("grpc",), "listen", ":50051"))


def build_health(data: Mapping[str, Any], check: Checker) -> HealthSettings:
    table = check.table(data, ("health",))
    check.reject_unknown(table, ("health",), {"listen"})
    return HealthSettings(listen=check.listen(table, ("health",), "listen", ":8081"))


def build_storage(data: Mapping[str, Any], check: Checker) -> StorageSettings:
    table = check.table(data, ("storage",))
    check.reject_unknown(table, ("storage",), {"url", "retention_days"})
    default = StorageSettings()
    return StorageSettings(
        url=check.read(table, ("storage",), "url", storage_url, default=default.url, fallback=default.url),
        retention_days=check.integer(
            table, ("storage",), "retention_days", default.retention_days, minimum=0
        ),
    )


def build_server(data: Mapping[str, Any], check: Checker) -> ServerSettings:
    table = check.table(data, ("server",))
    check.reject_unknown(table, ("server",), {"workers", "shutdown_grace"})
    return ServerSettings(
        workers=check.integer(table, ("server",), "workers", 1, minimum=1),
        # Zero is allowed: stop at once without waiting for in-flight requests.
        shutdown_grace=check.duration(table, ("server",), "shutdown_grace", "10s", allow_zero=True),
    )
