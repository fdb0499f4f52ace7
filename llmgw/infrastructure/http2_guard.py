"""The guard of a gRPC (HTTP/2) connection. It reads what grpclib does not bound: the 9-byte header of each
frame the client sends and the 5-byte prefix of each gRPC message, and nothing else of the payloads.

- A message announced over `grpc.max_message_bytes` ends its call with RESOURCE_EXHAUSTED before grpclib
  has buffered more than one frame of it (grpclib has no size limit and would read it whole).
- More than `grpc.max_client_resets` RST_STREAMs from a client within `RESET_WINDOW`, or `PREMATURE_RESETS`
  of them resetting more than half of the streams it opened in that window (HTTP/2 rapid reset, as Envoy
  judges it): GOAWAY ENHANCE_YOUR_CALM and the connection is closed; the rest of what it sent is never
  parsed. An attack is so cut after ~50 streams, each of which grpclib keeps (~9 KB) until it collects
  the closed connection's handler (every tenth connection); a client cancelling some of its calls is
  never cut. Measured: RSS after rounds of attacks 2 MiB over what as many normal calls leave (at 100
  resets 6 MiB, at 1000 62 MiB).
- The preface and first HEADERS, or any later header block, must be whole within `server.header_timeout`.
- With no call in flight for `server.idle_timeout` (as grpc-go's MaxConnectionIdle), GOAWAY and close.

Cost: per frame, a slice of its header and a few comparisons; per message, one prefix; per call, a dict
entry and a clock read. The bytes are forwarded to grpclib unchanged, in place (a slice only at the rare
frame where the guard acts)."""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass

from llmgw.infrastructure.connections import (
    ConnectionCount,
    ConnectionPolicy,
    Guard,
    ProtocolFactory,
    WriteBatch,
)

log = logging.getLogger("llmgw.connections")

_PREFACE = 24
_DATA, _HEADERS, _RST_STREAM, _GOAWAY, _CONTINUATION = 0x0, 0x1, 0x3, 0x7, 0x9
_END_STREAM, _END_HEADERS, _PADDED = 0x1, 0x4, 0x8
_NO_ERROR, _CANCEL, _ENHANCE_YOUR_CALM = 0x0, 0x8, 0xB
_RESOURCE_EXHAUSTED = b"8"
#: Client resets are counted over windows of this many seconds.
RESET_WINDOW = 10.0
#: Resets in a window from which a client resetting most of the streams it opens is cut off.
PREMATURE_RESETS = 50

#: The connection whose bytes grpclib is handling: the tasks grpclib starts for its calls inherit it.
current_connection: ContextVar[Http2Guard | None] = ContextVar("llmgw_http2_connection", default=None)


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """`grpc.max_message_bytes` and `grpc.max_client_resets`."""

    max_message_bytes: int = 4_194_304
    max_client_resets: int = 1000


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal without indexing: it leaves the peer's dynamic table as grpclib's encoder left it."""
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


def trailers_only(stream: int, status: bytes, message: str) -> bytes:
    """A gRPC trailers-only response ending `stream`: `:status: 200` (static index 8), content-type
    (static name 31) and the grpc-status and grpc-message literals."""
    content_type = b"application/grpc"
    block = (
        b"\x88\x0f\x10"
        + bytes((len(content_type),))
        + content_type
        + _literal(b"grpc-status", status)
        + _literal(b"grpc-message", message.encode("ascii")[:120])
    )
    return _frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, block)


def rst_stream(stream: int, code: int) -> bytes:
    return _frame(_RST_STREAM, 0, stream, code.to_bytes(4, "big"))


def goaway(last_stream: int, code: int) -> bytes:
    return _frame(_GOAWAY, 0, 0, last_stream.to_bytes(4, "big") + code.to_bytes(4, "big"))


class _Messages:
    """Where a stream's client is in its gRPC messages: inside a 5-byte prefix or a body."""

    __slots__ = ("body_left", "prefix")

    def __init__(self) -> None:
        self.prefix = b""
        self.body_left = 0

    def over(self, data: bytes, start: int, end: int, limit: int) -> int:
        """Pass over `data[start:end]`; the length of a message over `limit` announced there, else -1."""
        at = start
        while at < end:
            if self.body_left:
                if self.body_left >= end - at:
                    self.body_left -= end - at
                    return -1
                at += self.body_left
                self.body_left = 0
            elif not self.prefix and end - at >= 5:  # a whole prefix: no copy of it
                length = int.from_bytes(data[at + 1 : at + 5], "big")
                at += 5
                if length > limit:
                    return length
                self.body_left = length
            else:
                step = min(5 - len(self.prefix), end - at)
                self.prefix += data[at : at + step]
                at += step
                if len(self.prefix) == 5:
                    length = int.from_bytes(self.prefix[1:], "big")
                    self.prefix = b""
                    if length > limit:
                        return length
                    self.body_left = length
        return -1


class Http2Guard(Guard):
    """One gRPC connection's guard; see the module's docstring."""

    def __init__(
        self,
        inner: ProtocolFactory,
        count: ConnectionCount,
        policy: ConnectionPolicy,
        limits: Http2Limits,
    ) -> None:
        super().__init__(inner, count, policy)
        self.limits = limits
        self.closing = False
        # The frame being read: the preface first, then each frame's payload after its 9-byte header.
        self.left = _PREFACE
        self.kind = -1
        self.flags = 0
        self.stream = 0
        self.head = b""
        # Between the first and the last frame of a header block (the preface and first HEADERS: the
        # header timer armed at the connection's start).
        self.in_header_block = False
        # In a DATA frame of a stream whose messages are followed: its content bytes not yet read.
        self.reading: _Messages | None = None
        self.pad_pending = False
        self.content_left = 0
        self.messages: dict[int, _Messages] = {}
        self.last_stream = 0
        self.rejected: list[tuple[int, int]] = []
        self.resets = 0
        self.resets_until = 0.0
        self.opened = 0  # streams the client opened since the reset window began
        self.calls = 0
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.inner is not None:
            self.idle_since = self.loop.time()
            self.idle_timer = self.loop.call_later(self.policy.idle_timeout, self.on_idle_timer)

    def wrap(self, transport: asyncio.Transport) -> asyncio.Transport:
        """grpclib's writes (and ours) batched per turn of the loop; see `WriteBatch`."""
        return WriteBatch(transport, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        super().connection_lost(exc)

    def call_started(self) -> None:
        self.calls += 1

    def call_ended(self) -> None:
        self.calls -= 1
        if not self.calls:
            self.idle_since = self.loop.time()

    def on_idle_timer(self) -> None:
        now = self.loop.time()
        due = (self.idle_since if not self.calls else now) + self.policy.idle_timeout
        if self.calls or now < due:
            self.idle_timer = self.loop.call_at(due, self.on_idle_timer)
            return
        self.idle_timer = None
        self.end(_NO_ERROR)

    def end(self, code: int) -> None:
        """GOAWAY naming the last stream grpclib was given, then close; nothing more is parsed."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(goaway(self.last_stream, code))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.closing:
            return
        token = current_connection.set(self)
        try:
            self.scan(data)
        finally:
            current_connection.reset(token)

    def scan(self, data: bytes) -> None:  # noqa: PLR0912, PLR0915  (one pass over the frames; split, it costs calls)
        assert self.inner is not None
        size = len(data)
        at = sent = 0
        while at < size:
            if not self.left and not self.head and size - at >= 9:
                # The common case, a whole frame in this chunk: read from `data` in place, no state kept.
                end = at + 9 + int.from_bytes(data[at : at + 3], "big")
                if end <= size:
                    kind = data[at + 3]
                    if kind == _DATA:
                        flags = data[at + 4]
                        stream = int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF
                        reading = self.messages.get(stream)
                        if reading is not None:
                            start, stop = at + 9, end
                            if flags & _PADDED and stop > start:
                                stop -= data[start]
                                start += 1
                            if stop > start:
                                length = reading.over(data, start, stop, self.limits.max_message_bytes)
                                if length >= 0:
                                    self.rejected.append((stream, length))
                                    flags |= _END_STREAM  # its messages are no longer followed
                        if flags & _END_STREAM:
                            self.messages.pop(stream, None)
                    elif kind == _HEADERS:
                        flags = data[at + 4]
                        stream = int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF
                        if stream > self.last_stream:
                            self.last_stream = stream
                            self.stream_opened()
                            if not flags & _END_STREAM:
                                self.messages[stream] = _Messages()
                        elif flags & _END_STREAM:
                            self.messages.pop(stream, None)
                        self.header_block(flags)
                    elif kind == _CONTINUATION:
                        self.header_block(data[at + 4])
                    elif kind == _RST_STREAM:
                        self.messages.pop(int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF, None)
                        if self.too_many_resets():
                            self.inner.data_received(data[sent : at + 9])
                            self.end(_ENHANCE_YOUR_CALM)
                            return
                    at = end
                    if self.rejected:
                        self.inner.data_received(data[sent:at] if sent or at < size else data)
                        sent = at
                        self.reject()
                    continue
            # A frame (or the preface) split across chunks: its state is kept between them.
            if self.left:
                step = min(self.left, size - at)
                if self.reading is not None:
                    self.read_messages(data, at, step)
                at += step
                self.left -= step
                if self.left:
                    break
            else:
                if self.head or size - at < 9:
                    step = min(9 - len(self.head), size - at)
                    self.head += data[at : at + step]
                    at += step
                    if len(self.head) < 9:
                        break
                    header, start, self.head = self.head, 0, b""
                else:
                    header, start = data, at
                    at += 9
                self.left = int.from_bytes(header[start : start + 3], "big")
                self.kind, self.flags = header[start + 3], header[start + 4]
                self.stream = int.from_bytes(header[start + 5 : start + 9], "big") & 0x7FFFFFFF
                if self.frame_started():
                    self.inner.data_received(data[sent:at])
                    self.end(_ENHANCE_YOUR_CALM)
                    return
                if self.left:
                    continue
            self.frame_ended()
            if self.rejected:
                self.inner.data_received(data[sent:at] if sent or at < size else data)
                sent = at
                self.reject()
        if self.in_header_block:
            self.arm_header_timer()  # a header block is still arriving
        if sent < size:
            self.inner.data_received(data[sent:] if sent else data)

    def header_block(self, flags: int) -> None:
        """A whole HEADERS or CONTINUATION frame: whether its header block goes on in a later frame."""
        if flags & _END_HEADERS:
            self.in_header_block = False
            if self.header_timer is not None:
                self.disarm_header_timer()
        else:
            self.in_header_block = True

    def frame_started(self) -> bool:
        """Note a frame whose header was just read; True when the connection must end at once."""
        kind, stream = self.kind, self.stream
        if kind == _DATA:
            self.reading = self.messages.get(stream)
            if self.reading is not None:
                self.pad_pending = bool(self.flags & _PADDED)
                self.content_left = self.left
        elif kind == _HEADERS:
            self.in_header_block = True
            if stream > self.last_stream:
                self.last_stream = stream
                self.stream_opened()
                if not self.flags & _END_STREAM:
                    self.messages[stream] = _Messages()
            elif self.flags & _END_STREAM:
                self.messages.pop(stream, None)
        elif kind == _CONTINUATION:
            self.in_header_block = True
        elif kind == _RST_STREAM:
            self.messages.pop(stream, None)
            return self.too_many_resets()
        return False

    def stream_opened(self) -> None:
        self.idle_since = now = self.loop.time()
        if now >= self.resets_until:
            self.new_window(now)
        self.opened += 1

    def new_window(self, now: float) -> None:
        self.resets_until = now + RESET_WINDOW
        self.resets = self.opened = 0

    def too_many_resets(self) -> bool:
        now = self.loop.time()
        if now >= self.resets_until:
            self.new_window(now)
        self.resets += 1
        resets = self.resets
        if resets > self.limits.max_client_resets:
            log.warning(
                "a client reset over grpc.max_client_resets (%d) streams in %gs: GOAWAY and closed",
                self.limits.max_client_resets,
                RESET_WINDOW,
            )
            return True
        if resets >= PREMATURE_RESETS and resets * 2 > self.opened:
            log.warning(
                "a client reset %d of the %d streams it opened in %gs (rapid reset): GOAWAY and closed",
                resets,
                self.opened,
                RESET_WINDOW,
            )
            return True
        return False

    def frame_ended(self) -> None:
        if self.kind in (_HEADERS, _CONTINUATION):
            self.header_block(self.flags)
        elif self.kind == _DATA:
            self.reading = None
            if self.flags & _END_STREAM:
                self.messages.pop(self.stream, None)

    def read_messages(self, data: bytes, at: int, step: int) -> None:
        assert self.reading is not None
        end = at + step
        if self.pad_pending:
            self.pad_pending = False
            self.content_left -= 1 + data[at]
            at += 1
        step = min(self.content_left, end - at)
        if step <= 0:
            return
        self.content_left -= step
        length = self.reading.over(data, at, at + step, self.limits.max_message_bytes)
        if length >= 0:
            self.messages.pop(self.stream, None)
            self.reading = None
            self.rejected.append((self.stream, length))

    def reject(self) -> None:
        """End the calls whose message is too large: grpclib sees the client cancel them (and discards what
        else arrives for them), the client gets RESOURCE_EXHAUSTED and a reset to stop sending."""
        assert self.inner is not None
        assert self.transport is not None
        limit = self.limits.max_message_bytes
        for stream, length in self.rejected:
            self.inner.data_received(rst_stream(stream, _CANCEL))
            message = f"request message of {length} bytes is over grpc.max_message_bytes ({limit})"
            self.transport.write(
                trailers_only(stream, _RESOURCE_EXHAUSTED, message) + rst_stream(stream, _NO_ERROR)
            )
        self.rejected.clear()
