"""Generation records under load: none lost to concurrency, a SIGTERM, or several worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmgw.infrastructure.grpc.messages import v1
from tests.e2e.test_serve_process import Process, llmgw_serve
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, running_gateway, settings_for

CHAT = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}


def _stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM generations")]


async def _rest(session: aiohttp.ClientSession, gw: Running, i: int) -> str:
    kind = i % 3
    if kind == 0:
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 200
            return str((await response.json())["id"])
    if kind == 1:
        async with session.post(
            f"{gw.rest_url}/v1/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            assert response.status == 200
            await response.read()
            return response.headers["x-generation-id"]
    body = {"model": "local/embed", "input": [f"text {i}", "more"]}
    async with session.post(f"{gw.rest_url}/v1/embeddings", json=body) as response:
        assert response.status == 200
        return str((await response.json())["id"])


async def _grpc(gw: Running, i: int) -> str:
    request = v1.CreateChatCompletionRequest(
        model="local/llama", messages=[v1.ChatMessage(role="user", content="x")]
    )
    if i % 2 == 0:
        return str((await gw.grpc.create_chat_completion(request)).id)
    ids = {chunk.id async for chunk in gw.grpc.create_chat_completion_stream(request)}
    assert len(ids) == 1
    return ids.pop()


async def test_five_hundred_concurrent_mixed_requests_leave_five_hundred_distinct_records(
    fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    db = tmp_path / "load.db"
    async with running_gateway(settings_for(fakes, storage_url=f"sqlite:///{db}")) as gw:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector) as session:
            jobs: list[Any] = [_rest(session, gw, i) if i % 2 else _grpc(gw, i) for i in range(500)]
            ids = await asyncio.gather(*jobs)
        assert len(set(ids)) == 500
        lookups = await asyncio.gather(*(gw.gateway.get_generation(i) for i in ids))
        assert {record.id for record in lookups} == set(ids)
    # Leaving the gateway flushed every waiting record to the file.
    assert sorted(_stored_ids(db)) == sorted(ids)


async def _stream_until_done(session: aiohttp.ClientSession, process: Process) -> str:
    body = {**CHAT, "stream": True}
    async with session.post(f"{process.rest_url}/v1/chat/completions", json=body) as response:
        assert response.status == 200
        payload = await response.read()
        assert payload.endswith(b"data: [DONE]\n\n")
        return response.headers["x-generation-id"]


def _local_provider_env(fake: FakeUpstream) -> dict[str, str]:
    return {
        "LLMGW_LLM__PROVIDERS__LOCAL__KIND": "openai",
        "LLMGW_LLM__PROVIDERS__LOCAL__BASE_URL": fake.base_url,
    }


async def test_a_sigterm_under_load_lets_streams_finish_and_loses_no_record(tmp_path: Path) -> None:
    async with FakeUpstream("openai") as fake, llmgw_serve(tmp_path, _local_provider_env(fake)) as process:
        fake.script(*[Script(chunks=10, chunk_delay=0.05) for _ in range(40)])
        async with aiohttp.ClientSession() as session:
            streams = [asyncio.create_task(_stream_until_done(session, process)) for _ in range(40)]
            await _wait_for(lambda: len(fake.requests) == 40)
            process.proc.send_signal(signal.SIGTERM)
            ids = await asyncio.gather(*streams)
            returncode = await asyncio.wait_for(process.proc.wait(), 20)
    assert returncode == 0
    assert len(set(ids)) == 40
    assert sorted(_stored_ids(tmp_path / "llmgw.db")) == sorted(ids)


async def _wait_for(condition: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


def _children(pid: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    return {child for child in children if b"resource_tracker" not in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b"resource_tracker"  # gone already: not a live worker either


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from Linux /proc")
async def test_two_workers_share_the_ports_and_the_sqlite_file_and_a_dead_one_is_replaced(
    tmp_path: Path,
) -> None:
    db = tmp_path / "llmgw.db"
    async with FakeUpstream("openai") as fake:
        env = {**_local_provider_env(fake), "LLMGW_SERVER__WORKERS": "2"}
        # A new connection per request, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            llmgw_serve(tmp_path, env) as process,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            await _wait_for(lambda: len(_children(process.proc.pid)) == 2)
            await _wait_ready(session, process)
            first = await asyncio.gather(*(_stream_until_done(session, process) for _ in range(40)))
            # Both writers flush to the one file within their second, without "database is locked".
            await _wait_for(lambda: set(first) <= set(_stored_ids(db)))
            victim = min(_children(process.proc.pid))
            os.kill(victim, signal.SIGKILL)
            await _wait_for(
                lambda: victim not in _children(process.proc.pid) and len(_children(process.proc.pid)) == 2
            )
            await _wait_ready(session, process)
            second = await asyncio.gather(*(_stream_until_done(session, process) for _ in range(40)))
            process.proc.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(process.proc.wait(), 30)
            output = (await process.proc.stdout.read()).decode() if process.proc.stdout else ""
    assert returncode == 0, output
    assert f"worker 0 (pid {victim})" in output or f"worker 1 (pid {victim})" in output
    assert "restarting it" in output
    assert set(first) | set(second) <= set(_stored_ids(db))


async def _wait_ready(session: aiohttp.ClientSession, process: Process) -> None:
    """Every worker answers: enough consecutive successes through the shared port."""
    successes = 0
    async with asyncio.timeout(15):
        while successes < 10:
            try:
                async with session.get(f"http://127.0.0.1:{process.health}/readyz") as response:
                    successes = successes + 1 if response.status == 200 else 0
            except aiohttp.ClientConnectionError:
                successes = 0
                await asyncio.sleep(0.05)
