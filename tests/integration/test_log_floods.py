"""Malformed HTTP requests on the REST and health ports: a 400 each and a quiet DEBUG line, never an ERROR
with a traceback that anyone who can reach the port could write one per request."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from llmgw.infrastructure.logs import AIOHTTP_SERVER_LOGGER, MalformedRequestFilter
from tests.harness import Running

MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "invalid header": b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "request line too long": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "tls on the http port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
}


async def status_line(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5.0)  # aiohttp closes after its 400
    finally:
        writer.close()
    return response.partition(b"\r\n")[0]


async def send_malformed(gw: Running, port_name: str, count: int) -> list[bytes]:
    kinds = list(MALFORMED.values())
    port = gw.fronts.ports[port_name]
    return [await status_line(port, kinds[n % len(kinds)]) for n in range(count)]


def from_aiohttp(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("aiohttp")]


@pytest.mark.parametrize("port_name", ["http", "health"])
async def test_malformed_requests_get_a_400_and_no_error_or_traceback_in_the_log(
    gw: Running, port_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    statuses = await send_malformed(gw, port_name, 50)
    await asyncio.sleep(0.05)  # let the last connection's handler finish logging

    assert statuses == [b"HTTP/1.0 400 Bad Request"] * 50
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []
    lines = from_aiohttp(caplog)
    assert len(lines) == 50  # one line each, with the reason, for whoever debugs a client
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert any("Invalid header token" in r.getMessage() for r in lines)


async def test_malformed_requests_write_nothing_at_the_default_info_level(
    gw: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    statuses = await send_malformed(gw, "http", 8)
    await asyncio.sleep(0.05)

    assert set(statuses) == {b"HTTP/1.0 400 Bad Request"}
    assert from_aiohttp(caplog) == []


async def test_the_gateway_keeps_answering_after_a_burst_of_malformed_requests(gw: Running) -> None:
    await send_malformed(gw, "http", 20)

    assert await status_line(
        gw.fronts.ports["http"], b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ) == (b"HTTP/1.1 200 OK")


def test_errors_that_are_not_malformed_requests_keep_their_level_and_traceback() -> None:
    try:
        raise RuntimeError("a bug in a handler")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        AIOHTTP_SERVER_LOGGER, logging.ERROR, __file__, 1, "Error handling request", (), exc_info
    )

    assert MalformedRequestFilter().filter(record) is True
    assert record.levelno == logging.ERROR
    assert record.exc_info == exc_info
