"""A real HTTP proxy on 127.0.0.1:0 for tests: `CONNECT host:port` tunnels and absolute-form forwarding
(`POST http://host:port/path`), counting what passed through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit


class FakeProxy:
    """Forwards each absolute-form request on a connection of its own (`Connection: close` both ways),
    and pipes a CONNECT tunnel's bytes both ways until either side closes."""

    def __init__(self) -> None:
        #: one line per request that passed: "CONNECT host:port" or "POST http://host:port/path"
        self.seen: list[str] = []
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeProxy is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def tunnels(self) -> list[str]:
        return [line.removeprefix("CONNECT ") for line in self.seen if line.startswith("CONNECT ")]

    @property
    def forwarded(self) -> list[str]:
        return [line for line in self.seen if not line.startswith("CONNECT ")]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1)

    async def __aenter__(self) -> FakeProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, head, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self.seen.append(f"CONNECT {target}")
        self._writers.add(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await _pipe_both_ways(reader, writer, up_reader, up_writer)
        finally:
            self._writers.discard(up_writer)
            up_writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        length = 0
        fields = []
        for line in head.split(b"\r\n")[1:]:
            name = line.partition(b":")[0].strip().lower()
            if name == b"content-length":
                length = int(line.partition(b":")[2])
            if line and name not in (
                b"connection",
                b"proxy-connection",
                b"keep-alive",
                b"proxy-authorization",
            ):
                fields.append(line)
        body = await reader.readexactly(length)
        self.seen.append(f"{method} {target}")
        path = url.path or "/"
        if url.query:
            path += f"?{url.query}"
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        self._writers.add(up_writer)
        try:
            start = f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
            up_writer.write(start + b"\r\n".join(fields) + b"\r\nConnection: close\r\n\r\n" + body)
            # The upstream closes after its answer (we asked it to): pass the answer on until then.
            await _pipe(up_reader, writer)
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()


async def _pipe_both_ways(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Until either side ends the connection."""
    tasks = {asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
