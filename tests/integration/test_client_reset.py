"""A client gone in the middle of a stream is a cancellation, not a bug to log with a traceback.

Under load the client's reset often reaches aiohttp while the handler is about to write, so the write
fails before the handler is cancelled; here a real client resets its connection (RST, not FIN) while
the upstream keeps sending, many times, so both orders happen.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import orjson
import pytest

from llmgw.domain.errors import NotFound
from llmgw.domain.generation import GenerationRecord
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

ROUNDS = 10


async def stream_then_reset(gw: Running) -> str:
    """Ask for a stream, read until its first event, then reset the connection; the generation id."""
    host, port = "127.0.0.1", gw.fronts.ports["http"]
    reader, writer = await asyncio.open_connection(host, port)
    body = orjson.dumps(
        {"model": "local/llama", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readuntil(b"\n\n")  # the first event
    generation_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-generation-id:")
    )
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.transport.abort()
    return generation_id


async def recorded(gw: Running, generation_id: str) -> GenerationRecord:
    """The record, once the handler's cancellation has written it."""
    async with asyncio.timeout(2):
        while True:
            try:
                return await gw.gateway.get_generation(generation_id)
            except NotFound:
                await asyncio.sleep(0.01)


async def test_a_client_that_resets_mid_stream_logs_no_error_and_is_recorded_cancelled(
    gw: Running, fakes: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fakes["local"].script(*[Script(chunks=20, chunk_delay=0.01) for _ in range(ROUNDS)])

    ids = [await stream_then_reset(gw) for _ in range(ROUNDS)]

    for generation_id in ids:
        record = await recorded(gw, generation_id)
        assert record.status.value == "cancelled"
        assert 1 <= record.completion_tokens < 20
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
