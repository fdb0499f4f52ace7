"""Process lifecycle: the chosen fronts on one event loop around one gateway, graceful stop on signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from grpclib.server import Server

from llmgw.application.gateway import Gateway
from llmgw.bootstrap import build_gateway
from llmgw.infrastructure.config.settings import ListenAddress, Settings
from llmgw.infrastructure.grpc.server import create_server
from llmgw.infrastructure.rest.app import create_app
from llmgw.infrastructure.rest.health import create_health_app

Command = Literal["serve", "grpc", "http"]
log = logging.getLogger("llmgw")


@dataclass(frozen=True, slots=True)
class Fronts:
    rest: bool
    grpc: bool
    health: bool


FRONTS: dict[str, Fronts] = {
    "serve": Fronts(rest=True, grpc=True, health=True),
    "grpc": Fronts(rest=False, grpc=True, health=True),
    "http": Fronts(rest=True, grpc=False, health=False),
}


def _host(address: ListenAddress) -> str | None:
    return address.host or None


@contextlib.asynccontextmanager
async def _site(app: web.Application, address: ListenAddress, settings: Settings) -> AsyncIterator[None]:
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that leaves cancels its handler, and so the upstream call
        access_log=None,
        shutdown_timeout=settings.server.shutdown_grace,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, _host(address), address.port, reuse_port=settings.server.workers > 1)
        await site.start()
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _grpc(gateway: Gateway, settings: Settings) -> AsyncIterator[Server]:
    server = create_server(gateway)
    address = settings.grpc.listen
    await server.start(_host(address), address.port, reuse_port=settings.server.workers > 1)
    try:
        yield server
    finally:
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), settings.server.shutdown_grace)
        except TimeoutError:
            log.warning("gRPC calls still running after %.0fs; stopped", settings.server.shutdown_grace)


@dataclass(slots=True)
class RunningFronts:
    """What `serve_fronts` started; tests look inside, the process only waits."""

    rest_app: web.Application | None = None
    grpc_server: Server | None = None


@contextlib.asynccontextmanager
async def serve_fronts(
    gateway: Gateway, settings: Settings, command: Command
) -> AsyncIterator[RunningFronts]:
    """Start the fronts `command` runs around one gateway; stop and drain them on exit."""
    fronts = FRONTS[command]
    running = RunningFronts()
    async with contextlib.AsyncExitStack() as stack:
        if fronts.grpc:
            running.grpc_server = await stack.enter_async_context(_grpc(gateway, settings))
        if fronts.rest:
            running.rest_app = create_app(gateway, max_body_bytes=settings.http.max_body_bytes)
            await stack.enter_async_context(_site(running.rest_app, settings.http.listen, settings))
        if fronts.health:
            health = create_health_app(gateway)
            await stack.enter_async_context(_site(health, settings.health.listen, settings))
        log.info("llmgw %s ready: %s", command, _describe(settings, fronts))
        yield running
        log.info("stopping: draining in-flight requests")


async def run(settings: Settings, command: Command, *, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives, then drain and flush."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with build_gateway(settings) as gateway, serve_fronts(gateway, settings, command):
            await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def _describe(settings: Settings, fronts: Fronts) -> str:
    parts = []
    if fronts.grpc:
        parts.append(f"grpc={settings.grpc.listen}")
    if fronts.rest:
        parts.append(f"http={settings.http.listen}")
    if fronts.health:
        parts.append(f"health={settings.health.listen}")
    return " ".join(parts)
