"""A minimal HTTP/1.1 keep-alive client over asyncio streams, for small JSON calls and for timing
the first body byte of a streamed answer (Content-Length or chunked bodies, no trailers)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    #: seconds from sending the request to the first byte of the body
    first_byte: float
    #: seconds from sending the request to the end of the body
    total: float


class Connection:
    """One keep-alive connection; requests go one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        assert self._reader is not None, "use `async with`"
        assert self._writer is not None
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        started = time.perf_counter()
        self._writer.write(head.encode() + body)
        answer_head = (await self._reader.readuntil(b"\r\n\r\n")).lower()
        status = int(answer_head.split(b" ", 2)[1])
        if b"\r\ntransfer-encoding: chunked" in answer_head:
            first, data = await self._chunked()
        else:
            first = time.perf_counter()
            data = await self._reader.readexactly(_content_length(answer_head))
        return Answer(status, data, first - started, time.perf_counter() - started)

    async def _chunked(self) -> tuple[float, bytes]:
        assert self._reader is not None
        parts: list[bytes] = []
        first = 0.0
        while True:
            line = await self._reader.readline()
            first = first or time.perf_counter()
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return first, b"".join(parts)
            parts.append((await self._reader.readexactly(size + 2))[:-2])


def _content_length(head: bytes) -> int:
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    end = head.find(b"\r\n", start + 2)
    return int(head[start + 17 : end if end > 0 else len(head)])


async def call_json(
    host: str,
    port: int,
    path: str,
    method: str = "GET",
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """One request on a fresh connection; the decoded JSON answer (raises on a non-2xx status)."""
    raw = b"" if body is None else orjson.dumps(body)
    async with asyncio.timeout(10), Connection(host, port) as connection:
        answer = await connection.request(method, path, raw, headers)
    if not 200 <= answer.status < 300:
        detail = answer.body[:300].decode(errors="replace")
        raise RuntimeError(f"{method} {path} on port {port}: HTTP {answer.status} {detail}")
    return orjson.loads(answer.body)
