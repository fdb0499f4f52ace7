"""The service's grpclib handlers, carrying the request and generation ids in the call's metadata.

The generated handlers answer without metadata. These take the request id from the request's metadata
(or mint one) and send both ids with the initial metadata, or with the trailers of an error, through
grpclib's public `Stream` API, so every message still goes through its normal send path (and events).

They also count their call on the guarded connection that carries it (see `http2_guard`), so that an
idle connection can be told from a busy one without a second wrapper (and coroutine) around each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from grpclib import GRPCError
from grpclib.const import Cardinality, Handler, Status
from grpclib.server import Stream
from opentelemetry.trace import Status as TraceStatus
from opentelemetry.trace import StatusCode

from llmgw.application.auth import Authenticator
from llmgw.domain.errors import GatewayError
from llmgw.domain.keys import ApiKey, Scope
from llmgw.infrastructure.credentials import credential
from llmgw.infrastructure.grpc.errors import MappedError
from llmgw.infrastructure.http2_guard import current_connection
from llmgw.infrastructure.request_ids import (
    GENERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    accept_or_mint,
    attempt_headers,
    current_attempts,
    current_deadline,
    current_generation_id,
    current_limit_headers,
    current_request_id,
)
from llmgw.infrastructure.tracing import Tracing

UnaryMethod = Callable[[Any], Awaitable[Any]]
StreamMethod = Callable[[Any], AsyncIterator[Any]]

#: How the call being answered ended, for its span (set by `_fail`; OK otherwise).
current_status: ContextVar[Status] = ContextVar("grpc_status", default=Status.OK)
#: The key of the call being answered (None: auth is off), for the service's methods to read.
current_caller: ContextVar[ApiKey | None] = ContextVar("current_caller", default=None)


@dataclass(frozen=True, slots=True)
class Gate:
    """The key check of the gRPC front: `auth` admits a call's key with the scope `scope_of` gives its
    RPC's name (None: any valid key)."""

    auth: Authenticator | None
    scope_of: Callable[[str], Scope | None] = lambda rpc: Scope.INFERENCE
    #: With tracing on, each call is answered inside its server span.
    tracing: Tracing | None = None

    async def admit(self, stream: Stream[Any, Any], rpc: str) -> None:
        """Set `current_caller`, or raise the refusal as a `GRPCError`."""
        auth = self.auth
        if auth is None or not auth.enabled:
            current_caller.set(None)
            return
        metadata = stream.metadata if stream.metadata is not None else {}
        try:
            current_caller.set(await auth.admit(credential(metadata), self.scope_of(rpc)))
        except GatewayError as exc:
            raise MappedError(exc) from exc


def with_ids(service: object, mapping: dict[str, Handler], gate: Gate | None = None) -> dict[str, Handler]:
    """The service's `__mapping__`, each RPC answered by `service.<rpc in snake_case>` through a handler
    that carries the ids and, with `gate`, checks the caller's key first. Only unary-unary and
    unary-stream RPCs are expected."""
    gate = gate or Gate(None)
    wrapped = {}
    for path, handler in mapping.items():
        rpc = path.rsplit("/", 1)[1]
        method = getattr(service, _snake_case(rpc))
        if handler.cardinality is Cardinality.UNARY_UNARY:
            func: Callable[[Stream[Any, Any]], Awaitable[None]] = _Unary(method, gate, rpc)
        elif handler.cardinality is Cardinality.UNARY_STREAM:
            func = _ServerStream(method, gate, rpc)
        else:  # pragma: no cover - the proto has none
            raise ValueError(f"{path}: {handler.cardinality} RPCs are not supported")
        if gate.tracing is not None:
            func = _Traced(func, gate.tracing, path)
        wrapped[path] = handler._replace(func=func)
    return wrapped


class _Traced:
    """A call answered inside its server span, which continues the trace of the call's `traceparent`."""

    __slots__ = ("attributes", "func", "name", "tracing")

    def __init__(
        self, func: Callable[[Stream[Any, Any]], Awaitable[None]], tracing: Tracing, path: str
    ) -> None:
        self.func = func
        self.tracing = tracing
        self.name = path.lstrip("/")
        service, _, method = self.name.partition("/")
        self.attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

    async def __call__(self, stream: Stream[Any, Any]) -> None:
        metadata = stream.metadata if stream.metadata is not None else {}
        with self.tracing.server_span(self.name, metadata, self.attributes) as span:
            current_status.set(Status.OK)
            await self.func(stream)
            status = current_status.get()
            span.set_attribute("rpc.grpc.status_code", status.value)
            if status is not Status.OK:
                span.set_status(TraceStatus(StatusCode.ERROR))


class _Unary:
    """Answers one request with one message."""

    __slots__ = ("gate", "method", "rpc")

    def __init__(self, method: UnaryMethod, gate: Gate, rpc: str) -> None:
        self.method = method
        self.gate = gate
        self.rpc = rpc

    async def __call__(self, stream: Stream[Any, Any]) -> None:
        connection = current_connection.get()
        if connection is not None:  # None: not behind a guard (grpclib.testing.ChannelFor)
            connection.call_started()
        try:
            _begin(stream)
            try:
                await self.gate.admit(stream, self.rpc)
                reply = await self.method(await stream.recv_message())
            except GRPCError as exc:
                await _fail(stream, exc)
                return
            await stream.send_initial_metadata(metadata=_ids())
            await stream.send_message(reply)
        finally:
            if connection is not None:
                connection.call_ended()


class _ServerStream:
    """Answers one request with a stream of messages."""

    __slots__ = ("gate", "method", "rpc")

    def __init__(self, method: StreamMethod, gate: Gate, rpc: str) -> None:
        self.method = method
        self.gate = gate
        self.rpc = rpc

    async def __call__(self, stream: Stream[Any, Any]) -> None:
        connection = current_connection.get()
        if connection is not None:
            connection.call_started()
        try:
            await self.answer(stream)
        finally:
            if connection is not None:
                connection.call_ended()

    async def answer(self, stream: Stream[Any, Any]) -> None:
        _begin(stream)
        started = False
        try:
            await self.gate.admit(stream, self.rpc)
            request = await stream.recv_message()
            async with contextlib.aclosing(self.method(request)) as replies:  # type: ignore[type-var]
                async for reply in replies:
                    if not started:
                        await stream.send_initial_metadata(metadata=_ids())
                        started = True
                    await stream.send_message(reply)
        except GRPCError as exc:
            await _fail(stream, exc)
            return
        if not started:  # no message at all: the ids still go out
            await stream.send_initial_metadata(metadata=_ids())


def _begin(stream: Stream[Any, Any]) -> None:
    """A call's start: the request id taken from the metadata or minted, the client's deadline if it set
    one, no generation id nor attempts yet."""
    value = stream.metadata.get(REQUEST_ID_HEADER) if stream.metadata is not None else None
    current_request_id.set(accept_or_mint(value if isinstance(value, str) else None))
    current_generation_id.set(None)
    current_attempts.set(None)
    current_limit_headers.set(None)
    deadline = stream.deadline
    current_deadline.set(
        None if deadline is None else asyncio.get_running_loop().time() + deadline.time_remaining()
    )


def _ids() -> dict[str, str]:
    ids = {REQUEST_ID_HEADER: current_request_id.get()}
    generation_id = current_generation_id.get()
    if generation_id is not None:
        ids[GENERATION_ID_HEADER] = generation_id
    attempts = current_attempts.get()
    if attempts is not None:
        ids.update(attempt_headers(*attempts))
    limits = current_limit_headers.get()
    if limits:
        ids.update(limits)
    return ids


async def _fail(stream: Stream[Any, Any], exc: GRPCError) -> None:
    """The error's status, with the ids (and a domain error's code and retry-after), in the trailers (a
    trailers-only answer if nothing was sent)."""
    current_status.set(exc.status)
    metadata = _ids()
    if isinstance(exc, MappedError):
        metadata |= exc.trailers
    await stream.send_trailing_metadata(
        status=exc.status, status_message=exc.message, status_details=exc.details, metadata=metadata
    )


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
