"""Drain on SIGTERM, with the real process: `/readyz` turns 503 at once, unary requests finish, streams
longer than `server.shutdown_grace` end with an error event and are recorded `cancelled`, exit 0; a
second signal stops the process at once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from tests.e2e.conftest import GrpcioStubs
from tests.e2e.test_serve_process import Process, llmgw_serve
from tests.fakes.upstream import FakeUpstream, Script

GRACE = 1.0
# A stream of 40 chunks a quarter of a second apart: far longer than the grace.
LONG_STREAM = Script(chunks=40, chunk_delay=0.25)
CHAT = {"model": "dashscope/qwen-turbo", "messages": [{"role": "user", "content": "hi"}]}


def _env(fake: FakeUpstream) -> dict[str, str]:
    return {
        "LLMGW_LLM__PROVIDERS__DASHSCOPE__BASE_URL": fake.base_url,
        "DASHSCOPE_API_KEY": "sk-test",
        "LLMGW_SERVER__SHUTDOWN_GRACE": str(GRACE),
    }


def _records(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Generation id → (status, error code), read from the SQLite file the process wrote."""
    with sqlite3.connect(tmp_path / "llmgw.db") as db:
        rows = db.execute("SELECT id, status, error_code FROM generations").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


async def _read_all(call: Any, into: list[Any]) -> None:
    while (chunk := await call.read()) is not grpc.aio.EOF:
        into.append(chunk)


async def _exit(process: Process, within: float) -> tuple[int | None, str]:
    output, _ = await asyncio.wait_for(process.proc.communicate(), within)
    return process.proc.returncode, output.decode()


async def test_sigterm_fails_readyz_at_once_finishes_unary_requests_and_ends_long_streams_with_an_error(
    tmp_path: Path,
) -> None:
    async with FakeUpstream("dashscope") as fake:
        fake.script(LONG_STREAM, Script(delay=0.5))
        async with llmgw_serve(tmp_path, _env(fake)) as process, aiohttp.ClientSession() as session:
            stream = await session.post(
                f"{process.rest_url}/v1/chat/completions", json=CHAT | {"stream": True}
            )
            first = await stream.content.readline()
            unary = asyncio.create_task(session.post(f"{process.rest_url}/v1/chat/completions", json=CHAT))
            async with asyncio.timeout(5):
                await fake.wait_for_requests(2)
            signalled = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            async with session.get(f"http://127.0.0.1:{process.health}/readyz") as ready:
                readyz = ready.status, (await ready.json())["status"]
            with pytest.raises(aiohttp.ClientConnectionError):  # the REST listener is closed
                await session.get(f"{process.rest_url}/v1/models")
            answer = await unary
            unary_status, unary_body = answer.status, await answer.json()
            events = [line async for line in stream.content if line.strip()]
            code, output = await _exit(process, GRACE + 5)
            stopped = time.monotonic() - signalled

    assert first.startswith(b"data: {")
    assert readyz == (503, "draining")
    assert unary_status == 200, unary_body
    error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "shutting_down"
    assert events[-1] == b"data: [DONE]\n"
    assert code == 0, output
    assert stopped < GRACE + 3, output
    records = _records(tmp_path)
    assert records[stream.headers["x-generation-id"]] == ("cancelled", "shutting_down")
    assert records[unary_body["id"]] == ("completed", "")


async def test_a_grpc_stream_longer_than_the_grace_ends_with_unavailable_and_is_recorded_cancelled(
    tmp_path: Path, grpcio_stubs: GrpcioStubs
) -> None:
    async with FakeUpstream("dashscope") as fake:
        fake.script(LONG_STREAM)
        async with llmgw_serve(tmp_path, _env(fake)) as process:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{process.grpc}") as channel:
                stub = grpcio_stubs.gateway_grpc.LLMGatewayServiceStub(channel)
                request = grpcio_stubs.chat.CreateChatCompletionRequest(
                    model="dashscope/qwen-turbo",
                    messages=[grpcio_stubs.chat.ChatMessage(role="user", content="hi")],
                )
                call = stub.CreateChatCompletionStream(request, timeout=15)
                chunks: list[Any] = [await call.read()]
                process.proc.send_signal(signal.SIGTERM)
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await _read_all(call, chunks)
            code, output = await _exit(process, GRACE + 5)

    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert 1 <= len(chunks) < 40
    assert code == 0, output
    assert _records(tmp_path)[chunks[0].id] == ("cancelled", "shutting_down")


async def test_a_second_signal_stops_the_process_at_once(tmp_path: Path) -> None:
    async with FakeUpstream("dashscope") as fake:
        fake.script(LONG_STREAM)
        async with llmgw_serve(tmp_path, _env(fake)) as process, aiohttp.ClientSession() as session:
            stream = await session.post(
                f"{process.rest_url}/v1/chat/completions", json=CHAT | {"stream": True}
            )
            await stream.content.readline()
            process.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            signalled = time.monotonic()
            process.proc.send_signal(signal.SIGINT)
            code, output = await _exit(process, 5)
            stopped = time.monotonic() - signalled

    assert code == -signal.SIGINT, output
    assert stopped < GRACE / 2, output
    assert "second SIGINT: stopping at once" in output
