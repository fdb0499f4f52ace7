"""A client gone between two writes of a stream is a cancellation, not a bug to log with a traceback.

Under load the client's reset often reaches aiohttp while the handler is about to write, so the write
fails before the handler is cancelled. The race is made certain here by failing the second write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientConnectionResetError
from aiohttp_sse import EventSourceResponse

from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running


async def test_a_write_to_a_client_that_left_logs_no_error_and_records_a_cancellation(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    writes = 0
    real_write = EventSourceResponse.write

    async def write_then_fail(self: EventSourceResponse, data: bytes) -> Any:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise ClientConnectionResetError("Cannot write to closing transport")
        return await real_write(self, data)

    monkeypatch.setattr(EventSourceResponse, "write", write_then_fail)
    fakes["local"].script(Script(chunks=5, chunk_delay=0.05))
    body = {"model": "local/llama", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response,
    ):
        generation_id = response.headers["x-generation-id"]
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    await asyncio.wait_for(fakes["local"].requests[-1].disconnected.wait(), 1.0)

    record = await gw.gateway.get_generation(generation_id)
    assert record.status.value == "cancelled"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
