"""The upstream transport port: POST a JSON body, get the status, headers and body as it arrives.

Two implementations sit behind it: `fast_transport` (an httptools pool; the default) and `aiohttp_transport`
(aiohttp's client; proxies). Both decode `gzip`/`deflate` bodies with one `BodyDecoder`, bounded by the
provider's `max_response_bytes`. Timeouts are the caller's (a read takes a deadline: streams read once per
chunk); every wait can be cancelled, and an answer that was not read to its end is closed, so its
connection is never reused.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import SplitResult, urlsplit


def check_endpoint(base_url: str, headers: Mapping[str, str]) -> SplitResult:
    """The base URL's parts, once it is an http(s) URL with a host and no header can split the request
    head; otherwise `ValueError`, when the transport is made rather than on its first request."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an upstream base URL looks like https://host/v1, not {base_url!r}")
    for name, value in headers.items():
        if any(c in f"{name}{value}" for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break")
    return parts


class TransportError(Exception):
    """The connection could not be made, broke, or carried something that is not HTTP."""


class ResponseTooLarge(TransportError):
    """The answer's body, decompressed, is larger than the transport accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upstream's answer is larger than max_response_bytes ({limit} bytes)")


class UpstreamResponse(Protocol):
    """An answer; the caller ends it with `release` (read whole) or `close` (anything else)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Header names in lower case."""
        ...

    async def read(self, deadline: float | None = None) -> bytes:
        """The next bytes of the body, decoded; b"" once it is complete. `TimeoutError` when nothing
        arrived by `deadline` (the event loop's clock): a stream's idle timeout, checked on every read,
        which an implementation should make cheap (a real stream reads once per chunk)."""
        ...

    async def read_all(self) -> bytes:
        """The rest of the body."""
        ...

    def release(self) -> None:
        """Done with an answer read to its end: its connection may be reused."""
        ...

    def close(self) -> None:
        """Done with the answer, whole or not: a connection whose exchange did not finish is closed."""
        ...


class ReadsToTheEnd:
    """`read_all` for an answer class that has `read`."""

    __slots__ = ()

    async def read(self, deadline: float | None = None) -> bytes:
        raise NotImplementedError

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)


class Transport(Protocol):
    """One provider's connections to its `base_url`, with its fixed headers (key, content type)."""

    async def post(self, path: str, body: bytes) -> UpstreamResponse:
        """POST `body` to the base URL's path + `path`; return once the status and headers arrived."""
        ...

    async def close(self) -> None: ...


# content-encoding -> whether it is compressed
_ENCODINGS = {"": False, "identity": False, "gzip": True, "x-gzip": True, "deflate": True}
# Decompressed bytes produced per step: a small compressed input can expand a thousandfold.
_STEP = 1 << 18


class BodyDecoder:
    """Undoes `content-encoding` incrementally and counts the bytes: a body (a gzip bomb included) that
    grows past `limit` raises `ResponseTooLarge` after at most `limit` bytes were produced."""

    __slots__ = ("_inflate", "_limit", "_size")

    def __init__(self, encoding: str, limit: int) -> None:
        encoding = encoding.strip().lower()
        if encoding not in _ENCODINGS:
            raise TransportError(f"the upstream's answer uses an unsupported content-encoding {encoding!r}")
        # gzip or zlib, told by the stream's own header
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if _ENCODINGS[encoding] else None
        self._limit = limit
        self._size = 0

    def decode(self, data: bytes) -> bytes:
        inflate = self._inflate
        if inflate is None:
            self._count(len(data))
            return data
        parts = []
        try:
            while data:
                out = inflate.decompress(data, _STEP)
                self._count(len(out))
                parts.append(out)
                data = inflate.unconsumed_tail
        except zlib.error as exc:
            raise TransportError(f"the upstream's compressed body is corrupt ({exc})") from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def flush(self) -> bytes:
        if self._inflate is None:
            return b""
        tail = self._inflate.flush()
        self._count(len(tail))
        return tail

    def _count(self, size: int) -> None:
        self._size += size
        if self._size > self._limit:
            raise ResponseTooLarge(self._limit)
