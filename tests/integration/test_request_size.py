"""Request bodies over `http.max_body_bytes` are refused with 413 before they are read whole: at once when
their `Content-Length` says so, and once past the limit when they come chunked; the gateway keeps serving."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Running

LIMIT = 1_000_000  # what `settings_for` gives the gateway
WHOLE = 50_000_000
PIECE = b"x" * 65_536
CHAT = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}
PATHS = ["/v1/chat/completions", "/v1/chat/completions:stream", "/v1/embeddings"]


async def head_and_body(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    """A response's status, headers (lower-cased names) and JSON body, read off a raw connection."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status_line, *lines = head.strip().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, json.loads(body)


def request_head(gw: Running, path: str, framing: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.fronts.ports['http']}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


@pytest.fixture
async def connection(gw: Running) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.fronts.ports["http"])
    try:
        yield reader, writer
    finally:
        writer.close()


def assert_too_large(status: int, body: Any) -> None:
    assert status == 413
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "request_too_large"
    assert f"{LIMIT} bytes" in body["error"]["message"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_body_announced_over_the_limit_is_refused_before_a_byte_of_it_is_sent(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    path: str,
) -> None:
    reader, writer = connection
    writer.write(request_head(gw, path, f"Content-Length: {WHOLE}"))
    started = time.perf_counter()

    async with asyncio.timeout(2.0):  # without the check the gateway waits for the body it was promised
        status, headers, body = await head_and_body(reader)

    assert time.perf_counter() - started < 1.0
    assert_too_large(status, body)
    assert headers["x-request-id"]
    assert fakes["local"].requests == []


async def test_a_chunked_body_is_cut_off_soon_after_the_limit_rather_than_read_whole(
    gw: Running, fakes: dict[str, FakeUpstream], connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    reader, writer = connection
    writer.write(request_head(gw, "/v1/chat/completions", "Transfer-Encoding: chunked"))
    answer = asyncio.create_task(head_and_body(reader))
    sent = 0
    async with asyncio.timeout(5.0):
        while not answer.done() and sent < WHOLE:
            writer.write(b"%x\r\n%b\r\n" % (len(PIECE), PIECE))
            await writer.drain()
            sent += len(PIECE)
            await asyncio.sleep(0)  # let the answer, once it came, end the loop
        status, _, body = await answer

    assert_too_large(status, body)
    # The limit, plus what the kernel's socket buffers and aiohttp's read-ahead held when the 413 went out.
    assert sent < WHOLE // 5
    assert fakes["local"].requests == []


async def test_a_client_sending_a_large_body_gets_the_413_and_the_gateway_keeps_serving(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(WHOLE // len(PIECE)):
            yield PIECE

    async with aiohttp.ClientSession() as session:
        url = f"{gw.rest_url}/v1/chat/completions"
        async with session.post(
            url, data=io.BytesIO(b"x" * WHOLE), headers={"Content-Type": "application/json"}
        ) as whole:
            assert_too_large(whole.status, await whole.json())
        async with session.post(url, data=chunked(), headers={"Content-Type": "application/json"}) as pieces:
            assert_too_large(pieces.status, await pieces.json())
        async with session.post(url, json=CHAT) as served:
            assert served.status == 200
    assert len(fakes["local"].requests) == 1


async def test_a_body_of_exactly_the_limit_is_accepted(
    gw: Running, fakes: dict[str, FakeUpstream], connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    payload = json.dumps(CHAT).encode()
    payload += b" " * (LIMIT - len(payload))  # JSON allows trailing whitespace
    reader, writer = connection
    writer.write(request_head(gw, "/v1/chat/completions", f"Content-Length: {len(payload)}") + payload)

    async with asyncio.timeout(5.0):
        status, _, body = await head_and_body(reader)

    assert status == 200, body
    assert body["choices"][0]["message"]["content"]
    assert len(fakes["local"].requests) == 1
