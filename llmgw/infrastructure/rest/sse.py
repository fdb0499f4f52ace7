"""The SSE response: aiohttp-sse's `EventSourceResponse` (headers, chunked body), minus its task per stream.

aiohttp-sse keeps a stream alive with a task that sleeps between pings; creating and cancelling a task
for every stream is a measurable part of a short stream's CPU. Here one timer does it, re-armed after each
ping, and a task exists only while a ping is being written: for streams shorter than the ping interval,
the usual case, that is one timer handle.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest
from aiohttp_sse import EventSourceResponse


class EventStream(EventSourceResponse):
    """An SSE answer to write `data:` events to; `stop_streaming()` when done (or on error)."""

    _timer: asyncio.TimerHandle | None = None
    _pinging: asyncio.Task[None] | None = None
    _stopped = False

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        writer = await web.StreamResponse.prepare(self, request)
        self.enable_chunked_encoding()
        self._arm()
        return writer

    def is_connected(self) -> bool:
        return self.prepared and not self._stopped

    def stop_streaming(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pinging is not None:
            self._pinging.cancel()

    async def wait(self) -> None:
        raise NotImplementedError("EventStream has no task to wait for")

    def _arm(self) -> None:
        if not self._stopped:
            self._timer = asyncio.get_running_loop().call_later(self._ping_interval, self._ping_due)

    def _ping_due(self) -> None:
        self._timer = None
        self._pinging = asyncio.ensure_future(self._ping_once())

    async def _ping_once(self) -> None:
        with contextlib.suppress(ConnectionResetError, RuntimeError):  # RuntimeError: written after EOF
            await self.write(f": ping{self._sep}{self._sep}".encode())
            self._pinging = None
            self._arm()
