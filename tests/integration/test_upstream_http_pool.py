"""The upstream HTTP/1.1 pool against a scripted raw server, on asyncio's loop and on uvloop (what
`llmgw serve` runs): keep-alive reuse, every way a body can be delimited, connections the server dropped,
the connection limit, and the exchanges that must never put a connection back in the pool."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvloop

from llmgw.infrastructure.providers.http import HTTPPool, UpstreamConnectionError

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


_servers: list[asyncio.Server] = []


def on_both_loops(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    """Run the test on asyncio's loop and on uvloop (whose transports behave differently)."""

    async def main() -> None:
        try:
            await test()
        finally:
            for server in _servers:
                server.close()
            _servers.clear()

    @pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
    def run(loop: str) -> None:
        (uvloop.run if loop == "uvloop" else asyncio.run)(main())

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


@dataclass
class Server:
    """Answers each request on a connection with `reply`, and counts what it saw."""

    reply: Reply
    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                await self.reply(reader, writer, body)
                if writer.is_closing():
                    return
        finally:
            self.open_now -= 1
            writer.close()


async def serve(reply: Reply) -> Server:
    state = Server(reply)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    _servers.append(server)
    return state


def pool_for(server: Server, limit: int = 10) -> HTTPPool:
    return HTTPPool(
        f"http://127.0.0.1:{server.port}/v1",
        limit=limit,
        connect_timeout=2,
        headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
    )


def fixed(body: bytes, extra: bytes = b"") -> Reply:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
        await writer.drain()

    return reply


@on_both_loops
async def test_sequential_requests_share_one_kept_alive_connection() -> None:
    server = await serve(fixed(b'{"ok":true}'))
    pool = pool_for(server)
    for _ in range(3):
        response = await pool.post("/chat/completions", b'{"q":1}')
        assert (response.status, await response.read_all()) == (200, b'{"ok":true}')
        response.release()
    assert server.connections == 1
    head = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in head
    assert b"\r\nContent-Length: 7\r\n" in head
    assert head.endswith(b'\r\n\r\n{"q":1}')
    await pool.close()


@on_both_loops
async def test_a_chunked_body_arrives_piece_by_piece_and_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Thing: A\r\n\r\n5\r\ndata:\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"3\r\n 1\n\r\n0\r\n\r\n")
        await writer.drain()

    server = await serve(chunked)
    pool = pool_for(server)
    response = await pool.post("/x", b"{}")
    assert response.headers["x-thing"] == "A"
    assert await response.read() == b"data:"
    assert await response.read() == b" 1\n"
    assert await response.read() == b""
    assert response.at_eof()
    response.release()
    again = await pool.post("/x", b"{}")
    assert await again.read_all() == b"data: 1\n"
    again.release()
    assert server.connections == 1
    await pool.close()


@on_both_loops
async def test_a_body_delimited_by_the_close_of_the_connection_is_read_whole() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server = await serve(until_close)
    pool = pool_for(server)
    response = await pool.post("/x", b"{}")
    assert await response.read_all() == b"all of it"
    response.release()
    response = await pool.post("/x", b"{}")  # not reused: the server said close
    assert await response.read_all() == b"all of it"
    response.release()
    assert server.connections == 2
    assert pool.open_connections == 0
    await pool.close()


@on_both_loops
async def test_a_connection_the_server_dropped_while_idle_is_replaced_without_an_error() -> None:
    async def then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
        await fixed(b"{}")(reader, writer, body)
        writer.close()  # keep-alive promised, then dropped, as servers do with idle connections

    server = await serve(then_hang_up)
    pool = pool_for(server)
    for _ in range(3):
        response = await pool.post("/x", b"{}")
        assert await response.read_all() == b"{}"
        response.release()
        await asyncio.sleep(0.02)  # the close reaches us while the connection is idle
    assert server.connections == 3
    await pool.close()


@on_both_loops
async def test_no_more_connections_than_the_limit_are_opened() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
        await asyncio.sleep(0.02)
        await fixed(b"{}")(reader, writer, body)

    server = await serve(slow)
    pool = pool_for(server, limit=2)

    async def call() -> bytes:
        response = await pool.post("/x", b"{}")
        try:
            return await response.read_all()
        finally:
            response.release()

    assert await asyncio.gather(*[call() for _ in range(8)]) == [b"{}"] * 8
    assert server.most_open == 2
    assert len(server.requests) == 8
    await pool.close()


@on_both_loops
async def test_a_connection_broken_mid_body_fails_the_read_and_is_not_reused() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    server = await serve(cut)
    pool = pool_for(server)
    response = await pool.post("/x", b"{}")
    assert await response.read() == b"only part"
    with pytest.raises(UpstreamConnectionError):
        await response.read()
    response.release()
    assert pool.open_connections == 0
    await pool.close()


@on_both_loops
async def test_an_answer_that_is_not_http_is_an_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    server = await serve(garbage)
    pool = pool_for(server)
    with pytest.raises(UpstreamConnectionError, match="not valid HTTP"):
        await pool.post("/x", b"{}")
    assert pool.open_connections == 0
    await pool.close()


@on_both_loops
async def test_a_gzip_body_is_decoded() -> None:
    server = await serve(fixed(gzip.compress(b'{"packed":true}'), b"Content-Encoding: gzip\r\n"))
    pool = pool_for(server)
    response = await pool.post("/x", b"{}")
    assert await response.read_all() == b'{"packed":true}'
    response.release()
    await pool.close()


@on_both_loops
async def test_an_answer_left_unread_closes_its_connection() -> None:
    async def in_two_parts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"x" * 99_990)
        await writer.drain()

    server = await serve(in_two_parts)
    pool = pool_for(server)
    response = await pool.post("/x", b"{}")
    response.release()  # released before the body was read: the rest is still on the wire
    assert pool.open_connections == 0
    response = await pool.post("/x", b"{}")
    assert len(await response.read_all()) == 100_000
    response.release()
    assert server.connections == 2
    await pool.close()


@on_both_loops
async def test_a_caller_that_gives_up_waiting_frees_its_slot_and_connection() -> None:
    answer = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
        await answer.wait()
        await fixed(b"{}")(reader, writer, body)

    server = await serve(held)
    pool = pool_for(server, limit=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await pool.post("/x", b"{}")
    assert pool.open_connections == 0
    answer.set()
    async with asyncio.timeout(2):  # the only slot is free again
        response = await pool.post("/x", b"{}")
    assert await response.read_all() == b"{}"
    response.release()
    await pool.close()


@on_both_loops
async def test_https_checks_the_servers_certificate_and_keeps_the_connection_alive() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    state = Server(fixed(b'{"tls":true}'))
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=server_context)
    _servers.append(server)
    base_url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    pool = HTTPPool(base_url, limit=2, connect_timeout=2, headers={}, ssl_context=trusting)
    for _ in range(2):
        response = await pool.post("/x", b"{}")
        assert await response.read_all() == b'{"tls":true}'
        response.release()
    assert state.connections == 1
    await pool.close()
    # The system's trust store does not know this CA: the connection is refused, nothing is sent.
    untrusting = HTTPPool(base_url, limit=1, connect_timeout=2, headers={})
    with pytest.raises(UpstreamConnectionError, match="cannot connect"):
        await untrusting.post("/x", b"{}")
    await untrusting.close()
    assert len(state.requests) == 2


@on_both_loops
async def test_a_closed_pool_closes_its_connections_and_opens_no_more() -> None:
    server = await serve(fixed(b"{}"))
    pool = pool_for(server)
    response = await pool.post("/x", b"{}")
    await response.read_all()
    response.release()
    assert pool.open_connections == 1
    await pool.close()
    assert pool.open_connections == 0
    with pytest.raises(UpstreamConnectionError, match="closed"):
        await pool.post("/x", b"{}")
    assert server.connections == 1


@on_both_loops
async def test_nothing_listening_is_a_connection_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    pool = HTTPPool(f"http://127.0.0.1:{port}", limit=1, connect_timeout=1, headers={})
    with pytest.raises(UpstreamConnectionError, match="cannot connect"):
        await pool.post("/x", b"{}")
    await pool.close()


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [("ftp://host/v1", {}), ("http:///v1", {}), ("http://host/v1", {"X-Evil": "a\r\nInjected: 1"})],
)
def test_a_bad_base_url_or_header_is_refused(base_url: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"base URL|line break"):
        HTTPPool(base_url, limit=1, connect_timeout=1, headers=headers)
