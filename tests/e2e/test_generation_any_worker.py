"""A generation is readable the moment its response ends, from any worker and any replica sharing the store.

Each lookup is sent, right after its response, to a process that did not answer the request: the other
worker of `llmgw serve --workers 2` (a connection pinned to each worker, identified through /proc, so
that every lookup crosses over rather than about half), or another `llmgw serve` sharing one Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from grpclib.client import Channel

from llmgw.infrastructure.grpc.messages import v1
from tests.e2e.procfs import my_connections_to, worker_pids, worker_serving
from tests.e2e.test_serve_process import Process, llmgw_serve
from tests.fakes.upstream import FakeUpstream

DSN = os.environ.get("LLMGW_TEST_POSTGRES_DSN", "")
ROUNDS = 200
GRPC_ROUNDS = 40
MODEL = "local/llama"
LINUX_PROC = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="tells the workers' connections apart through Linux /proc"
)


def _local_provider(fake: FakeUpstream) -> dict[str, str]:
    return {
        "LLMGW_LLM__PROVIDERS__LOCAL__KIND": "openai",
        "LLMGW_LLM__PROVIDERS__LOCAL__BASE_URL": fake.base_url,
    }


@asynccontextmanager
async def _serving(tmp_path: Path, env: Mapping[str, str]) -> AsyncIterator[Process]:
    """`llmgw serve`, its output read all along: its request logs must not fill the pipe and stall it."""
    async with llmgw_serve(tmp_path, env) as process:
        assert process.proc.stdout is not None
        drain = asyncio.create_task(process.proc.stdout.read())
        try:
            yield process
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


# REST and gRPC rounds: a request on one process, its lookup at once on another


@dataclass(frozen=True)
class Answered:
    generation_id: str
    request_id: str
    streamed: bool
    prompt_tokens: int
    completion_tokens: int


async def _rest_chat(session: aiohttp.ClientSession, url: str, request_id: str, stream: bool) -> Answered:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    headers = {"x-request-id": request_id}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        generation_id = response.headers["x-generation-id"]
        if stream:
            payload = await response.read()
            assert payload.endswith(b"data: [DONE]\n\n")
            events = [json.loads(e[6:]) for e in payload.split(b"\n\n") if e.startswith(b"data: {")]
            usage = next(event["usage"] for event in events if event.get("usage"))
        else:
            answer = await response.json()
            assert answer["id"] == generation_id
            usage = answer["usage"]
    return Answered(generation_id, request_id, stream, usage["prompt_tokens"], usage["completion_tokens"])


async def _rest_lookup(session: aiohttp.ClientSession, url: str, answered: Answered) -> float:
    """Look the generation up, check it is the right record; return how long the lookup took."""
    started = time.perf_counter()
    async with session.get(f"{url}/v1/generation/{answered.generation_id}") as response:
        body = await response.json()
    took = time.perf_counter() - started
    assert response.status == 200, body
    record = body["generation"]
    assert record["id"] == answered.generation_id
    assert record["request_id"] == answered.request_id
    assert (record["model"], record["status"], record["streamed"]) == (MODEL, "completed", answered.streamed)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        answered.prompt_tokens,
        answered.completion_tokens,
    )
    return took


def assert_prompt(took: list[float]) -> None:
    """Found at once, not after a wait for some periodic flush: lookups here take a few milliseconds
    (a plain lookup ~1 ms, one that waits for the other process's write ~3-10 ms)."""
    assert len(took) == ROUNDS
    assert statistics.median(took) < 0.1, sorted(took)[-10:]


async def _grpc_round(on: Channel, then_on: Channel, request_id: str) -> None:
    metadata = {"x-request-id": request_id}
    request = v1.CreateChatCompletionRequest(
        model=MODEL, messages=[v1.ChatMessage(role="user", content="hi")]
    )
    completion = await v1.LlmGatewayServiceStub(on).create_chat_completion(
        request, metadata=metadata, timeout=10
    )
    found = await v1.LlmGatewayServiceStub(then_on).get_generation(
        v1.GetGenerationRequest(id=completion.id), timeout=10
    )
    assert found.generation is not None
    assert (found.generation.id, found.generation.request_id) == (completion.id, request_id)
    assert (found.generation.model, found.generation.status) == (MODEL, v1.GenerationStatus.COMPLETED)
    assert completion.usage is not None
    assert found.generation.completion_tokens == completion.usage.completion_tokens


# Which worker holds a connection: /proc/net/tcp gives each socket's ports and inode, /proc/<pid>/fd the
# sockets each process holds. The accepted end belongs to the worker whose listener the kernel chose.


@dataclass
class Pinned:
    """A keep-alive connection to one worker: what speaks over it, and its client port once known."""

    port: int = 0
    session: aiohttp.ClientSession | None = None
    channel: Channel | None = None


async def _pin(
    connect: Callable[[], Awaitable[Pinned]], server_port: int, workers: set[int]
) -> dict[int, Pinned]:
    """One connection per worker: open connections until each worker holds one, closing the spares."""
    pinned: dict[int, Pinned] = {}
    async with asyncio.timeout(20):
        while len(pinned) < len(workers):
            before = my_connections_to(server_port)
            candidate = await connect()
            opened = my_connections_to(server_port) - before
            assert len(opened) == 1, opened
            candidate.port = opened.pop()
            worker = worker_serving(candidate.port, server_port, workers)
            if worker in pinned:
                await _close(candidate)
            else:
                pinned[worker] = candidate
    return pinned


async def _rest_connection(url: str) -> Pinned:
    # limit=1: every request on this session goes over its one keep-alive connection.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    async with session.get(f"{url}/v1/models") as response:
        assert response.status == 200
        await response.read()
    return Pinned(session=session)


async def _grpc_connection(port: int) -> Pinned:
    channel = Channel("127.0.0.1", port)
    await v1.LlmGatewayServiceStub(channel).list_models(v1.ListModelsRequest(), timeout=10)
    return Pinned(channel=channel)


async def _close(pinned: Pinned) -> None:
    if pinned.session is not None:
        await pinned.session.close()
    if pinned.channel is not None:
        pinned.channel.close()


@LINUX_PROC
async def test_a_generation_is_found_at_once_on_the_worker_that_did_not_answer(tmp_path: Path) -> None:
    async with FakeUpstream("openai") as fake:
        env = {**_local_provider(fake), "LLMGW_SERVER__WORKERS": "2"}
        async with _serving(tmp_path, env) as process:
            async with asyncio.timeout(15):
                while len(workers := worker_pids(process.proc.pid)) < 2:
                    await asyncio.sleep(0.05)
            rest = await _pin(lambda: _rest_connection(process.rest_url), process.http, workers)
            grpc = await _pin(lambda: _grpc_connection(process.grpc), process.grpc, workers)
            try:
                first, second = sorted(workers)
                took: list[float] = []
                for i in range(ROUNDS):
                    answers, looks = (first, second) if i % 2 else (second, first)
                    session, lookup = rest[answers].session, rest[looks].session
                    assert session is not None
                    assert lookup is not None
                    answered = await _rest_chat(session, process.rest_url, f"rest-{i}", stream=i % 4 >= 2)
                    took.append(await _rest_lookup(lookup, process.rest_url, answered))
                for i in range(GRPC_ROUNDS):
                    answers, looks = (first, second) if i % 2 else (second, first)
                    on, then_on = grpc[answers].channel, grpc[looks].channel
                    assert on is not None
                    assert then_on is not None
                    await _grpc_round(on, then_on, f"grpc-{i}")
                # Still the pinned connections, never reopened: every lookup went to the other worker.
                assert my_connections_to(process.http) == {pinned.port for pinned in rest.values()}
                assert my_connections_to(process.grpc) == {pinned.port for pinned in grpc.values()}
            finally:
                for pinned in [*rest.values(), *grpc.values()]:
                    await _close(pinned)
    assert_prompt(took)


@pytest.fixture
async def shared_database() -> AsyncIterator[str]:
    """The URL of a fresh Postgres database, dropped afterwards."""
    if not DSN:
        pytest.skip("LLMGW_TEST_POSTGRES_DSN is not set: two replicas sharing Postgres need a server")
    import asyncpg

    name = f"llmgw_any_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield urlunsplit(urlsplit(DSN)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.mark.postgres
async def test_a_generation_is_found_at_once_on_another_replica_sharing_postgres(
    tmp_path: Path, shared_database: str
) -> None:
    async with FakeUpstream("openai") as fake:
        env = {**_local_provider(fake), "LLMGW_STORAGE__URL": json.dumps(shared_database)}
        async with (
            _serving(tmp_path / "a", env) as a,
            _serving(tmp_path / "b", env) as b,
            aiohttp.ClientSession() as session,
        ):
            took: list[float] = []
            for i in range(ROUNDS):
                answers, looks = (a, b) if i % 2 else (b, a)
                answered = await _rest_chat(session, answers.rest_url, f"replica-{i}", stream=i % 4 >= 2)
                took.append(await _rest_lookup(session, looks.rest_url, answered))
        assert len(fake.requests) == ROUNDS
    assert_prompt(took)
