"""HTTP/2 rapid reset on the gRPC port: a client opening and at once resetting streams gets GOAWAY
(ENHANCE_YOUR_CALM) and a closed connection once past `grpc.max_client_resets`, long before 20,000 resets;
the gateway keeps serving other clients, and a client cancelling now and then is never cut off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.http2_guard import PREMATURE_RESETS
from tests.fakes.upstream import FakeUpstream
from tests.h2_frames import list_models_headers
from tests.harness import Running, running_gateway, settings_for

MAX_RESETS = 200
ATTACK = 20_000
BATCH = 500  # HEADERS+RST_STREAM pairs per write


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    settings = settings_for(fakes)
    settings = replace(settings, grpc=replace(settings.grpc, max_client_resets=MAX_RESETS))
    async with running_gateway(settings) as running:
        yield running


class RawClient:
    """An HTTP/2 client on one TCP connection, driven frame by frame with `h2`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []

    def call(self, count: int) -> int:
        """Start `count` whole ListModels calls; the last one's stream id."""
        stream = 0
        for _ in range(count):
            stream = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream, list_models_headers(self.port))
            self.conn.send_data(stream, b"\x00\x00\x00\x00\x00", end_stream=True)  # an empty request
        self.writer.write(self.conn.data_to_send())
        return stream

    def open_and_reset(self, count: int) -> None:
        for _ in range(count):
            stream = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream, list_models_headers(self.port))
            self.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        self.writer.write(self.conn.data_to_send())

    async def attack(self, total: int) -> int:
        """Streams opened and reset until the server closes the connection (or `total` are)."""
        sent = 0
        try:
            while sent < total and not self.goaway():
                self.open_and_reset(BATCH)
                sent += BATCH
                await self.writer.drain()
                await self.receive(within=0.001)
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        await self.receive(within=2.0)
        return sent

    async def receive(self, within: float) -> bool:
        """Read what arrives within `within` seconds; False once the server closed the connection."""
        try:
            async with asyncio.timeout(within):
                while data := await self.reader.read(65536):
                    self.events += self.conn.receive_data(data)
                    if self.goaway():
                        break
                return not self.reader.at_eof()
        except TimeoutError:
            return True
        except ConnectionError:
            return False

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        ended = [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]
        return ended[0] if ended else None


@pytest.fixture
async def client(gw: Running) -> AsyncIterator[RawClient]:
    port = gw.fronts.ports["grpc"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = RawClient(reader, writer, port)
    writer.write(raw.conn.data_to_send())
    try:
        yield raw
    finally:
        writer.close()


async def test_a_rapid_reset_client_gets_goaway_long_before_20000_resets(
    gw: Running, client: RawClient
) -> None:
    sent = await client.attack(ATTACK)

    goaway = client.goaway()
    assert goaway is not None, f"no GOAWAY after {sent} resets"
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert sent <= 4 * BATCH  # MAX_RESETS plus what was already in flight
    assert not await client.receive(within=2.0)  # and the connection is closed


async def test_the_gateway_serves_normal_calls_during_and_after_an_attack(
    gw: Running, client: RawClient
) -> None:
    attack = asyncio.create_task(client.attack(ATTACK))
    served = await gw.grpc.list_models(v1.ListModelsRequest())
    await attack

    assert served.data
    assert client.goaway() is not None
    assert (await gw.grpc.list_models(v1.ListModelsRequest())).data


async def test_a_client_that_cancels_a_third_of_its_calls_keeps_its_connection(
    gw: Running, client: RawClient
) -> None:
    for _ in range(PREMATURE_RESETS + 20):  # past the premature-reset minimum, under max_client_resets
        client.open_and_reset(1)
        client.call(2)
        await client.writer.drain()
        await client.receive(within=0.001)
    assert await client.receive(within=0.5)
    assert client.goaway() is None

    stream = client.call(1)
    await client.receive(within=1.0)
    ended = [e for e in client.events if isinstance(e, h2.events.StreamEnded) and e.stream_id == stream]
    assert ended, client.events


async def test_with_the_default_cap_a_client_resetting_every_stream_is_cut_off_after_fifty(
    fakes: dict[str, FakeUpstream],
) -> None:
    settings = settings_for(fakes)
    assert settings.grpc.max_client_resets == 1000
    async with running_gateway(settings) as gw:
        port = gw.fronts.ports["grpc"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = RawClient(reader, writer, port)
        writer.write(client.conn.data_to_send())
        try:
            sent = 0
            while sent < 1000 and not client.goaway():
                client.open_and_reset(10)
                sent += 10
                await writer.drain()
                await client.receive(within=0.01)
            await client.receive(within=1.0)
        finally:
            writer.close()
    goaway = client.goaway()
    assert goaway is not None
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert PREMATURE_RESETS <= sent < PREMATURE_RESETS * 3, sent
