"""Slowloris and idle sockets on every port: a connection whose request headers are not whole within
`server.header_timeout` is closed, so is one with no request in flight for `server.idle_timeout` (gRPC with a
GOAWAY; a long call is not cut), and beyond `server.max_connections` new connections are closed at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import h2.config
import h2.connection
import h2.events
import pytest
from grpclib.client import Channel

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream, Script
from tests.h2_frames import list_models_headers
from tests.harness import Running, running_gateway, settings_for

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 1.0
MAX_CONNECTIONS = 20
PORTS = ["http", "grpc", "health"]


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    settings = settings_for(fakes)
    server = replace(
        settings.server,
        header_timeout=HEADER_TIMEOUT,
        idle_timeout=IDLE_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
    )
    async with running_gateway(replace(settings, server=server)) as running:
        yield running


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float | None:
    """Seconds until the server closes the connection (whatever it sent first), or None if it did not."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.perf_counter() - started


async def dribble(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, as a slowloris client does; stops quietly once the server closed."""
    try:
        for byte in data:
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


def http_head(port: int) -> bytes:
    return f"GET /livez HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: {'a' * 200}\r\n\r\n".encode()


def h2_request(port: int, conn: h2.connection.H2Connection | None = None) -> bytes:
    """The HTTP/2 preface, SETTINGS and the HEADERS of a ListModels call, as a gRPC client sends them."""
    conn = conn or h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, list_models_headers(port))
    return conn.data_to_send()


@pytest.mark.parametrize("port", PORTS)
async def test_a_slowloris_connection_is_closed_after_the_header_timeout(gw: Running, port: str) -> None:
    number = gw.fronts.ports[port]
    reader, writer = await asyncio.open_connection("127.0.0.1", number)
    head = h2_request(number) if port == "grpc" else http_head(number)
    sending = asyncio.create_task(dribble(writer, head, every=0.05))  # 10+ s for the whole headers
    try:
        closed = await closed_within(reader, 5.0)
    finally:
        sending.cancel()
        writer.close()

    assert closed is not None, "the slow connection was still open after 5 s"
    assert closed < HEADER_TIMEOUT + 1.0


@pytest.mark.parametrize("port", PORTS)
async def test_a_connection_that_sends_nothing_is_closed(gw: Running, port: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.fronts.ports[port])
    try:
        closed = await closed_within(reader, 5.0)
    finally:
        writer.close()

    assert closed is not None
    assert closed < HEADER_TIMEOUT + 1.0


async def test_headers_sent_in_time_are_served_whatever_the_pace(gw: Running) -> None:
    number = gw.fronts.ports["http"]
    reader, writer = await asyncio.open_connection("127.0.0.1", number)
    head = http_head(number)
    try:
        await dribble(writer, head, every=HEADER_TIMEOUT / len(head) / 2)
        status = await asyncio.wait_for(reader.readline(), 2.0)
    finally:
        writer.close()

    assert status.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("port", ["http", "health"])
async def test_an_idle_rest_connection_is_closed_after_the_idle_timeout(gw: Running, port: str) -> None:
    number = gw.fronts.ports[port]
    reader, writer = await asyncio.open_connection("127.0.0.1", number)
    try:
        writer.write(http_head(number))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        closed = await closed_within(reader, IDLE_TIMEOUT + 2.0)
    finally:
        writer.close()

    assert closed is not None
    assert IDLE_TIMEOUT - 0.2 < closed < IDLE_TIMEOUT + 1.0


async def test_an_idle_grpc_connection_gets_goaway_and_is_closed(gw: Running) -> None:
    number = gw.fronts.ports["grpc"]
    reader, writer = await asyncio.open_connection("127.0.0.1", number)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    writer.write(h2_request(number, client))
    client.send_data(1, b"\x00" * 5, end_stream=True)  # an empty ListModelsRequest
    writer.write(client.data_to_send())
    events: list[h2.events.Event] = []
    started = time.perf_counter()
    try:
        async with asyncio.timeout(IDLE_TIMEOUT + 2.0):
            while data := await reader.read(65536):
                events += client.receive_data(data)
    finally:
        writer.close()

    assert any(isinstance(e, h2.events.StreamEnded) for e in events)  # the call was served
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == 0
    assert goaway.last_stream_id == 1
    assert IDLE_TIMEOUT - 0.2 < time.perf_counter() - started < IDLE_TIMEOUT + 1.0


async def test_a_grpc_call_longer_than_the_idle_timeout_is_not_cut(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(delay=IDLE_TIMEOUT + 1.0))
    request = v1.CreateChatCompletionRequest(
        model="local/llama", messages=[v1.ChatMessage(role="user", content="hi")]
    )

    completion = await gw.grpc.create_chat_completion(request)

    assert completion.choices


async def test_connections_beyond_the_cap_are_closed_at_once_and_the_gateway_recovers(gw: Running) -> None:
    number = gw.fronts.ports["http"]
    held = [await asyncio.open_connection("127.0.0.1", number) for _ in range(MAX_CONNECTIONS)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.fronts.ports["grpc"])
        closed = await closed_within(reader, 1.0)
        writer.close()
        assert closed is not None
        assert closed < 0.5
        assert gw.fronts.connections is not None
        assert gw.fronts.connections.open == MAX_CONNECTIONS
    finally:
        for _, held_writer in held:
            held_writer.close()

    await asyncio.sleep(0.1)
    channel = Channel("127.0.0.1", gw.fronts.ports["grpc"])
    try:
        assert (await v1.LlmGatewayServiceStub(channel).list_models(v1.ListModelsRequest())).data
    finally:
        channel.close()
