"""Process lifecycle: the chosen fronts on one event loop around one gateway, graceful stop on signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from grpclib.server import Server

from llmgw.application.gateway import Gateway
from llmgw.bootstrap import build_gateway
from llmgw.infrastructure.config.settings import ListenAddress, Settings
from llmgw.infrastructure.connections import (
    ConnectionCount,
    ConnectionPolicy,
    GuardedListener,
    Http1Guard,
    ProtocolFactory,
)
from llmgw.infrastructure.grpc.server import create_server
from llmgw.infrastructure.http2_guard import Http2Guard, Http2Limits
from llmgw.infrastructure.logs import quiet_malformed_requests
from llmgw.infrastructure.rest.app import create_app
from llmgw.infrastructure.rest.health import create_health_app

Command = Literal["serve", "grpc", "http"]
log = logging.getLogger("llmgw")
#: How long the fronts get, after the drain, to write the last bytes of the requests it ended.
CLOSE_TIMEOUT = 1.0
_IDLE_POLL = 0.05


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


def listening_socket(address: ListenAddress, *, reuse_port: bool) -> socket.socket:
    """Bind `address` ourselves, so port 0 works and the bound port is known; `:port` is dual-stack."""
    if not address.host and socket.has_dualstack_ipv6():
        return socket.create_server(
            ("", address.port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=reuse_port
        )
    return socket.create_server((address.host or "0.0.0.0", address.port), reuse_port=reuse_port)  # noqa: S104


def _loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def _bound(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


@contextlib.asynccontextmanager
async def _site(
    app: web.Application, sock: socket.socket, listener: GuardedListener
) -> AsyncIterator[asyncio.Server]:
    """Serve `app` on `sock`, each connection behind an `Http1Guard`; yields the listener (closing it stops
    accepting, the connections go on until the runner's cleanup)."""
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that leaves cancels its handler, and so the upstream call
        access_log=None,
        # After a 413 aiohttp reads and discards the rest of the body so the client can see the answer
        # (10 s by default, gigabytes from a hostile client); two seconds are enough for a real one.
        lingering_time=2.0,
        # By cleanup, `_drain` has already given requests shutdown_grace: this only bounds the last writes.
        shutdown_timeout=CLOSE_TIMEOUT,
        # aiohttp closes a connection that has no request whose headers are whole this long after it
        # opened or after its last response: `server.idle_timeout`.
        keepalive_timeout=listener.policy.idle_timeout,
    )
    await runner.setup()
    try:
        assert runner.server is not None
        # The runner's own protocol factory behind the guard; a web.SockSite would accept unguarded.
        server = await asyncio.get_running_loop().create_server(listener.wrap(runner.server), sock=sock)
        try:
            yield server
        finally:
            server.close()
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _grpc(gateway: Gateway, sock: socket.socket, listener: GuardedListener) -> AsyncIterator[Server]:
    server = create_server(gateway, guard=listener.wrap)
    await server.start(sock=sock)
    try:
        yield server
    finally:
        # grpclib's close stops the listener and cancels every call at once, so it waits for `_drain`.
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("gRPC calls still running %.0fs after being cancelled; stopped", CLOSE_TIMEOUT)
        # grpclib leaves the connections themselves to their clients: an idle one would outlive the server.
        listener.close_all()


def _listeners(settings: Settings) -> tuple[GuardedListener, GuardedListener]:
    """The HTTP/1 and the gRPC guards of this process's connections, sharing one connection count."""
    server = settings.server
    policy = ConnectionPolicy(server.header_timeout, server.idle_timeout, server.max_connections)
    count = ConnectionCount(server.max_connections)
    limits = Http2Limits(settings.grpc.max_message_bytes, settings.grpc.max_client_resets)

    def http2(inner: ProtocolFactory, count: ConnectionCount, policy: ConnectionPolicy) -> Http2Guard:
        return Http2Guard(inner, count, policy, limits)

    return GuardedListener(Http1Guard, count, policy), GuardedListener(http2, count, policy)


@dataclass(slots=True)
class RunningFronts:
    """What `serve_fronts` started and where it listens; tests look inside, the process only waits."""

    rest_app: web.Application | None = None
    grpc_server: Server | None = None
    ports: dict[str, int] = field(default_factory=dict)
    connections: ConnectionCount | None = None


@contextlib.asynccontextmanager
async def serve_fronts(
    gateway: Gateway, settings: Settings, command: Command
) -> AsyncIterator[RunningFronts]:
    """Start the fronts `command` runs around one gateway; stop and drain them on exit."""
    fronts = FRONTS[command]
    running = RunningFronts()
    reuse_port = settings.server.workers > 1
    async with contextlib.AsyncExitStack() as stack:
        listeners = {
            name: stack.enter_context(listening_socket(address, reuse_port=reuse_port))
            for name, address, wanted in (
                ("grpc", settings.grpc.listen, fronts.grpc),
                ("http", settings.http.listen, fronts.rest),
                ("health", settings.health.listen, fronts.health),
            )
            if wanted
        }
        running.ports = {name: sock.getsockname()[1] for name, sock in listeners.items()}
        http1, http2 = _listeners(settings)
        running.connections = http1.count
        # Entered first, so closed last: the health port answers /readyz (503, draining) until the end.
        if "http" in listeners or "health" in listeners:
            stack.enter_context(quiet_malformed_requests())
        if "health" in listeners:
            await stack.enter_async_context(_site(create_health_app(gateway), listeners["health"], http1))
        if "grpc" in listeners:
            running.grpc_server = await stack.enter_async_context(_grpc(gateway, listeners["grpc"], http2))
        rest_listener = None
        if "http" in listeners:
            running.rest_app = create_app(
                gateway,
                max_body_bytes=settings.http.max_body_bytes,
                cors_origins=settings.http.cors,
                metrics=settings.metrics.on_http_port,
                console_enabled=settings.console.enabled,
            )
            rest_listener = await stack.enter_async_context(_site(running.rest_app, listeners["http"], http1))
        described = " ".join(f"{name}={_bound(sock)}" for name, sock in listeners.items())
        log.info("llmgw %s ready: %s", command, described)
        exposed = [
            _bound(sock) for name, sock in listeners.items() if name != "health" and not _loopback(sock)
        ]
        if not settings.auth.enabled and exposed:
            log.warning(
                "auth.enabled is false and the gateway listens beyond loopback (%s): anyone who reaches "
                "it spends the providers' keys and reads every generation record",
                ", ".join(exposed),
            )
        yield running
        log.info("stopping: draining in-flight requests")
        await _drain(gateway, rest_listener, settings.server.shutdown_grace)


async def _drain(gateway: Gateway, rest_listener: asyncio.Server | None, grace: float) -> None:
    """A stop, before the fronts close: readiness fails and new work is refused at once, the REST listener
    closes, requests in flight get `grace` to finish, and the streams still running then are ended with
    an error event (gRPC: UNAVAILABLE) and recorded `cancelled`.

    grpclib has no way to stop listening without cancelling the calls in flight, so the gRPC port closes
    after the grace; until then the gateway refuses new gRPC calls with UNAVAILABLE `shutting_down`."""
    gateway.drain()
    if rest_listener is not None:
        rest_listener.close()  # stops listening; connections and their requests go on
    loop = asyncio.get_running_loop()
    await _until_idle(gateway, loop.time() + grace)
    ended = gateway.end_streams()
    if ended:
        log.warning("%d stream(s) still running after shutdown_grace (%gs): ended", ended, grace)
    await _until_idle(gateway, loop.time() + CLOSE_TIMEOUT)
    if gateway.in_flight:
        log.warning(
            "%d request(s) still running after shutdown_grace (%gs): cancelled", gateway.in_flight, grace
        )


async def _until_idle(gateway: Gateway, deadline: float) -> None:
    # Polled: a stop is rare, and a wake-up per finished request would cost every request something.
    loop = asyncio.get_running_loop()
    while gateway.in_flight and loop.time() < deadline:  # noqa: ASYNC110 (see above)
        await asyncio.sleep(_IDLE_POLL)


async def run(settings: Settings, command: Command, *, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives, then drain and flush. A second signal ends the
    process at once, as the signal's default action does (killed by it: no drain, no flush).

    A signal ignored when the process started stays ignored (workers ignore SIGINT: their supervisor
    turns a Ctrl-C into one SIGTERM each)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [sig for sig in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(sig) is not signal.SIG_IGN]

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            stop.set()
            return
        log.warning("second %s: stopping at once, without draining", sig.name)
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with build_gateway(settings) as gateway:
            _settle_heap()
            async with serve_fronts(gateway, settings, command):
                await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info("stopped")


# Young-generation collections start once this many more container objects were allocated than freed.
# Python's 700 is reached by the ebb and flow of requests in flight, not by garbage: under load it ran
# ~1300 collections per 55k requests (~5 µs of CPU a request); 10000 ran 9, and cycles are still freed.
GC_YOUNG_THRESHOLD = 10_000


def _settle_heap() -> None:
    """Hide what start-up built (modules, configuration, the gateway: it lives as long as the process) from
    the garbage collector, so that its full collections walk only what requests allocate. Measured under
    load: a full collection took ~29 ms (every request in flight waited for it), ~4 ms so; REST chat p99 at
    concurrency 32 went from 29 to 14 ms. Start-up's own garbage is collected first, once."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
