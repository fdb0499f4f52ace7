"""A small HTTP/1.1 client for the upstream calls: one keep-alive connection pool per provider.

It does only what a provider call needs (POST a JSON body, read a JSON answer or an event stream) and does
it cheaply: the request head is encoded once per pool, responses are parsed by llhttp (httptools), and
a streamed body is handed over as the bytes arrived. aiohttp's client spent about 85 us of CPU per call
on the bench's fake upstream against about 15 us here, more than all of the gateway's own work per
request (measured with `benchmarks/`). Timeouts are the caller's: every wait here can be cancelled, and a
connection whose exchange did not finish cleanly is closed, never pooled.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

# Bytes buffered from one response before the socket stops being read until the caller catches up.
_HIGH_WATER = 1 << 18
# An idle pooled connection older than this is closed instead of reused: servers drop idle keep-alive
# connections after a while, and a request sent on one they dropped is wasted.
_KEEPALIVE_SECONDS = 30.0
_USER_AGENT = "llmgw"


class UpstreamConnectionError(Exception):
    """The connection could not be made, broke, or carried something that is not HTTP."""


class Response:
    """An answer's status, headers (names lower-case) and body, read as it arrives."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_decoder",
        "_done",
        "_error",
        "_paused",
        "_size",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, connection: _Connection) -> None:
        self._connection: _Connection | None = connection
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._decoder: zlib._Decompress | None = None

    def read_nowait(self) -> bytes:
        """What has arrived and not been read yet (maybe b"")."""
        if not self._chunks:
            if self._error is not None:
                raise self._error
            return b""
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if self._paused and self._connection is not None:
            self._paused = False
            self._connection.resume()
        return data

    def at_eof(self) -> bool:
        return self._done and not self._chunks

    async def read(self) -> bytes:
        """The next bytes of the body; b"" once it is complete."""
        while not self._chunks and not self._done and self._error is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.read_nowait()

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if the exchange ended cleanly."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish(reusable=self._done and self._error is None)

    def close(self) -> None:
        """Done with the answer, whole or not: its connection is closed (a no-op after `release`)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish(reusable=False)

    # Called by the connection as the answer arrives.

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decompress(data)
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and not self._paused and self._connection is not None:
            self._paused = True
            self._connection.pause()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the protocol callbacks of asyncio and of the llhttp parser."""

    def __init__(self, pool: HTTPPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self._headers_ready: asyncio.Future[None] | None = None
        self._header_items: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.lost = False
        #: whether the current exchange has seen any byte of the answer
        self.answered = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing was asked: a server talking out of turn is not reused
            self._close_transport()
            return
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(UpstreamConnectionError(f"the upstream's answer is not valid HTTP ({exc})"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is None:
            return
        if self._headers_ready is None and not response._done and self._close_delimited():
            response._finish()  # a body without a length ends when the server closes
        else:
            self._broken(UpstreamConnectionError("the upstream closed the connection"))

    def pause_writing(self) -> None:  # request bodies are written whole; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_items.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self._parser.get_status_code()
        response.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self._header_items
        }
        self._header_items = []
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            response._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by its header
        ready, self._headers_ready = self._headers_ready, None
        if ready is not None and not ready.done():
            ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        try:
            self.response._feed(body)
        except zlib.error as exc:
            self._broken(UpstreamConnectionError(f"the upstream's compressed body is corrupt ({exc})"))

    def on_message_complete(self) -> None:
        self.keep_alive = bool(self._parser.should_keep_alive())
        assert self.response is not None
        self.response._finish()

    # The pool's side

    async def exchange(self, head: bytes, body: bytes) -> Response:
        """Send one request; return once the answer's status and headers arrived."""
        assert self.transport is not None
        response = Response(self)
        self.response = response
        self.answered = False
        ready = asyncio.get_running_loop().create_future()
        self._headers_ready = ready
        self.transport.write(head + body)
        await ready
        return response

    def finish(self, *, reusable: bool) -> None:
        self.response = None
        self._headers_ready = None
        if reusable and self.keep_alive and not self.lost and self.transport is not None:
            self.idle_since = time.monotonic()
            self._pool._put_back(self)
        else:
            self._close_transport()
            self._pool._forget(self)

    def pause(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def _broken(self, error: UpstreamConnectionError) -> None:
        ready, self._headers_ready = self._headers_ready, None
        if ready is not None and not ready.done():
            ready.set_exception(error)
        if self.response is not None:
            self.response._fail(error)
        self._close_transport()

    def _close_delimited(self) -> bool:
        headers = self.response.headers if self.response is not None else {}
        return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")

    def _close_transport(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class HTTPPool:
    """Keep-alive connections to one origin, at most `limit` of them; requests beyond wait for one."""

    def __init__(
        self,
        base_url: str,
        *,
        limit: int,
        connect_timeout: float,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an upstream base URL looks like https://host/v1, not {base_url!r}")
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        self._path = parts.path.rstrip("/")
        self._query = f"?{parts.query}" if parts.query else ""
        self._connect_timeout = connect_timeout
        default_port = self._port == (443 if self._tls else 80)
        host_header = self._host if default_port else f"{self._host}:{self._port}"
        if ":" in self._host:  # an IPv6 literal
            host_header = f"[{self._host}]" if default_port else f"[{self._host}]:{self._port}"
        fields = {"Host": host_header, "User-Agent": _USER_AGENT, "Accept": "*/*", **headers}
        for name, value in fields.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"header {name!r} contains a line break")
        self._fields = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode("latin-1")
        self._starts: dict[str, bytes] = {}
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def post(self, path: str, body: bytes) -> Response:
        """POST `body` to the base URL's path + `path`; the caller releases or closes the answer."""
        start = self._starts.get(path)
        if start is None:  # once per path: the request line and the fixed header fields
            start = self._starts[path] = (
                f"POST {self._path}{path}{self._query} HTTP/1.1\r\n".encode() + self._fields
            )
        head = start + b"Content-Length: %d\r\n\r\n" % len(body)
        if self._closed:
            raise UpstreamConnectionError("the connection pool is closed")
        await self._slots.acquire()
        connection: _Connection | None = None
        try:
            connection = self._reusable()
            if connection is not None:
                try:
                    return await connection.exchange(head, body)
                except UpstreamConnectionError:
                    if connection.answered:
                        raise
                    # The server had closed the idle connection before the request reached it.
                    self._discard(connection)
            connection = await self._connect()
            return await connection.exchange(head, body)
        except BaseException:
            # No answer to hand over (failed, or the caller gave up): the connection cannot be reused.
            if connection is not None:
                self._discard(connection)
            self._slots.release()
            raise

    async def close(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection._close_transport()
        self._idle.clear()
        self._open.clear()

    def _reusable(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and now - connection.idle_since < _KEEPALIVE_SECONDS:
                return connection
            connection._close_transport()
            self._open.discard(connection)
        return None

    async def _connect(self) -> _Connection:
        """A new connection; TimeoutError after the connect timeout, as for any other wait that ran out."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            raise
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect ({exc.strerror or type(exc).__name__})") from exc
        self._open.add(connection)
        return connection

    def _put_back(self, connection: _Connection) -> None:
        self._slots.release()
        if self._closed:
            connection._close_transport()
            return
        self._idle.append(connection)

    def _forget(self, connection: _Connection) -> None:
        self._slots.release()
        self._open.discard(connection)

    def _discard(self, connection: _Connection) -> None:
        """Close a connection whose exchange failed before an answer was handed over."""
        connection.response = None
        connection._close_transport()
        self._open.discard(connection)
