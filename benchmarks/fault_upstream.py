"""A fake OpenAI upstream that fails on request, for the soak run (`benchmarks/soak.py`).

It listens on several ports at once (one per provider entry of the gateway) and answers chat (JSON and
paced SSE) and embeddings. What it does with an attempt is written in the request itself: its text carries
`[soak <request id> <plan>]`, the plan a comma-separated list of actions, one per attempt of that request
(counted over every port; attempts past the list succeed):

- `ok`: a normal answer; a stream is 10 chunks 3 ms apart, a usage chunk and `[DONE]`;
- `500`, `503`: an OpenAI error body with that status; `429`: the same with `Retry-After: 0`;
- `reset`: the connection reset (RST) before anything is answered;
- `midreset`: a stream resets after 3 chunks; a JSON answer after half its body;
- `malformed`: a stream sends a chunk that is not JSON after 3 chunks; a JSON answer is cut short;
- `hang`: no answer at all (until the gateway gives up and closes the connection);
- `stall`: a stream stops after 3 chunks; a JSON answer after its headers;
- `slow`: the answer after 1 s (for clients that leave before it); `slowstream`: chunks 20 ms apart.

Idle keep-alive connections are closed after `--keepalive` seconds, so a gateway at rest holds none:
its upstream connections then have a known idle count, 0. `GET /seen` returns the request ids it saw
and how many attempts each made, and how many answers of each action it gave.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import struct
from collections import Counter
from typing import Any

import orjson
import uvloop
from aiohttp import web

CHUNKS = 10
PACE_SECONDS = 0.003
SLOW_PACE_SECONDS = 0.02
SLOW_SECONDS = 1.0
HANG_SECONDS = 30.0
EMBEDDING_DIMS = 64
_DIRECTIVE = re.compile(rb"\[soak ([^\]\s]+) ([^\]\s]*)\]")
_LINGER_RESET = struct.pack("ii", 1, 0)


class FaultUpstream:
    """The attempts counted per request id, and the actions taken."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.actions: Counter[str] = Counter()

    def action(self, body: bytes) -> tuple[str, str]:
        """This attempt's action and the request's id ("" when the request carries no directive)."""
        found = _DIRECTIVE.search(body)
        if found is None:
            return "ok", ""
        request_id = found.group(1).decode()
        attempt = self.attempts.get(request_id, 0)
        self.attempts[request_id] = attempt + 1
        plan = found.group(2).decode().split(",") if found.group(2) else []
        action = plan[attempt] if attempt < len(plan) and plan[attempt] else "ok"
        self.actions[action] += 1
        return action, request_id

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action, request_id = self.action(body)
        payload = orjson.loads(body)
        model = str(payload.get("model", ""))
        failed = await _common_failure(request, action)
        if failed is not None:
            return failed
        if payload.get("stream"):
            return await _stream(request, action, model, request_id)
        answer = orjson.dumps(_completion(model, request_id))
        return await _json(request, action, answer)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action, _ = self.action(body)
        failed = await _common_failure(request, action)
        if failed is not None:
            return failed
        payload = orjson.loads(body)
        inputs = payload.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        vector = [0.01 * (i % 7) for i in range(EMBEDDING_DIMS)]
        answer = orjson.dumps(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)],
                "model": payload.get("model", ""),
                "usage": {"prompt_tokens": 8 * count, "total_tokens": 8 * count},
            }
        )
        return await _json(request, action, answer)

    async def seen(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"attempts": self.attempts, "actions": dict(self.actions)},
            dumps=lambda v: orjson.dumps(v).decode(),
        )


async def _common_failure(request: web.Request, action: str) -> web.StreamResponse | None:
    """The actions that are the same for every kind of answer; None for the others."""
    if action in ("500", "503", "429"):
        status = int(action)
        headers = {"Retry-After": "0"} if status == 429 else {}
        error = {"error": {"message": f"injected {status}", "type": "server_error", "code": None}}
        return web.json_response(error, status=status, headers=headers)
    if action == "reset":
        _reset(request)
        raise asyncio.CancelledError  # aiohttp drops the handler: nothing more is written
    if action == "hang":
        await asyncio.sleep(HANG_SECONDS)  # cancelled when the gateway closes the connection
    if action == "slow":
        await asyncio.sleep(SLOW_SECONDS)
    return None


async def _json(request: web.Request, action: str, answer: bytes) -> web.StreamResponse:
    if action in ("ok", "slow", "slowstream"):
        return web.Response(body=answer, content_type="application/json")
    if action == "malformed":  # a 200 whose JSON is cut short, whole by its Content-Length
        return web.Response(body=answer[: len(answer) // 2], content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(answer)
    await response.prepare(request)
    await response.write(answer[: len(answer) // 2])
    if action == "midreset":
        _reset(request)
        raise asyncio.CancelledError
    await asyncio.sleep(HANG_SECONDS)  # stall: headers and half the body, then nothing
    return response


async def _stream(request: web.Request, action: str, model: str, request_id: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    pace = SLOW_PACE_SECONDS if action == "slowstream" else PACE_SECONDS
    for index in range(CHUNKS):
        if index == 3 and action in ("midreset", "malformed", "stall"):
            if action == "midreset":
                _reset(request)
                raise asyncio.CancelledError
            if action == "malformed":
                await response.write(b"data: {this is not json\n\n")
            await asyncio.sleep(HANG_SECONDS)  # cancelled when the gateway closes the connection
        await response.write(b"data: " + orjson.dumps(_chunk(model, request_id, index)) + b"\n\n")
        await asyncio.sleep(pace)
    usage = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [],
        "usage": _usage(),
    }
    await response.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
    await response.write_eof()
    return response


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed upstream or a middlebox does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def _usage() -> dict[str, Any]:
    return {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}


def _completion(model: str, request_id: str) -> dict[str, Any]:
    text = " ".join(f"word{i}" for i in range(CHUNKS))
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": _usage(),
    }


def _chunk(model: str, request_id: str, index: int) -> dict[str, Any]:
    delta = {"role": "assistant", "content": f" word{index}"} if index == 0 else {"content": f" word{index}"}
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if index == CHUNKS - 1 else None}],
    }


async def serve(host: str, ports: list[int], keepalive: float) -> None:
    upstream = FaultUpstream()
    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/chat/completions", upstream.chat),
            web.post("/v1/embeddings", upstream.embeddings),
            web.get("/seen", upstream.seen),
        ]
    )
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=keepalive)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, host, port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI upstream with injected faults, for the soak")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", required=True, help="comma-separated ports, one per provider")
    parser.add_argument("--keepalive", type=float, default=1.5, help="idle keep-alive seconds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, [int(p) for p in args.ports.split(",")], args.keepalive))


if __name__ == "__main__":
    main()
