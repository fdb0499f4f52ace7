"""The grpclib server: our services (whose handlers carry the request ids, see `handlers`), standard health
and reflection (which, with auth on, needs a valid key: only health stays open); optionally each accepted
connection behind a guard (see `http2_guard`)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any, cast

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpclib.const import Handler
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2
from grpclib.server import Server, Stream

from llmgw._proto.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from llmgw.application.gateway import Gateway
from llmgw.domain.keys import Scope
from llmgw.infrastructure.connections import ProtocolFactory
from llmgw.infrastructure.grpc.admin_service import AdminService
from llmgw.infrastructure.grpc.handlers import Gate
from llmgw.infrastructure.grpc.messages import v1 as _v1  # noqa: F401  (registers our descriptors)
from llmgw.infrastructure.grpc.service import GatewayService
from llmgw.infrastructure.grpc.upb_codec import EncodedAwareCodec
from llmgw.infrastructure.http2_guard import current_connection

_OUR_PROTOS = ("llmgateway/v1/gateway.proto", "llmgateway/admin/v1/admin.proto")


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool with our files, health and reflection, so grpcurl can describe everything."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    for name in _OUR_PROTOS:
        add(default_google_proto_descriptor_pool.FindFileByName(name))
    add(health_pb2.DESCRIPTOR)
    add(reflection_pb2.DESCRIPTOR)
    return pool


class _CountedService:
    """A service whose calls are counted on the connection that carries them, so that an idle connection
    (no call in flight) can be told from a busy one; grpclib asks servables only for `__mapping__`. For
    health and reflection: our own services' handlers count their calls without this extra layer. With
    `gate`, each call's key is checked first (reflection: it describes the whole API)."""

    def __init__(self, servable: Any, gate: Gate | None = None) -> None:
        self.servable = servable
        self.gate = gate

    def __mapping__(self) -> dict[str, Handler]:
        return {
            name: Handler(_Counted(h.func, self.gate, name), h.cardinality, h.request_type, h.reply_type)
            for name, h in self.servable.__mapping__().items()
        }


class _Counted:
    """One method's handler, counted and, with `gate`, admitted (a refusal is raised as the `GRPCError`
    grpclib answers with); anything else asked of it is the wrapped handler's."""

    __slots__ = ("func", "gate", "rpc")

    def __init__(
        self, func: Callable[[Stream[Any, Any]], Any], gate: Gate | None = None, path: str = ""
    ) -> None:
        self.func = func
        self.gate = gate
        self.rpc = path.rsplit("/", 1)[-1]

    async def __call__(self, stream: Stream[Any, Any]) -> None:
        connection = current_connection.get()
        if connection is None:  # not behind a guard (grpclib.testing.ChannelFor)
            await self.answer(stream)
            return
        connection.call_started()
        try:
            await self.answer(stream)
        finally:
            connection.call_ended()

    async def answer(self, stream: Stream[Any, Any]) -> None:
        if self.gate is not None:
            await self.gate.admit(stream, self.rpc)
        await self.func(stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.func, name)


class _GuardingLoop:
    """The event loop as the grpclib `Server` sees it: grpclib has no public hook for the protocol of an
    accepted connection, but hands its protocol factory to `loop.create_server`, so this loop puts `guard`
    around it. Everything else is the running loop's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, guard: Callable[[ProtocolFactory], ProtocolFactory]):
        self.loop = loop
        self.guard = guard

    async def create_server(self, factory: ProtocolFactory, *args: Any, **kwargs: Any) -> asyncio.Server:
        return await self.loop.create_server(self.guard(factory), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


def _any_scope(rpc: str) -> Scope | None:
    return None


def create_server(
    gateway: Gateway, *, guard: Callable[[ProtocolFactory], ProtocolFactory] | None = None
) -> Server:
    """Must be called inside the running event loop. `guard` wraps the protocol factory of the server's
    listener, so every accepted connection is guarded."""
    service, admin = GatewayService(gateway), AdminService(gateway)
    serving = ServiceStatus()
    serving.set(True)  # the services are healthy for as long as this server runs
    health = Health({service: [serving], admin: [serving]})
    # Reflection describes the whole API: with auth on, it needs a valid key (any scope).
    any_key = Gate(gateway.auth, _any_scope)
    # Our services' handlers count their calls themselves (see `handlers`); health and reflection are wrapped.
    servables = [
        s
        if s is service or s is admin
        else _CountedService(s, any_key if isinstance(s, ServerReflection) else None)
        for s in ServerReflection.extend([service, admin, health], pool=reflection_pool())
    ]
    if guard is None:
        return Server(servables, codec=EncodedAwareCodec())
    loop = cast(asyncio.AbstractEventLoop, _GuardingLoop(asyncio.get_running_loop(), guard))
    with warnings.catch_warnings():
        # `loop` is deprecated in grpclib 0.4 (it only ever served to pick the loop); it is the one public
        # way to see the connections it accepts.
        warnings.filterwarnings("ignore", "The loop argument is deprecated", DeprecationWarning)
        return Server(servables, codec=EncodedAwareCodec(), loop=loop)
