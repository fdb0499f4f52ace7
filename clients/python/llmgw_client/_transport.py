"""One grpclib channel and the calls over it: key and headers as metadata, the deadline, retries, and the
gateway's error statuses turned into the exceptions of `_errors`.

A call's `timeout` is its gRPC deadline and covers its retries: an attempt starts only with time left,
and a backoff that would outlast the deadline is not waited. Retried: UNAVAILABLE (the gateway's upstream
failed, or the connection did), and RESOURCE_EXHAUSTED when the gateway says when to come back
(`retry-after`, up to `Backoff.max_retry_after`). A stream is retried only until its first message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import betterproto2
from grpclib import GRPCError
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline

from llmgw_client._errors import (
    GENERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    APIConnectionError,
    APIError,
    APITimeoutError,
    InternalServerError,
    RateLimitError,
    status_error,
)

R = TypeVar("R", bound=betterproto2.Message)
T = TypeVar("T")


class NotGiven:
    """A keyword argument left out (None may mean "no timeout")."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the gateway said about a call besides its answer."""

    request_id: str | None
    generation_id: str | None


@dataclass(frozen=True, slots=True)
class Backoff:
    """How retries wait: `initial` seconds doubling up to `maximum`, each scaled by a random factor in
    [1 - jitter, 1]; a `retry-after` longer than `max_retry_after` is not waited (the error is raised)."""

    initial: float = 0.5
    maximum: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def delay(self, attempt: int) -> float:
        base = min(self.initial * 2.0**attempt, self.maximum)
        return base * (1 - self.jitter * random.random())  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True, slots=True)
class CallOptions:
    """One call's settings: the client's, with what the call gave over them."""

    timeout: float | None
    max_retries: int
    metadata: tuple[tuple[str, str], ...]


class Caller:
    """Makes the calls of one client over its channel, opened by `connect` at the first call (so a client
    can be built outside the event loop that will use it)."""

    __slots__ = ("_channel", "backoff", "connect", "max_retries", "metadata", "timeout")

    def __init__(
        self,
        connect: Callable[[], Channel],
        *,
        api_key: str | None,
        timeout: float | None,
        max_retries: int,
        default_headers: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.connect = connect
        self._channel: Channel | None = None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        headers = {k.lower(): v for k, v in (default_headers or {}).items()}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.metadata = tuple(headers.items())

    @property
    def channel(self) -> Channel:
        channel = self._channel
        if channel is None:
            channel = self._channel = self.connect()
        return channel

    def close(self) -> None:
        """Close the channel, if one was opened; the next call opens a new one."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def options(
        self,
        *,
        timeout: float | NotGiven | None = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> CallOptions:
        metadata = self.metadata
        if extra_headers:
            merged = dict(metadata) | {k.lower(): v for k, v in extra_headers.items()}
            metadata = tuple(merged.items())
        return CallOptions(
            timeout=self.timeout if isinstance(timeout, NotGiven) else timeout,
            max_retries=self.max_retries if isinstance(max_retries, NotGiven) else max_retries,
            metadata=metadata,
        )

    async def unary(
        self, method: str, request: betterproto2.Message, reply_type: type[R], options: CallOptions
    ) -> tuple[R, CallInfo]:
        """One request, one answer, retried as the module says."""
        deadline = _deadline(options.timeout)
        attempt = 0
        while True:
            try:
                return await self._unary_once(method, request, reply_type, options, deadline)
            except APIError as exc:
                await self._wait_to_retry(exc, attempt, options, deadline)
                attempt += 1

    async def stream(
        self,
        method: str,
        request: betterproto2.Message,
        reply_type: type[R],
        options: CallOptions,
        convert: Callable[[R, CallInfo], T],
    ) -> AnswerStream[R, T]:
        """A server stream, opened and read up to its first message (so its errors before any answer raise
        here, and are retried); the rest is read by iterating the returned stream."""
        deadline = _deadline(options.timeout)
        attempt = 0
        while True:
            opened = AnswerStream(convert)
            try:
                await opened.open(
                    self.channel,
                    method=method,
                    request=request,
                    reply_type=reply_type,
                    metadata=options.metadata,
                    deadline=deadline,
                )
            except APIError as exc:
                await self._wait_to_retry(exc, attempt, options, deadline)
                attempt += 1
            else:
                return opened

    async def _unary_once(
        self,
        method: str,
        request: betterproto2.Message,
        reply_type: type[R],
        options: CallOptions,
        deadline: Deadline | None,
    ) -> tuple[R, CallInfo]:
        stream: Stream[Any, R] = self.channel.request(
            method,
            Cardinality.UNARY_UNARY,
            type(request),
            reply_type,
            metadata=options.metadata,
            deadline=deadline,
        )
        with _mapped(stream):
            async with stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
        if reply is None:  # pragma: no cover - grpclib raises for a unary answer without a message
            raise InternalServerError("the gateway answered without a message", status=Status.INTERNAL)
        return reply, _info(stream)

    async def _wait_to_retry(
        self, exc: APIError, attempt: int, options: CallOptions, deadline: Deadline | None
    ) -> None:
        """Sleep before the next attempt, or raise `exc` when it is not to be retried."""
        delay = self._retry_delay(exc, attempt, options)
        if delay is None or (deadline is not None and delay >= deadline.time_remaining()):
            raise exc
        await asyncio.sleep(delay)

    def _retry_delay(self, exc: APIError, attempt: int, options: CallOptions) -> float | None:
        if attempt >= options.max_retries or isinstance(exc, APITimeoutError):
            return None
        if isinstance(exc, RateLimitError):
            after = exc.retry_after
            return after if after is not None and after <= self.backoff.max_retry_after else None
        if isinstance(exc, APIConnectionError) or (
            isinstance(exc, InternalServerError) and exc.status is Status.UNAVAILABLE
        ):
            return self.backoff.delay(attempt)
        return None


class AnswerStream(Generic[R, T]):
    """An answer arriving as messages: an async iterator of converted messages, and an async context
    manager that closes it. Closing before the end cancels the call (the gateway records it cancelled)."""

    __slots__ = ("_convert", "_exits", "_first", "_stream", "done", "info")

    def __init__(self, convert: Callable[[R, CallInfo], T]) -> None:
        self._convert = convert
        self._exits = AsyncExitStack()
        self._stream: Stream[Any, R] | None = None
        self._first: R | None = None
        self.info = CallInfo(None, None)
        self.done = False

    @property
    def request_id(self) -> str | None:
        return self.info.request_id

    @property
    def generation_id(self) -> str | None:
        return self.info.generation_id

    async def open(
        self,
        channel: Channel,
        *,
        method: str,
        request: betterproto2.Message,
        reply_type: type[R],
        metadata: tuple[tuple[str, str], ...],
        deadline: Deadline | None,
    ) -> None:
        stream: Stream[Any, R] = channel.request(
            method, Cardinality.UNARY_STREAM, type(request), reply_type, metadata=metadata, deadline=deadline
        )
        self._stream = stream
        try:
            with _mapped(stream):
                await self._exits.enter_async_context(stream)
                await stream.send_message(request, end=True)
                self._first = await stream.recv_message()
        except BaseException as exc:
            # Leave grpclib's stream with the error, so it is released without waiting for an answer
            # (and its deadline, already passed, is not raised a second time).
            self.done = True
            await self._exits.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self.info = _info(stream)
        if self._first is None:
            await self._finish()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[T]:
        stream = self._stream
        if stream is None:
            raise RuntimeError("the stream was not opened")
        convert, info = self._convert, self.info
        first, self._first = self._first, None
        try:
            if first is not None:
                yield convert(first, info)
            while not self.done:
                with _mapped(stream):
                    message = await stream.recv_message()
                if message is None:
                    await self._finish()
                    return
                yield convert(message, info)
        except BaseException as exc:
            if not self.done:  # an error, or the iteration abandoned: release the call
                self.done = True
                await self._exits.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def _finish(self) -> None:
        """The answer's end: read the trailers (raising the error they carry) and release the stream."""
        self.done = True
        stream = self._stream
        assert stream is not None
        with _mapped(stream):
            await self._exits.aclose()

    async def close(self) -> None:
        """Stop reading: cancel the call if the answer has not ended."""
        if self.done:
            return
        self.done = True
        stream = self._stream
        if stream is not None:
            # ProtocolError etc.: the call had already ended or the connection is gone, nothing to cancel.
            with contextlib.suppress(ProtocolError, StreamTerminatedError, OSError):
                await stream.cancel()
        # Leaving grpclib's stream with an exception releases it without waiting for the trailers.
        await self._exits.__aexit__(_Closed, _Closed(), None)

    async def __aenter__(self) -> AnswerStream[R, T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Closed(Exception):
    """The reader closed the stream before its end."""


def _deadline(timeout: float | None) -> Deadline | None:
    return None if timeout is None else Deadline.from_timeout(timeout)


def _info(stream: Stream[Any, Any]) -> CallInfo:
    metadata = stream.initial_metadata
    if metadata is None:
        return CallInfo(None, None)
    request_id = metadata.get(REQUEST_ID_HEADER)
    generation_id = metadata.get(GENERATION_ID_HEADER)
    return CallInfo(
        request_id if isinstance(request_id, str) else None,
        generation_id if isinstance(generation_id, str) else None,
    )


class _mapped:
    """Turns what grpclib raises during a call into this client's exceptions."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream[Any, Any]) -> None:
        self.stream = stream

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, APIError):
            return
        stream = self.stream
        metadata: dict[str, object] = {}
        for part in (stream.initial_metadata, stream.trailing_metadata):
            if part is not None:
                metadata.update(part)
        if isinstance(exc, GRPCError):
            raise status_error(exc.status, exc.message, metadata) from exc
        request_id = _str(metadata.get(REQUEST_ID_HEADER))
        generation_id = _str(metadata.get(GENERATION_ID_HEADER))
        if isinstance(exc, asyncio.TimeoutError):
            raise APITimeoutError(request_id=request_id, generation_id=generation_id) from exc
        if isinstance(exc, (OSError, StreamTerminatedError, ProtocolError)):
            message = f"Connection error: {exc}"
            raise APIConnectionError(message, request_id=request_id, generation_id=generation_id) from exc


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
