"""A bounded gRPC load generator with the generated grpclib stub, run as its own process so its CPU is
not counted as the server's. Reads one JSON command per line on stdin, answers one JSON line on stdout:

    {"op": "load", "host", "port", "model", "stream": bool, "concurrency", "seconds", "max_requests",
     "metadata"}
    {"op": "ttfb", "host", "port", "model", "samples", "metadata"}

`metadata` (optional) is sent with every call, e.g. `{"authorization": "Bearer <key>"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections import Counter
from typing import Any

import orjson
import uvloop
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

from benchmarks.latency import percentile
from llmgw.infrastructure.grpc.messages import v1

# Calls share a few HTTP/2 connections, as a client pool would; several so that two workers sharing the
# port through SO_REUSEPORT both get some.
MAX_CHANNELS = 8
_CALL_ERRORS = (GRPCError, ProtocolError, StreamTerminatedError, H2Error, OSError, TimeoutError)


def _request(model: str) -> v1.CreateChatCompletionRequest:
    message = v1.ChatMessage(role="user", content="Say hello in one short sentence.")
    return v1.CreateChatCompletionRequest(model=model, messages=[message], max_tokens=64)


def _metadata(command: dict[str, Any]) -> dict[str, str] | None:
    found = command.get("metadata")
    return {str(name): str(value) for name, value in found.items()} if found else None


async def _call(
    stub: v1.LlmGatewayServiceStub,
    request: v1.CreateChatCompletionRequest,
    stream: bool,
    metadata: dict[str, str] | None,
) -> None:
    if stream:
        async for _ in stub.create_chat_completion_stream(request, timeout=30, metadata=metadata):
            pass
    else:
        await stub.create_chat_completion(request, timeout=30, metadata=metadata)


async def load(command: dict[str, Any]) -> dict[str, Any]:
    """`concurrency` callers, each calling in a loop until `seconds` pass or `max_requests` are started."""
    concurrency = int(command["concurrency"])
    channels = [Channel(command["host"], command["port"]) for _ in range(min(concurrency, MAX_CHANNELS))]
    stubs = [v1.LlmGatewayServiceStub(channel) for channel in channels]
    request = _request(command["model"])
    stream = bool(command["stream"])
    metadata = _metadata(command)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    budget = int(command["max_requests"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(command["seconds"])

    async def caller(index: int) -> None:
        nonlocal budget
        stub = stubs[index % len(stubs)]
        while loop.time() < deadline and budget > 0:
            budget -= 1
            started = time.perf_counter()
            try:
                await _call(stub, request, stream, metadata)
            except _CALL_ERRORS as exc:
                errors[_describe(exc)] += 1
            else:
                latencies.append(time.perf_counter() - started)

    cpu_before = _own_cpu()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(float(command["seconds"]) + 60):
            await asyncio.gather(*(caller(i) for i in range(concurrency)))
    finally:
        for channel in channels:
            channel.close()
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors.total(),
        "error_kinds": dict(errors.most_common(3)),
        "seconds": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu_s": _own_cpu() - cpu_before,
    }


async def ttfb(command: dict[str, Any]) -> dict[str, Any]:
    """One streamed call at a time: seconds from the call to its first message, then read to the end."""
    channel = Channel(command["host"], command["port"])
    stub = v1.LlmGatewayServiceStub(channel)
    request = _request(command["model"])
    metadata = _metadata(command)
    firsts: list[float] = []
    errors: Counter[str] = Counter()
    try:
        async with asyncio.timeout(int(command["samples"]) * 2 + 30):
            for _ in range(int(command["samples"])):
                started = time.perf_counter()
                first = 0.0
                try:
                    stream = stub.create_chat_completion_stream(request, timeout=30, metadata=metadata)
                    async for _ in stream:
                        first = first or time.perf_counter() - started
                except _CALL_ERRORS as exc:
                    errors[_describe(exc)] += 1
                    continue
                firsts.append(first)
    finally:
        channel.close()
    return {"samples": firsts, "errors": errors.total(), "error_kinds": dict(errors.most_common(3))}


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadProcess:
    """The driver's handle on a `python -m benchmarks.grpc_load` process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, cwd: str) -> LoadProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.grpc_load",
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    async def ask(self, command: dict[str, Any], within: float) -> dict[str, Any]:
        """Send one command; its answer, which must come within `within` seconds."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(orjson.dumps(command) + b"\n")
        async with asyncio.timeout(within):
            line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the gRPC load process exited with {await self._process.wait()}")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


async def serve() -> None:
    """Answer commands from stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    operations = {"load": load, "ttfb": ttfb}
    while line := await reader.readline():
        command = orjson.loads(line)
        result = await operations[command["op"]](command)
        sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
        sys.stdout.flush()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
