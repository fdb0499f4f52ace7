"""A generation store that accepts connections and then never answers: start-up fails fast naming it,
lookups answer 503 (or from waiting records) within `storage.timeout`, chats go on, `/readyz` says not
ready, and SIGTERM ends within `shutdown_grace` plus a bounded flush, counting the records it lost.

The real PostgreSQL sits behind a loopback TCP proxy the tests switch to "accept and hang".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from llmgw.bootstrap import StartupError, build_gateway
from llmgw.infrastructure.grpc.messages import v1
from tests.e2e.test_serve_process import REPO, llmgw_serve
from tests.fakes.ports import FakeStore
from tests.fakes.upstream import FakeUpstream
from tests.harness import free_port, running_gateway, settings_for

DSN = os.environ.get("LLMGW_TEST_POSTGRES_DSN", "")
needs_postgres = pytest.mark.skipif(
    not DSN, reason="LLMGW_TEST_POSTGRES_DSN is not set: Postgres tests need a server"
)
TIMEOUT = 0.5  # storage.timeout in these tests
GRACE = 1.0  # server.shutdown_grace
CHAT = {"model": "dashscope/qwen-turbo", "messages": [{"role": "user", "content": "hi"}]}


class HangingProxy:
    """Forwards loopback TCP connections to `target`; once `hang()` is called it goes on accepting
    connections but passes no byte either way, as a server that stopped answering does."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self._target = target
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> HangingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hang(self) -> None:
        self._flowing.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        # Cancelled when the test's loop closes; swallowed so that asyncio does not log it as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._flowing.wait()
            target = self._target
            if target is None:
                await asyncio.Event().wait()
            else:
                await self._connect(reader, writer, target)

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        self._writers.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        sink.close()


def through(proxy: HangingProxy, dsn: str, *, password: str | None = None) -> str:
    """`dsn` with its host and port replaced by the proxy's (and its password by `password`)."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    userinfo = f"{user}:{password}" if password else user
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}"))


def postgres_target() -> tuple[str, int]:
    parts = urlsplit(DSN)
    return parts.hostname or "127.0.0.1", parts.port or 5432


@pytest.mark.parametrize("store", ["hangs", "refuses"])
async def test_serve_against_a_store_that_hangs_or_refuses_exits_at_once_naming_the_masked_url(
    store: str,
) -> None:
    async with HangingProxy(target=None) as proxy:
        proxy.hang()
        port = proxy.port if store == "hangs" else free_port()
        url = f"postgresql://llmgw:s3cret-pw@127.0.0.1:{port}/llmgw"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
        env.update(
            {
                "CONFIG_PATH": str(REPO / "configs"),
                "LLMGW_STORAGE__URL": f'"{url}"',
                "LLMGW_STORAGE__TIMEOUT": str(TIMEOUT),
                "LLMGW_AUTH__ENABLED": "false",
                **{f"LLMGW_{name}__LISTEN": '"127.0.0.1:0"' for name in ("HTTP", "GRPC", "HEALTH")},
            }
        )
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmgw", "serve", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
        took = time.monotonic() - started

    errors = [line for line in output.splitlines() if line.startswith("llmgw: cannot start")]
    assert proc.returncode == 1, output
    assert len(errors) == 1, output
    assert f"storage.url = postgresql://llmgw:***@127.0.0.1:{port}/llmgw" in errors[0]
    if store == "hangs":
        assert "no answer within storage.timeout (0.5 s)" in errors[0]
    assert "s3cret-pw" not in output
    assert "Traceback" not in output
    assert took < 8.0, f"start-up took {took:.1f} s"  # Python's own start-up included


async def test_building_the_gateway_on_a_hanging_store_fails_within_the_timeout() -> None:
    store = FakeStore()
    store.hang = True
    settings = settings_for({}, storage_url="postgresql://u:pw@db.internal/llmgw")
    settings = replace(settings, storage=replace(settings.storage, timeout=0.1))

    started = time.monotonic()
    with pytest.raises(StartupError, match=r"postgresql://u:\*\*\*@db\.internal/llmgw: no answer"):
        async with build_gateway(settings, store=store):
            pass
    assert time.monotonic() - started < 0.5


async def test_lookups_on_a_hanging_store_answer_503_and_unavailable_while_chats_go_on(
    fakes: dict[str, FakeUpstream],
) -> None:
    store = FakeStore()
    settings = settings_for(fakes)
    settings = replace(settings, storage=replace(settings.storage, timeout=0.2))
    async with running_gateway(settings, store=store) as gw, aiohttp.ClientSession() as session:
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT) as response:
            written = response.headers["x-generation-id"]
        await store.record_of(written)
        store.hang = True

        started = time.monotonic()
        async with session.get(f"{gw.rest_url}/v1/generation/{written}") as response:
            rest_status, body = response.status, await response.json()
        rest_took = time.monotonic() - started
        with pytest.raises(GRPCError) as grpc_error:
            await gw.grpc.get_generation(v1.GetGenerationRequest(id=written), timeout=5)
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT) as response:
            chat_status, waiting = response.status, response.headers["x-generation-id"]
        async with session.get(f"{gw.rest_url}/v1/generation/{waiting}") as response:
            pending_status = response.status
        async with session.get(f"{gw.health_url}/readyz") as response:
            ready_status = response.status
        store.hang = False  # lets the gateway stop without waiting out its bounds

    assert rest_status == 503
    assert body["error"]["code"] == "service_unavailable"
    assert "storage.timeout" in body["error"]["message"]
    assert 0.2 <= rest_took < 1.0
    assert grpc_error.value.status is Status.UNAVAILABLE
    assert chat_status == 200
    assert pending_status == 200  # answered from the records waiting to be written
    assert ready_status == 503


@pytest.mark.postgres
@needs_postgres
async def test_a_served_gateway_whose_postgres_starts_hanging_answers_503_and_stops_within_its_bounds(
    tmp_path: Path, postgres_schema_dsn: str
) -> None:
    async with FakeUpstream("dashscope") as fake, HangingProxy(postgres_target()) as proxy:
        env = {
            "LLMGW_LLM__PROVIDERS__DASHSCOPE__BASE_URL": fake.base_url,
            "DASHSCOPE_API_KEY": "sk-test",
            "LLMGW_STORAGE__URL": f'"{through(proxy, postgres_schema_dsn)}"',
            "LLMGW_STORAGE__TIMEOUT": str(TIMEOUT),
            "LLMGW_SERVER__SHUTDOWN_GRACE": str(GRACE),
        }
        async with llmgw_serve(tmp_path, env) as process, aiohttp.ClientSession() as session:
            rest, health = process.rest_url, f"http://127.0.0.1:{process.health}"
            async with session.post(f"{rest}/v1/chat/completions", json=CHAT) as response:
                written = response.headers["x-generation-id"]
            await asyncio.sleep(0.3)  # written to Postgres within milliseconds
            proxy.hang()

            started = time.monotonic()
            async with session.get(f"{rest}/v1/generation/{written}") as response:
                lookup_status = response.status
            lookup_took = time.monotonic() - started
            chats = []
            for _ in range(3):
                async with session.post(f"{rest}/v1/chat/completions", json=CHAT) as response:
                    chats.append((response.status, response.headers["x-generation-id"]))
            async with session.get(f"{rest}/v1/generation/{chats[0][1]}") as response:
                pending_status = response.status
            started = time.monotonic()
            async with session.get(f"{health}/readyz") as response:
                ready_status, ready = response.status, await response.json()
            ready_took = time.monotonic() - started

            started = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)
            output = (await asyncio.wait_for(process.proc.communicate(), 20))[0].decode()
            stop_took = time.monotonic() - started

    assert lookup_status == 503
    assert lookup_took < TIMEOUT + 0.3, f"the lookup took {lookup_took:.2f} s"
    assert [status for status, _ in chats] == [200, 200, 200]
    assert pending_status == 200
    assert ready_status == 503
    assert ready["store"]["state"] == "down"
    assert ready_took < TIMEOUT + 0.3, f"/readyz took {ready_took:.2f} s"
    assert process.proc.returncode == 0, output
    # The drain, then at most storage.timeout for the flush and as much for the store's close.
    assert stop_took < GRACE + 2 * TIMEOUT + 1.0, f"SIGTERM to exit: {stop_took:.2f} s\n{output}"
    assert re.search(r"shutdown: 3 generation records could not be written", output), output
    assert "stopped" in output
