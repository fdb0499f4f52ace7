"""The upstream transport port's conformance suite: every behaviour a provider call relies on, run against
both implementations (`fast` on asyncio's loop and on uvloop, what `llmgw serve` runs; `aiohttp` on
asyncio's loop) and a scripted raw server that counts connections, open connections and requests.

Behaviour is observed from the outside only: the server's counts, the bytes read, the errors raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import random
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
import trustme
import uvloop

from llmgw.infrastructure.providers.aiohttp_transport import AiohttpTransport
from llmgw.infrastructure.providers.fast_transport import FastTransport
from llmgw.infrastructure.providers.transport import (
    ResponseTooLarge,
    Transport,
    TransportError,
    UpstreamResponse,
)

MiB = 1 << 20
VARIANTS = ("fast/asyncio", "fast/uvloop", "aiohttp/asyncio")
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer k"}


@dataclass(eq=False)
class Exchange:
    """One request as the server read it; `body` is empty when the server does not read bodies."""

    index: int
    #: the request's number on its connection
    on_connection: int
    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stopping: asyncio.Event

    async def answer(self, body: bytes, extra: bytes = b"", status: bytes = b"200 OK") -> None:
        self.writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body))
        await self.writer.drain()

    async def until_client_hangs_up(self) -> None:
        """Wait for the end of the connection (the client sends nothing more on it)."""
        with contextlib.suppress(ConnectionError):
            await self.reader.read(1)


Reply = Callable[[Exchange], Awaitable[None]]


@dataclass(eq=False)
class Server:
    """Answers each request with `reply`, and counts what it saw."""

    reply: Reply
    reads_bodies: bool = True
    port: int = 0
    scheme: str = "http"
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        try:
            for on_connection in itertools.count():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length) if self.reads_bodies else b""
                self.requests.append(head + body)
                index = len(self.requests) - 1
                await self.reply(Exchange(index, on_connection, head, body, reader, writer, self.stopping))
                if writer.is_closing():
                    return
        except ConnectionError:
            return
        finally:
            self.open_now -= 1
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.close()

    async def shutdown(self) -> None:
        """End every connection and let each handler return (a handler left pending is logged)."""
        self.stopping.set()
        for writer in self._writers:
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1)


class Case:
    """One transport variant, and the servers and transports a test made (closed after it)."""

    def __init__(self, variant: str) -> None:
        self.kind, self.loop = variant.split("/")
        self._servers: list[tuple[asyncio.Server, Server]] = []
        self._transports: list[Transport] = []

    async def serve(
        self, reply: Reply, *, reads_bodies: bool = True, tls: ssl.SSLContext | None = None
    ) -> Server:
        state = Server(reply, reads_bodies=reads_bodies, scheme="https" if tls else "http")
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=tls)
        state.port = server.sockets[0].getsockname()[1]
        self._servers.append((server, state))
        return state

    def transport(
        self,
        target: Server | str,
        *,
        limit: int = 10,
        keepalive: float = 30.0,
        max_response_bytes: int = 64 * MiB,
        ssl_context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> Transport:
        base_url = target if isinstance(target, str) else target.base_url
        common: dict[str, Any] = {
            "limit": limit,
            "connect_timeout": 2.0,
            "headers": HEADERS if headers is None else headers,
            "max_response_bytes": max_response_bytes,
            "keepalive": keepalive,
            "ssl_context": ssl_context,
        }
        transport: Transport
        if self.kind == "aiohttp":
            transport = AiohttpTransport(
                base_url, proxy="", **common
            )  # hermetic: no proxy from the environment
        else:
            transport = FastTransport(base_url, **common)
        self._transports.append(transport)
        return transport

    async def close(self) -> None:
        for transport in self._transports:
            await transport.close()
        for server, state in self._servers:
            server.close()
            await state.shutdown()


TestBody = Callable[[Case], Coroutine[Any, Any, None]]


def conformance_except(gaps: Mapping[str, str]) -> Callable[[TestBody], Callable[[str], None]]:
    """Run the test against every transport variant, each on its own loop; a variant named in `gaps`
    (with the reason) is expected to fail, strictly: the day it passes, the gap is noticed."""

    def decorate(test: TestBody) -> Callable[[str], None]:
        async def main(case: Case) -> None:
            try:
                await test(case)
            finally:
                await case.close()

        variants = [
            pytest.param(v, marks=pytest.mark.xfail(raises=TransportError, reason=gaps[v], strict=True))
            if v in gaps
            else v
            for v in VARIANTS
        ]

        @pytest.mark.parametrize("variant", variants)
        def run(variant: str) -> None:
            case = Case(variant)
            (uvloop.run if case.loop == "uvloop" else asyncio.run)(main(case))

        run.__name__, run.__doc__ = test.__name__, test.__doc__
        return run

    return decorate


conformance = conformance_except({})


def fixed(body: bytes, extra: bytes = b"") -> Reply:
    async def reply(exchange: Exchange) -> None:
        await exchange.answer(body, extra)

    return reply


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


async def call(transport: Transport, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await transport.post("/x", body)
    try:
        data = await response.read_all()
    except BaseException:
        response.close()
        raise
    response.release()
    return response.status, data


async def read_counting(response: UpstreamResponse, sizes: list[int]) -> None:
    """Read the body to its end, dropping the bytes, noting the size of each read."""
    while data := await response.read():
        sizes.append(len(data))


# Keep-alive and the connection pool


@conformance
async def test_sequential_requests_share_one_kept_alive_connection(case: Case) -> None:
    server = await case.serve(fixed(b'{"ok":true}', b"X-Thing: A\r\n"))
    transport = case.transport(server)
    for _ in range(3):
        response = await transport.post("/chat/completions", b'{"q":1}')
        assert (response.status, response.headers["x-thing"]) == (200, "A")
        assert await response.read_all() == b'{"ok":true}'
        response.release()
    assert server.connections == 1
    head = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    lines = head.lower().split(b"\r\n")
    assert b"authorization: bearer k" in lines
    assert b"content-length: 7" in lines
    assert head.endswith(b'\r\n\r\n{"q":1}')


@conformance
async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error(case: Case) -> None:
    async def then_hang_up(exchange: Exchange) -> None:
        await exchange.answer(b"{}")
        exchange.writer.close()  # keep-alive promised, then dropped, as servers do with idle connections

    server = await case.serve(then_hang_up)
    transport = case.transport(server)
    for _ in range(3):
        assert await call(transport) == (200, b"{}")
        await until(lambda: server.open_now == 0)
        await asyncio.sleep(0.02)  # the close reaches the client while the connection is idle
    assert server.connections == 3


@conformance_except(
    {
        "aiohttp/asyncio": "aiohttp retries a request on a pooled connection the server closed only for "
        "idempotent methods (RFC 9112 9.3.1.1), never for a POST"
    }
)
async def test_a_connection_the_server_closes_as_the_next_request_arrives_is_replaced(case: Case) -> None:
    async def one_per_connection(exchange: Exchange) -> None:
        if exchange.on_connection == 0:
            await exchange.answer(b"{}")
        else:  # its idle timeout fired as the request came: closed, nothing answered
            exchange.writer.close()

    server = await case.serve(one_per_connection)
    transport = case.transport(server)
    for _ in range(3):
        assert await call(transport) == (200, b"{}")
    assert server.connections == 3


@conformance
async def test_idle_connections_close_after_their_keep_alive_expiry_even_when_no_request_comes(
    case: Case,
) -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(0.05)
        await exchange.answer(b"{}")

    server = await case.serve(slow)
    transport = case.transport(server, keepalive=0.2)
    assert await asyncio.gather(*[call(transport) for _ in range(5)]) == [(200, b"{}")] * 5
    assert server.open_now == 5  # a burst leaves its connections open for reuse...
    await until(lambda: server.open_now == 0, within=2.0)  # ...for their keep-alive time only
    assert len(server.requests) == 5


@conformance
async def test_no_more_connections_than_the_limit_are_opened(case: Case) -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(0.02)
        await exchange.answer(b"{}")

    server = await case.serve(slow)
    transport = case.transport(server, limit=2)
    assert await asyncio.gather(*[call(transport) for _ in range(8)]) == [(200, b"{}")] * 8
    assert server.most_open == 2
    assert len(server.requests) == 8


# Every way a body can be delimited, and interim answers


@conformance
async def test_a_chunked_body_with_trailers_arrives_whole_and_its_connection_is_reused(case: Case) -> None:
    async def chunked(exchange: Exchange) -> None:
        writer = exchange.writer
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\ndata:\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"3\r\n 1\n\r\n0\r\nX-Checksum: abc\r\n\r\n")
        await writer.drain()

    server = await case.serve(chunked)
    transport = case.transport(server)
    response = await transport.post("/x", b"{}")
    assert await response.read() == b"data:"
    assert await response.read_all() == b" 1\n"
    response.release()
    assert await call(transport) == (200, b"data: 1\n")
    assert server.connections == 1


@conformance
async def test_a_read_deadline_lets_a_steady_stream_through_and_ends_a_silent_one(case: Case) -> None:
    """A stream's idle timeout: each read's deadline is 0.15 s on; chunks 40 ms apart for longer than that
    all arrive (the deadline moves with them), then silence fails the next read within its deadline."""

    async def steady_then_silent(exchange: Exchange) -> None:
        writer = exchange.writer
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(0.04)
        await exchange.until_client_hangs_up()

    server = await case.serve(steady_then_silent)
    transport = case.transport(server)
    response = await transport.post("/x", b"{}")
    loop = asyncio.get_running_loop()
    received = b""
    while len(received) < 20:
        received += await response.read(loop.time() + 0.15)
    started = loop.time()
    with pytest.raises(TimeoutError):
        await response.read(started + 0.15)
    waited = loop.time() - started
    response.close()

    assert received == b"ok" * 10
    assert 0.14 <= waited < 0.5


@conformance
async def test_a_body_delimited_by_the_close_of_the_connection_is_read_whole(case: Case) -> None:
    async def until_close(exchange: Exchange) -> None:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of")
        await exchange.writer.drain()
        await asyncio.sleep(0.02)
        exchange.writer.write(b" it")
        await exchange.writer.drain()
        exchange.writer.close()

    server = await case.serve(until_close)
    transport = case.transport(server)
    assert await call(transport) == (200, b"all of it")
    assert await call(transport) == (200, b"all of it")  # not reused: the server said close
    assert server.connections == 2


@conformance
async def test_an_interim_100_continue_is_skipped_for_the_real_answer(case: Case) -> None:
    async def continue_first(exchange: Exchange) -> None:
        exchange.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if exchange.index == 0:  # the interim answer alone in a packet, then with the real one
            await exchange.writer.drain()
            await asyncio.sleep(0.02)
        await exchange.answer(b'{"real":true}', b"X-Final: yes\r\n")

    server = await case.serve(continue_first)
    transport = case.transport(server)
    for _ in range(2):
        response = await transport.post("/x", b"{}")
        assert (response.status, response.headers.get("x-final")) == (200, "yes")
        assert await response.read_all() == b'{"real":true}'
        response.release()
    assert server.connections == 1


@conformance
async def test_a_connection_answered_before_its_request_body_was_read_is_not_reused(case: Case) -> None:
    async def refuse_unread(exchange: Exchange) -> None:
        if exchange.index == 0:
            # Keep-alive promised, the body never read: that connection cannot carry another request.
            await exchange.answer(b'{"error":"too large"}', status=b"413 Payload Too Large")
            await exchange.stopping.wait()
        else:
            await exchange.reader.readexactly(2)  # this one's small body
            await exchange.answer(b"{}")

    server = await case.serve(refuse_unread, reads_bodies=False)
    transport = case.transport(server)
    async with asyncio.timeout(5):
        # Twice the largest send buffer the kernel grants: the body cannot all leave before the answer.
        assert await call(transport, b"x" * (8 * MiB)) == (413, b'{"error":"too large"}')
        assert await call(transport) == (200, b"{}")
    assert server.connections == 2


# Compressed bodies and the size cap


@conformance
async def test_gzip_and_deflate_bodies_are_decoded(case: Case) -> None:
    async def packed(exchange: Exchange) -> None:
        if exchange.index == 0:
            await exchange.answer(gzip.compress(b'{"packed":"gzip"}'), b"Content-Encoding: gzip\r\n")
        else:
            await exchange.answer(zlib.compress(b'{"packed":"deflate"}'), b"Content-Encoding: deflate\r\n")

    server = await case.serve(packed)
    transport = case.transport(server)
    assert await call(transport) == (200, b'{"packed":"gzip"}')
    assert await call(transport) == (200, b'{"packed":"deflate"}')


@conformance
async def test_a_body_in_an_unknown_encoding_or_corrupt_is_a_transport_error(case: Case) -> None:
    async def undecodable(exchange: Exchange) -> None:
        if exchange.index == 0:
            await exchange.answer(b"\x1b\x00\x00", b"Content-Encoding: br\r\n")
        else:
            await exchange.answer(b"\x1f\x8b\x08\x00 this is not gzip", b"Content-Encoding: gzip\r\n")

    server = await case.serve(undecodable)
    transport = case.transport(server)
    with pytest.raises(TransportError, match="unsupported content-encoding 'br'"):
        await call(transport)
    with pytest.raises(TransportError, match="corrupt"):
        await call(transport)


@cache
def gzip_bomb() -> bytes:
    """1 MB of gzip that expands to 1 GiB of zeros, built in half a second: a full flush resets the
    compressor, so every further MiB of zeros compresses to the same bytes."""
    zeros = bytes(MiB)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    last_block = packer.flush()[:-8]  # its trailer counts 2 MiB: write the one for 1 GiB
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    return first + again * 1023 + last_block + struct.pack("<II", crc, 1 << 30)


def reset_peak_rss() -> int:
    """Reset the kernel's record of this process's peak RSS (VmHWM) to its current RSS; return that."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return peak_rss()


def peak_rss() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@conformance
async def test_a_gzip_bomb_is_refused_at_the_cap_without_blocking_the_loop_or_filling_memory(
    case: Case,
) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 1_100_000
    server = await case.serve(fixed(bomb, b"Content-Encoding: gzip\r\n"))
    transport = case.transport(server, max_response_bytes=64 * MiB)
    gaps = [0.0]

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    baseline = reset_peak_rss()
    response = await transport.post("/x", b"{}")
    sizes: list[int] = []
    try:
        with pytest.raises(ResponseTooLarge, match=r"max_response_bytes \(67108864 bytes\)"):
            await read_counting(response, sizes)
    finally:
        response.close()
        ticker.cancel()
    growth = peak_rss() - baseline
    assert sum(sizes) <= 64 * MiB
    assert growth < 300 * MiB, f"peak RSS grew by {growth // MiB} MiB"
    assert max(gaps) < 0.5, f"the loop was blocked for {max(gaps):.2f} s"


@conformance
async def test_an_answer_larger_than_max_response_bytes_is_refused_before_it_is_all_read(case: Case) -> None:
    server = await case.serve(fixed(b"x" * (8 * MiB)))
    transport = case.transport(server, max_response_bytes=MiB)
    response = await transport.post("/x", b"{}")
    sizes: list[int] = []
    with pytest.raises(ResponseTooLarge, match=r"larger than max_response_bytes \(1048576 bytes\)"):
        await read_counting(response, sizes)
    response.close()
    assert sum(sizes) <= MiB
    await until(lambda: server.open_now == 0)  # the connection is dropped with the rest of the body


# TLS


def tls_server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


@conformance
async def test_https_checks_the_servers_certificate_and_keeps_the_connection_alive(case: Case) -> None:
    ca = trustme.CA()
    server = await case.serve(fixed(b'{"tls":true}'), tls=tls_server_context(ca, "127.0.0.1"))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    transport = case.transport(server, ssl_context=trusting)
    for _ in range(2):
        assert await call(transport) == (200, b'{"tls":true}')
    assert server.connections == 1


@conformance
async def test_a_certificate_the_client_must_not_trust_is_refused_before_anything_is_sent(case: Case) -> None:
    ca = trustme.CA()
    unknown = await case.serve(fixed(b"{}"), tls=tls_server_context(ca, "127.0.0.1"))
    elsewhere = await case.serve(fixed(b"{}"), tls=tls_server_context(ca, "upstream.example"))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    # The system's trust store does not know this CA; the other certificate names another host.
    for transport in (case.transport(unknown), case.transport(elsewhere, ssl_context=trusting)):
        with pytest.raises(TransportError, match=r"(?i)certificate"):
            await call(transport)
    assert unknown.requests == elsewhere.requests == []


# Back-pressure and cancellation


@conformance
async def test_a_slow_reader_holds_the_server_back_and_still_gets_every_byte(case: Case) -> None:
    body = random.Random(7).randbytes(16 * MiB)
    sent = 0

    async def as_fast_as_it_can(exchange: Exchange) -> None:
        nonlocal sent
        # A small send buffer: what was sent is then mostly what the client took in.
        exchange.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 1 << 16):
            exchange.writer.write(body[start : start + (1 << 16)])
            await exchange.writer.drain()
            sent = start + (1 << 16)

    server = await case.serve(as_fast_as_it_can)
    transport = case.transport(server)
    response = await transport.post("/x", b"{}")
    await asyncio.sleep(0.3)  # the caller reads nothing for a while
    sent_while_unread = sent
    parts: list[bytes] = []
    received = 0
    ahead = 0
    for _ in range(20):  # then slowly
        parts.append(await response.read())
        received += len(parts[-1])
        await asyncio.sleep(0.01)
        ahead = max(ahead, sent - received)
    while data := await response.read():  # then as fast as it can
        parts.append(data)
    response.release()
    assert sent_while_unread < 4 * MiB
    assert ahead < 8 * MiB
    assert b"".join(parts) == body


@conformance
async def test_a_read_cancelled_mid_body_closes_its_connection(case: Case) -> None:
    async def part_then_wait(exchange: Exchange) -> None:
        if exchange.index > 0:
            await exchange.answer(b"{}")
            return
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await exchange.writer.drain()
        await exchange.until_client_hangs_up()
        exchange.writer.close()

    server = await case.serve(part_then_wait)
    transport = case.transport(server)
    response = await transport.post("/x", b"{}")
    assert await response.read() == b"x" * 100
    reading = asyncio.create_task(response.read())
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    response.close()
    await until(lambda: server.open_now == 0)  # the server sees the connection end
    assert await call(transport) == (200, b"{}")
    assert server.connections == 2


@conformance
async def test_a_caller_that_gives_up_waiting_for_the_answer_frees_its_slot_and_connection(
    case: Case,
) -> None:
    async def first_never_answered(exchange: Exchange) -> None:
        if exchange.index > 0:
            await exchange.answer(b"{}")
            return
        await exchange.until_client_hangs_up()
        exchange.writer.close()

    server = await case.serve(first_never_answered)
    transport = case.transport(server, limit=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await transport.post("/x", b"{}")
    await until(lambda: server.open_now == 0)
    async with asyncio.timeout(2):  # the only slot is free again
        assert await call(transport) == (200, b"{}")
    assert server.connections == 2


@conformance
async def test_an_answer_left_unread_closes_its_connection(case: Case) -> None:
    async def in_two_parts(exchange: Exchange) -> None:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        await exchange.writer.drain()
        await asyncio.sleep(0.05)
        exchange.writer.write(b"x" * 99_990)
        await exchange.writer.drain()

    server = await case.serve(in_two_parts)
    transport = case.transport(server)
    response = await transport.post("/x", b"{}")
    response.release()  # released before the body was read: the rest is still on the wire
    assert await call(transport) == (200, b"x" * 100_000)
    assert server.connections == 2


# Broken exchanges and unreachable upstreams


@conformance
async def test_a_connection_broken_mid_body_fails_the_read(case: Case) -> None:
    async def cut(exchange: Exchange) -> None:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await exchange.writer.drain()
        await asyncio.sleep(0.02)
        exchange.writer.close()

    server = await case.serve(cut)
    transport = case.transport(server)
    response = await transport.post("/x", b"{}")
    assert await response.read() == b"only part"
    with pytest.raises(TransportError):
        await response.read()
    response.close()


@conformance
async def test_an_answer_that_is_not_http_is_a_transport_error(case: Case) -> None:
    async def garbage(exchange: Exchange) -> None:
        exchange.writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await exchange.writer.drain()

    server = await case.serve(garbage)
    transport = case.transport(server)
    with pytest.raises(TransportError):
        await call(transport)


@conformance
async def test_a_closed_transport_closes_its_connections_and_refuses_requests(case: Case) -> None:
    server = await case.serve(fixed(b"{}"))
    transport = case.transport(server)
    assert await call(transport) == (200, b"{}")
    assert server.open_now == 1
    await transport.close()
    await until(lambda: server.open_now == 0)
    with pytest.raises(TransportError, match="closed"):
        await transport.post("/x", b"{}")
    assert server.connections == 1


@conformance
async def test_a_host_that_does_not_resolve_is_a_transport_error(case: Case) -> None:
    transport = case.transport("http://nonexistent.invalid/v1")
    with pytest.raises(TransportError):
        await call(transport)


@conformance
async def test_a_refused_connection_is_a_transport_error(case: Case) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = case.transport(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(TransportError):
        await call(transport)


@conformance
async def test_a_bad_base_url_or_header_is_refused_when_the_transport_is_made(case: Case) -> None:
    for base_url, headers in [
        ("ftp://host/v1", {}),
        ("http:///v1", {}),
        ("http://host/v1", {"X-Evil": "a\r\nInjected: 1"}),
    ]:
        with pytest.raises(ValueError, match=r"base URL|line break"):
            case.transport(base_url, headers=headers)
