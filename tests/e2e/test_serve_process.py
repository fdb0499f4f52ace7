"""`llmgw serve` as a real process with the shipped config: both fronts, health, a clean SIGTERM.

Only ports, the store and (where a test needs an upstream) a provider's `base_url` are overridden,
through the environment as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import openai
import pytest

from tests.e2e.conftest import GrpcioStubs
from tests.fakes.upstream import FakeUpstream
from tests.fakes.upstream_wire import expected_content
from tests.harness import free_port

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"llmgw serve ready: (.*)")
PORT = re.compile(r"(\w+)=\S+:(\d+)")
SEED_MODELS = [
    "dashscope/qwen-turbo",
    "dashscope/qwen-vl-max",
    "dashscope/qwen-vl-plus",
    "dashscope/text-embedding-v3",
    "openrouter/openai/gpt-4o",
    "openrouter/anthropic/claude-3.5-sonnet",
]


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    http: int
    grpc: int
    health: int

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"


@asynccontextmanager
async def llmgw_serve(tmp_path: Path, extra_env: Mapping[str, str] | None = None) -> AsyncIterator[Process]:
    """`python -m llmgw serve` on ports it binds itself (port 0) and reports in its ready line.

    Several workers cannot share a port-0 listener, so with `LLMGW_SERVER__WORKERS` the ports are picked here.
    """
    extra_env = dict(extra_env or {})
    workers = "LLMGW_SERVER__WORKERS" in extra_env
    ports = {name: free_port() if workers else 0 for name in ("HTTP", "GRPC", "HEALTH")}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("LLMGW_")}
    env.update({f"LLMGW_{name}__LISTEN": f'"127.0.0.1:{port}"' for name, port in ports.items()})
    env["LLMGW_STORAGE__URL"] = f"sqlite:///{tmp_path / 'llmgw.db'}"
    env["CONFIG_PATH"] = str(REPO / "configs")
    env["LLMGW_AUTH__ENABLED"] = "false"  # what is tested here is not keys (see test_keys_process)
    env.update(extra_env)
    # A session of its own, so a failed test can kill the whole tree (workers hold the output pipe too).
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        bound = await _ready_ports(proc)
        process = Process(proc, *(ports[name] or bound[name.lower()] for name in ("HTTP", "GRPC", "HEALTH")))
        await _wait_ready(process)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def _ready_ports(proc: asyncio.subprocess.Process) -> dict[str, int]:
    """The ports of the first `llmgw serve ready: grpc=host:port http=… health=…` line."""
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(15):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                pytest.fail("llmgw serve exited before it was ready:\n" + "".join(seen))
            seen.append(line)
            match = READY.search(line)
            if match:
                return {name: int(port) for name, port in PORT.findall(match.group(1))}


async def _wait_ready(process: Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.proc.returncode is not None:
                pytest.fail(f"llmgw serve exited with {process.proc.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{process.health}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail("llmgw serve did not become ready within 10 s")


async def _stop(process: Process) -> tuple[int, str]:
    process.proc.send_signal(signal.SIGTERM)
    output = await asyncio.wait_for(process.proc.communicate(), 15)
    return process.proc.returncode or 0, output[0].decode()


async def test_serve_without_keys_lists_the_seed_models_on_both_fronts_and_stops_cleanly(
    tmp_path: Path, grpcio_stubs: GrpcioStubs
) -> None:
    async with llmgw_serve(tmp_path) as process:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{process.rest_url}/v1/models") as response:
                assert response.status == 200
                rest_ids = [m["id"] for m in (await response.json())["data"]]
            async with session.get(f"http://127.0.0.1:{process.health}/readyz") as response:
                assert response.status == 200
                ready = await response.json()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.grpc}") as channel:
            stub = grpcio_stubs.gateway_grpc.LLMGatewayServiceStub(channel)
            listed = await stub.ListModels(grpcio_stubs.models.ListModelsRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetModel(grpcio_stubs.models.GetModelRequest(id="nope/none"), timeout=5)

        code, output = await _stop(process)

    assert rest_ids == SEED_MODELS
    assert [m.id for m in listed.data] == SEED_MODELS
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert {p["name"]: p["credentials"] for p in ready["providers"]} == {
        "dashscope": False,
        "openrouter": False,
    }
    assert code == 0, output
    assert "stopped" in output


async def test_default_config_with_only_base_url_changed_streams_through_rest_and_grpc(
    tmp_path: Path, grpcio_stubs: GrpcioStubs
) -> None:
    async with FakeUpstream("dashscope") as fake:
        # DashScope refuses every call without a key, and so does the gateway on its behalf.
        env = {"LLMGW_LLM__PROVIDERS__DASHSCOPE__BASE_URL": fake.base_url, "DASHSCOPE_API_KEY": "sk-test"}
        async with llmgw_serve(tmp_path, env) as process:
            async with openai.AsyncOpenAI(
                base_url=f"{process.rest_url}/v1", api_key="x", max_retries=0
            ) as client:
                stream = await client.chat.completions.create(
                    model="dashscope/qwen-turbo", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                text = "".join(
                    [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
                )

            async with grpc.aio.insecure_channel(f"127.0.0.1:{process.grpc}") as channel:
                stub = grpcio_stubs.gateway_grpc.LLMGatewayServiceStub(channel)
                request = grpcio_stubs.chat.CreateChatCompletionRequest(
                    model="dashscope/qwen-turbo",
                    messages=[grpcio_stubs.chat.ChatMessage(role="user", content="hi")],
                )
                chunks = [chunk async for chunk in stub.CreateChatCompletionStream(request, timeout=10)]
            code, output = await _stop(process)

    assert text == expected_content(3)
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == expected_content(3)
    assert all(c.model == "dashscope/qwen-turbo" and c.id.startswith("gen-") for c in chunks)
    assert [r.json["model"] for r in fake.requests] == ["qwen-turbo", "qwen-turbo"]
    assert code == 0, output


async def test_an_invalid_config_fails_at_start_listing_every_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    env.update(
        {
            "CONFIG_PATH": str(REPO / "configs"),
            "LLMGW_LOG__LEVEL": "chatty",
            "LLMGW_HTTP__LISTEN": '"nowhere"',
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    message = stderr.decode()
    assert proc.returncode == 2
    assert "log.level" in message
    assert "LLMGW_LOG__LEVEL" in message
    assert "http.listen" in message
    assert "LLMGW_HTTP__LISTEN" in message
