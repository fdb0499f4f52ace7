"""A stop closes the gRPC connections clients left open: grpclib leaves them to their clients, and an idle
one would otherwise outlive the server (its socket left to the garbage collector)."""

from __future__ import annotations

import asyncio

from grpclib.client import Channel

from llmgw.infrastructure.grpc.messages import v1
from tests.harness import running_gateway, settings_for


async def test_a_connection_its_client_keeps_open_is_closed_when_the_gateway_stops() -> None:
    async with running_gateway(settings_for({})) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.fronts.ports["grpc"])
        # A real call on its own channel, so the server has seen a whole HTTP/2 connection before.
        channel = Channel("127.0.0.1", gw.fronts.ports["grpc"])
        await v1.LlmGatewayServiceStub(channel).list_models(v1.ListModelsRequest(), timeout=5)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        await writer.drain()
        await reader.read(1024)  # the server's SETTINGS: the connection is up, idle, and left open
    try:
        async with asyncio.timeout(2):
            while await reader.read(65536):  # a GOAWAY may come first; then the end
                pass
    finally:
        writer.close()
        channel.close()
