"""The `fast` transport: a small HTTP/1.1 keep-alive pool on asyncio protocols and llhttp (httptools).

It does only what a provider call needs (POST a JSON body, read the answer whole or as it arrives) and
does it cheaply: the request head is encoded once per path and llhttp parses the answer. aiohttp's client
cost about 85 µs of CPU per call on the bench's fake upstream against about 15 µs here (`benchmarks/`,
rows "REST chat" and "REST paced stream" of both transports). It speaks no proxy: a provider whose
traffic goes through one uses the `aiohttp` transport.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import cast

import httptools

from llmgw.infrastructure.providers.transport import (
    BodyDecoder,
    ReadsToTheEnd,
    TransportError,
    check_endpoint,
)

# Bytes buffered from one answer before the socket stops being read until the caller catches up.
_HIGH_WATER = 1 << 18
_USER_AGENT = "llmgw"


class Response(ReadsToTheEnd):
    """An answer's status, headers (names lower-case) and body, read as it arrives."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_deadline",
        "_done",
        "_error",
        "_paused",
        "_size",
        "_timer",
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
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    async def read(self, deadline: float | None = None) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            if deadline is not None:
                self._watch(loop, deadline)
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if self._paused and self._connection is not None:
            self._paused = False
            self._connection.resume()
        return data

    def _watch(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """One timer per answer rather than per read: a stream's deadline moves later with every chunk, so
        the timer set for an earlier one stays, and when it fires early it is set again for the latest."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._deadline_passed, loop)

    def _deadline_passed(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next read sets a timer again
        if loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = loop.call_at(self._deadline, self._deadline_passed, loop)

    @property
    def complete(self) -> bool:
        return self._done

    def release(self) -> None:
        self._stop_timer()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish(reusable=self._done and self._error is None and not self._chunks)

    def close(self) -> None:
        self._stop_timer()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish(reusable=False)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # Called by the connection as the answer arrives.

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and not self._paused and self._connection is not None:
            self._paused = True
            self._connection.pause()
        self._wake()

    def end(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the protocol callbacks of asyncio and of the llhttp parser."""

    def __init__(self, pool: FastTransport) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self._decoder: BodyDecoder | None = None
        self._headers_ready: asyncio.Future[None] | None = None
        self._header_items: list[tuple[bytes, bytes]] = []
        self._interim = False
        # The answer began before the request was written whole: the server may not read the rest.
        self._early = False
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
            self.close_transport()
            return
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # first: it is a subclass of HttpParserError
            # A callback of ours raised (a body too large or corrupt) and llhttp stopped there.
            cause = exc.__context__
            self._broken(cause if isinstance(cause, TransportError) else TransportError(str(exc)))
        except httptools.HttpParserError as exc:
            self._broken(TransportError(f"the upstream's answer is not valid HTTP ({exc})"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is None:
            self._pool.forget_idle(self)
            return
        if self._headers_ready is None and not response.complete and self._close_delimited():
            self._end_body()  # a body without a length ends when the server closes
        else:
            self._broken(TransportError("the upstream closed the connection"))

    # llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_items.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        items, self._header_items = self._header_items, []
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._interim = True
            return
        response = self.response
        assert response is not None
        assert self.transport is not None
        self._early = self.transport.get_write_buffer_size() > 0
        response.status = status
        response.headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in items}
        self._decoder = BodyDecoder(
            response.headers.get("content-encoding", ""), self._pool.max_response_bytes
        )
        ready, self._headers_ready = self._headers_ready, None
        if ready is not None and not ready.done():
            ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        assert self._decoder is not None
        self.response.feed(self._decoder.decode(body))  # a TransportError here ends the exchange

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.keep_alive = bool(self._parser.should_keep_alive()) and not self._early
        self._end_body()

    # The pool's side

    async def exchange(self, head: bytes, body: bytes) -> Response:
        """Send one request; return once the answer's status and headers arrived."""
        assert self.transport is not None
        response = Response(self)
        self.response = response
        self.answered = self._early = self._interim = False
        ready = asyncio.get_running_loop().create_future()
        self._headers_ready = ready
        self.transport.write(head + body)
        await ready
        return response

    def finish(self, *, reusable: bool) -> None:
        self.response = None
        self._headers_ready = None
        self._decoder = None
        if reusable and self.keep_alive and not self.lost and self.transport is not None:
            self.idle_since = time.monotonic()
            self._pool.put_back(self)
        else:
            self.close_transport()
            self._pool.forget(self)

    def pause(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def close_transport(self) -> None:
        self.keep_alive = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # What the server did not read of the request is dropped, not written to a peer that moved on.
            transport.abort() if transport.get_write_buffer_size() else transport.close()

    def _end_body(self) -> None:
        response = self.response
        assert response is not None
        try:
            if self._decoder is not None:
                response.feed(self._decoder.flush())
        except TransportError as exc:
            self._broken(exc)
            return
        response.end()

    def _broken(self, error: TransportError) -> None:
        ready, self._headers_ready = self._headers_ready, None
        if ready is not None and not ready.done():
            ready.set_exception(error)
        if self.response is not None:
            self.response.fail(error)
        self.close_transport()

    def _close_delimited(self) -> bool:
        headers = self.response.headers if self.response is not None else {}
        return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


class FastTransport:
    """Keep-alive connections to one origin, at most `limit` of them; requests beyond wait for one.

    An idle connection is closed once it has been idle for `keepalive` seconds, whether or not another
    request comes: servers drop idle connections after a while, and a burst must not leave hundreds open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limit: int,
        connect_timeout: float,
        headers: Mapping[str, str],
        max_response_bytes: int,
        keepalive: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = check_endpoint(base_url, headers)
        assert parts.hostname is not None  # check_endpoint refuses a URL without one
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        self._path = parts.path.rstrip("/")
        self._query = f"?{parts.query}" if parts.query else ""
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self.max_response_bytes = max_response_bytes
        default_port = self._port == (443 if self._tls else 80)
        host_header = self._host if default_port else f"{self._host}:{self._port}"
        if ":" in self._host:  # an IPv6 literal
            host_header = f"[{self._host}]" if default_port else f"[{self._host}]:{self._port}"
        fields = {"Host": host_header, "User-Agent": _USER_AGENT, "Accept": "*/*", **headers}
        self._fields = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode("latin-1")
        self._starts: dict[str, bytes] = {}
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()  # oldest first
        self._open: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def post(self, path: str, body: bytes) -> Response:
        start = self._starts.get(path)
        if start is None:  # once per path: the request line and the fixed header fields
            start = self._starts[path] = (
                f"POST {self._path}{path}{self._query} HTTP/1.1\r\n".encode() + self._fields
            )
        head = start + b"Content-Length: %d\r\n\r\n" % len(body)
        if self._closed:
            raise TransportError("the connection pool is closed")
        await self._slots.acquire()
        connection: _Connection | None = None
        try:
            connection = self._reusable()
            if connection is not None:
                try:
                    return await connection.exchange(head, body)
                except TransportError:
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
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._open):
            connection.close_transport()
        self._idle.clear()
        self._open.clear()

    # The connections' side

    def put_back(self, connection: _Connection) -> None:
        self._slots.release()
        if self._closed:
            connection.close_transport()
            return
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._keepalive, self._close_expired)

    def forget(self, connection: _Connection) -> None:
        self._slots.release()
        self._open.discard(connection)

    def forget_idle(self, connection: _Connection) -> None:
        """An idle connection the server closed."""
        if connection in self._open:
            self._open.discard(connection)
            if connection in self._idle:
                self._idle.remove(connection)

    # Internals

    def _reusable(self) -> _Connection | None:
        self._expire(time.monotonic())
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely to have been dropped
            if not connection.lost:
                return connection
            self._open.discard(connection)
        return None

    def _close_expired(self) -> None:
        self._sweep = None
        now = time.monotonic()
        self._expire(now)
        if self._idle and not self._closed:
            delay = self._idle[0].idle_since + self._keepalive - now
            self._sweep = asyncio.get_running_loop().call_later(max(delay, 0.01), self._close_expired)

    def _expire(self, now: float) -> None:
        while self._idle and now - self._idle[0].idle_since >= self._keepalive:
            connection = self._idle.popleft()
            connection.close_transport()
            self._open.discard(connection)

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
            raise TransportError(f"cannot connect ({exc.strerror or type(exc).__name__})") from exc
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        """Close a connection whose exchange failed before an answer was handed over."""
        connection.response = None
        connection.close_transport()
        self._open.discard(connection)
