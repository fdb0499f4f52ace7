"""Typed reading of raw config tables that records every problem with its key and source."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from llmgw.infrastructure.config.durations import parse_duration
from llmgw.infrastructure.config.problems import ConfigProblem
from llmgw.infrastructure.config.provenance import KeyPath, Provenance, render_key
from llmgw.infrastructure.config.settings import ListenAddress

T = TypeVar("T")

REQUIRED: Final = object()
_MISSING: Final = object()
_HOST = re.compile(r"[A-Za-z0-9._-]*")


class Checker:
    """Reads values out of raw tables; a bad value becomes a problem and a harmless fallback.

    Reading goes on after a problem so that one run reports every problem in the config.
    """

    def __init__(self, provenance: Provenance) -> None:
        self.provenance = provenance
        self.problems: list[ConfigProblem] = []

    def fail(self, path: KeyPath, message: str) -> None:
        self.problems.append(ConfigProblem(render_key(path), self.provenance.origin(path), message))

    def table(self, data: Mapping[str, Any], path: KeyPath) -> dict[str, Any]:
        """The table at `path` inside `data` (whose own path is `path[:-1]`); {} when absent."""
        value = data.get(path[-1])
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a table, got {value!r}")
            return {}
        return dict(value)

    def reject_unknown(self, table: Mapping[str, Any], path: KeyPath, allowed: Collection[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail((*path, key), f"unknown key; expected one of: {', '.join(sorted(allowed))}")

    def read(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        parse: Callable[[Any], T],
        *,
        default: object,
        fallback: T,
    ) -> T:
        """`parse` the value of `key` (or `default` when absent; `REQUIRED` makes absence a problem)."""
        value = table.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is REQUIRED:
                self.fail((*path, key), "is required")
                return fallback
            value = default
        try:
            return parse(value)
        except ValueError as exc:
            self.fail((*path, key), str(exc))
            return fallback

    def text(self, table: Mapping[str, Any], path: KeyPath, key: str, default: object = REQUIRED) -> str:
        return self.read(table, path, key, as_text, default=default, fallback="")

    def integer(self, table: Mapping[str, Any], path: KeyPath, key: str, default: int, minimum: int) -> int:
        return self.read(table, path, key, integer_at_least(minimum), default=default, fallback=default)

    def duration(
        self, table: Mapping[str, Any], path: KeyPath, key: str, default: str, *, allow_zero: bool = False
    ) -> float:
        parse = non_negative_duration if allow_zero else positive_duration
        return self.read(table, path, key, parse, default=default, fallback=parse_duration(default))

    def choice(
        self, table: Mapping[str, Any], path: KeyPath, key: str, default: str, choices: list[str]
    ) -> str:
        return self.read(table, path, key, one_of(choices), default=default, fallback=default)

    def listen(self, table: Mapping[str, Any], path: KeyPath, key: str, default: str) -> ListenAddress:
        return self.read(table, path, key, parse_listen, default=default, fallback=parse_listen(default))

    def secret_text(self, value: Any, path: KeyPath) -> str | None:
        """A secret-like string; numbers are kept as written (env values are parsed as TOML)."""
        if isinstance(value, str):
            return value
        raw = self.provenance.raw_env(path)
        if raw is not None:
            return raw
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        # The type only: the value may be (part of) a secret.
        self.fail(path, f"must be a string, got {type(value).__name__}")
        return None


def as_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def integer_at_least(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return float(value)


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, got {value!r}")
    return seconds


def non_negative_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def one_of(choices: list[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")

    return parse


def parse_listen(value: Any) -> ListenAddress:
    """`":8080"`, `"127.0.0.1:8080"`, `"[::1]:8080"` or `"localhost:0"`."""
    expected = f'must be host:port like ":8080", "127.0.0.1:8080" or "[::1]:8080", got {value!r}'
    if not isinstance(value, str):
        raise ValueError(expected)
    host, colon, port = value.strip().rpartition(":")
    if not colon or not port.isdigit() or not port.isascii():
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]") and len(host) > 2:
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{expected} (IPv6 hosts go in brackets)")
    elif not _HOST.fullmatch(host):
        raise ValueError(expected)
    if int(port) > 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return ListenAddress(host, int(port))


def http_url(value: Any) -> str:
    text = as_text(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    # Providers append paths such as "/chat/completions"; a trailing slash would double up.
    return text.rstrip("/")


def storage_url(value: Any) -> str:
    """`memory://`, `sqlite:///path` (relative paths allowed) or `postgresql://…`."""
    text = as_text(value).strip()
    if text == "memory://":
        return text
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    parts = urlsplit(text)
    if parts.scheme in ("postgresql", "postgres") and (parts.netloc or parts.path.strip("/")):
        return text
    # A DSN may carry a password: echo it only when it cannot.
    shown = "" if "@" in text else f", got {value!r}"
    raise ValueError(f"must be memory://, sqlite:///path or postgresql://...{shown}")
