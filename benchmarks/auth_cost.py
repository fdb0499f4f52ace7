"""What checking a key adds to a request, in instructions (callgrind), which machine noise does not move:
N chat requests through one front of an in-process llmgw, whose provider answers at once, with auth off or
on (a key minted through the admin use case, cached after its first use). Client, server and provider share
the process, and only the key differs between the two runs.

    valgrind --tool=callgrind python -m benchmarks.auth_cost rest off 0      # start-up only
    valgrind --tool=callgrind python -m benchmarks.auth_cost rest off 2000
    valgrind --tool=callgrind python -m benchmarks.auth_cost rest on 2000    # (and grpc)

(total - start-up) / N per request; on - off is the key check.
"""

from __future__ import annotations

import asyncio
import sys

from grpclib.client import Channel

from benchmarks.app_layer import MODELS, Provider
from llmgw.bootstrap import build_gateway
from llmgw.infrastructure.config.settings import (
    NO_AUTH,
    AuthSettings,
    GrpcSettings,
    HealthSettings,
    HttpSettings,
    ListenAddress,
    Settings,
    StorageSettings,
)
from llmgw.infrastructure.grpc.messages import v1
from llmgw.serving import serve_fronts

LOOPBACK = ListenAddress("127.0.0.1", 0)
BODY = b'{"model":"bench/chat","messages":[{"role":"user","content":"hi"}]}'


async def main(front: str, auth: bool, calls: int) -> None:
    settings = Settings(
        providers={},
        models=MODELS,
        http=HttpSettings(listen=LOOPBACK),
        grpc=GrpcSettings(listen=LOOPBACK),
        health=HealthSettings(listen=LOOPBACK),
        storage=StorageSettings(url="memory://"),
        auth=AuthSettings(pepper="p" * 32) if auth else NO_AUTH,
    )
    async with (
        build_gateway(settings, providers={"bench": Provider()}) as gateway,  # type: ignore[dict-item]
        serve_fronts(gateway, settings, "serve") as fronts,
    ):
        key = ""
        if auth:
            assert gateway.admin is not None
            key = (await gateway.admin.create_key("bench", {"name": "bench"})).text
        if front == "rest":
            await _rest(fronts.ports["http"], key, calls)
        else:
            await _grpc(fronts.ports["grpc"], key, calls)


async def _rest(port: int, key: str, calls: int) -> None:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + auth
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(calls):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
    writer.close()


async def _grpc(port: int, key: str, calls: int) -> None:
    metadata = {"authorization": f"Bearer {key}"} if key else {}
    channel = Channel("127.0.0.1", port)
    stub = v1.LlmGatewayServiceStub(channel)
    request = v1.CreateChatCompletionRequest(
        model="bench/chat", messages=[v1.ChatMessage(role="user", content="hi")]
    )
    try:
        for _ in range(calls):
            await stub.create_chat_completion(request, metadata=metadata)
    finally:
        channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] == "on", int(sys.argv[3])))
