"""Per-connection guards for the listening ports: a cap on open connections per process, a deadline for a
request's headers, and (gRPC) the close of idle connections. Each guard is the asyncio protocol of one
accepted connection and forwards every callback to the front's own protocol (aiohttp's, grpclib's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger("llmgw.connections")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """`server.header_timeout`, `server.idle_timeout` and `server.max_connections`, in seconds and counts."""

    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections: int = 10_000


class ConnectionCount:
    """The connections open on every port of this process; one is shared by all of them."""

    __slots__ = ("limit", "open", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0


class Guard(asyncio.Protocol):
    """Counts its connection against the process's cap (over it: closed at once, the front never sees it)
    and closes it when the first request's headers miss `header_timeout`; everything else is forwarded."""

    def __init__(self, inner: ProtocolFactory, count: ConnectionCount, policy: ConnectionPolicy) -> None:
        self.factory = inner
        self.count = count
        self.policy = policy
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's subclasses
        if self.count.open >= self.count.limit:
            self.count.refused += 1
            if self.count.refused == 1 or self.count.refused % 1000 == 0:
                log.warning("server.max_connections (%d) reached: refused a connection", self.count.limit)
            transport.abort()
            return
        self.count.open += 1
        _no_delay(transport)
        self.transport = transport = self.wrap(transport)
        self.inner = inner = cast(asyncio.Protocol, self.factory())
        self.arm_header_timer()
        inner.connection_made(transport)

    def wrap(self, transport: asyncio.Transport) -> asyncio.Transport:
        """The transport the front (and this guard) write to: the connection's own, unless a subclass says."""
        return transport

    def arm_header_timer(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.policy.header_timeout, self.on_header_timeout)

    def disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def on_header_timeout(self) -> None:
        self.header_timer = None
        log.info("closed a connection whose request headers took over %gs", self.policy.header_timeout)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is None:
            return
        self.count.open -= 1
        self.disarm_header_timer()
        self.inner.connection_lost(exc)


def _no_delay(transport: asyncio.Transport) -> None:
    """Send small writes at once (TCP_NODELAY). grpclib sets it only on sockets whose `proto` says TCP,
    and sockets from `socket.create_server` (ours) say 0: without it every gRPC answer waited for the
    client's delayed ACK, ~40 ms a call. aiohttp sets it for its own connections; once more is harmless."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class WriteBatch(asyncio.Transport):
    """A connection's transport whose writes within one turn of the event loop leave in one send.

    grpclib writes each frame it makes at once: a unary answer is three sends (initial metadata, message,
    trailers), each a system call and, with TCP_NODELAY, a segment of its own. Here they are joined and
    written by a callback at the loop's next turn, a few microseconds later; a paced stream, whose messages
    come on later turns, still sends each one as it comes. Pays on "gRPC unary chat" (benchmarks/RESULTS.md).
    Everything but writing is the wrapped transport's; `close` sends what is pending first."""

    __slots__ = ("loop", "pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.pending: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.pending.clear()
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(len(data) for data in self.pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()


_HEAD_END = b"\r\n\r\n"


class Http1Guard(Guard):
    """An HTTP/1.1 connection: its first request's headers must be whole within `header_timeout`. Later
    requests on a kept-alive connection are aiohttp's: it closes a connection whose next request's headers
    are not whole within its `keepalive_timeout` (our `idle_timeout`) of the previous response."""

    def __init__(self, inner: ProtocolFactory, count: ConnectionCount, policy: ConnectionPolicy) -> None:
        super().__init__(inner, count, policy)
        # The end of the last chunk, in case the blank line ending the headers is split across two.
        self.tail: bytes | None = b""

    def data_received(self, data: bytes) -> None:
        if self.tail is not None:
            if _HEAD_END in self.tail + data[:3] or _HEAD_END in data:
                self.tail = None
                self.disarm_header_timer()
            else:
                self.tail = (self.tail + data)[-3:]
        if self.inner is not None:
            self.inner.data_received(data)


class GuardedListener:
    """Builds the guard of each accepted connection around a front's own protocol factory, and knows the
    guards still alive, so that a stop can close connections their front leaves open."""

    def __init__(
        self,
        guard: Callable[[ProtocolFactory, ConnectionCount, ConnectionPolicy], Guard],
        count: ConnectionCount,
        policy: ConnectionPolicy,
    ) -> None:
        self.guard = guard
        self.count = count
        self.policy = policy
        self.guards: weakref.WeakSet[Guard] = weakref.WeakSet()

    def wrap(self, factory: ProtocolFactory) -> Callable[[], Guard]:
        def build() -> Guard:
            guard = self.guard(factory, self.count, self.policy)
            self.guards.add(guard)
            return guard

        return build

    def close_all(self) -> None:
        """Close every connection still open on this listener's ports."""
        for guard in list(self.guards):
            guard.close()
