"""The service's grpclib handlers, carrying the request and generation ids in the call's metadata.

The generated handlers answer without metadata, and grpclib's events (RecvRequest, Send*Metadata) could add
it, but an event costs an object, a dispatch coroutine and a copy of the metadata for every call, three
times per call (measured by `benchmarks/`: about a fifth of a unary call's CPU with the ids' headers). These
handlers take the request id from the request's metadata (or mint one), and send both ids with the
initial metadata, or with the trailers of an error. A stream's `Framed` batches (chunks that arrived from
the upstream together) go out in one DATA write.

The ids are fresh values on every call, so each connection's HPACK encoder becomes an `_IdsEncoder`: the
ids go out as never-indexed literals and no value is Huffman-coded. hpack codes in pure Python (h2 took
55 µs to send the initial metadata with both ids, 33 µs so), and indexing values that never repeat only
evicts those that do; Huffman would save ~10 bytes a call. Both this and `_send_framed` reach under
grpclib's public API; their tests run against the version installed.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import hpack
from grpclib import GRPCError
from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

from llmgw.infrastructure.grpc.wire import Framed
from llmgw.infrastructure.request_ids import (
    GENERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    accept_or_mint,
    current_generation_id,
    current_request_id,
)

UnaryMethod = Callable[[Any], Awaitable[Any]]
StreamMethod = Callable[[Any], AsyncIterator[Any]]


def with_ids(service: object, mapping: dict[str, Handler]) -> dict[str, Handler]:
    """The service's `__mapping__`, each RPC answered by `service.<rpc in snake_case>` through a handler
    that carries the ids. Only unary-unary and unary-stream RPCs are expected."""
    wrapped = {}
    for path, handler in mapping.items():
        method = getattr(service, _snake_case(path.rsplit("/", 1)[1]))
        if handler.cardinality is Cardinality.UNARY_UNARY:
            wrapped[path] = handler._replace(func=_Unary(method))
        elif handler.cardinality is Cardinality.UNARY_STREAM:
            wrapped[path] = handler._replace(func=_ServerStream(method))
        else:  # pragma: no cover - the proto has none
            raise ValueError(f"{path}: {handler.cardinality} RPCs are not supported")
    return wrapped


class _Unary:
    """Answers one request with one message."""

    __slots__ = ("method",)

    def __init__(self, method: UnaryMethod) -> None:
        self.method = method

    async def __call__(self, stream: Stream[Any, Any]) -> None:
        _begin(stream)
        try:
            reply = await self.method(await stream.recv_message())
        except GRPCError as exc:
            await _fail(stream, exc)
            return
        await stream.send_initial_metadata(metadata=_ids())
        await stream.send_message(reply)


class _ServerStream:
    """Answers one request with a stream of messages."""

    __slots__ = ("method",)

    def __init__(self, method: StreamMethod) -> None:
        self.method = method

    async def __call__(self, stream: Stream[Any, Any]) -> None:
        _begin(stream)
        started = False
        try:
            request = await stream.recv_message()
            async with contextlib.aclosing(self.method(request)) as replies:  # type: ignore[type-var]
                async for reply in replies:
                    if not started:
                        await stream.send_initial_metadata(metadata=_ids())
                        started = True
                    if isinstance(reply, Framed):
                        await _send_framed(stream, reply)
                    else:
                        await stream.send_message(reply)
        except GRPCError as exc:
            await _fail(stream, exc)
            return
        if not started:  # no message at all: the ids still go out
            await stream.send_initial_metadata(metadata=_ids())


async def _send_framed(stream: Stream[Any, Any], framed: Framed) -> None:
    """Several messages in one DATA write: what `Stream.send_message` does once per message (grpclib's
    protocol stream splits the data into frames by flow-control window and frame size), and the same
    bookkeeping."""
    await stream._stream.send_data(framed.data)
    stream._send_message_done = True
    stream._messages_sent += framed.count
    connection = stream._stream.connection
    connection.messages_sent += framed.count
    connection.last_message_sent = time.monotonic()


class _IdsEncoder(hpack.Encoder):
    """hpack's encoder, with literal values sent as they are and the id headers never indexed."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        return super().add(to_add, sensitive or to_add[0] in _FRESH_HEADERS, huffman)


_FRESH_HEADERS = frozenset({REQUEST_ID_HEADER.encode(), GENERATION_ID_HEADER.encode()})


def _begin(stream: Stream[Any, Any]) -> None:
    """A call's start: the connection's encoder made an `_IdsEncoder` (once per connection; its state
    stays), the request id taken from the metadata or minted, no generation id yet."""
    encoder = stream._stream.connection._connection.encoder
    if encoder.__class__ is not _IdsEncoder:
        encoder.__class__ = _IdsEncoder
    value = stream.metadata.get(REQUEST_ID_HEADER) if stream.metadata is not None else None
    current_request_id.set(accept_or_mint(value if isinstance(value, str) else None))
    current_generation_id.set(None)


def _ids() -> dict[str, str]:
    ids = {REQUEST_ID_HEADER: current_request_id.get()}
    generation_id = current_generation_id.get()
    if generation_id is not None:
        ids[GENERATION_ID_HEADER] = generation_id
    return ids


async def _fail(stream: Stream[Any, Any], exc: GRPCError) -> None:
    """The error's status, with the ids, in the trailers (a trailers-only answer if nothing was sent)."""
    await stream.send_trailing_metadata(
        status=exc.status, status_message=exc.message, status_details=exc.details, metadata=_ids()
    )


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
