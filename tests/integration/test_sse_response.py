"""The SSE response pings a quiet stream from a timer, and leaves nothing running once stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from llmgw.infrastructure.rest.sse import EventStream

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def app_writing(pause: float, seen: list[EventStream]) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = EventStream(ping_interval=0.05, send_timeout=None)
        seen.append(response)
        await response.prepare(request)
        try:
            await response.write(b"data: a\n\n")
            await asyncio.sleep(pause)
            await response.write(b"data: b\n\n")
            await response.write_eof()
        finally:
            response.stop_streaming()
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    return app


async def test_a_quiet_stream_is_kept_alive_with_ping_comments(aiohttp_client: ClientFactory) -> None:
    seen: list[EventStream] = []
    client = await aiohttp_client(app_writing(0.23, seen))
    response = await client.get("/")
    body = await response.read()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert body.startswith(b"data: a\n\n")
    assert body.endswith(b"data: b\n\n")
    assert body.count(b": ping\r\n\r\n") >= 3  # every 0.05 s of the 0.23 s pause
    assert seen[0]._timer is None


async def test_a_short_stream_sends_no_ping_and_leaves_no_timer_or_task(
    aiohttp_client: ClientFactory,
) -> None:
    seen: list[EventStream] = []
    client = await aiohttp_client(app_writing(0, seen))
    body = await (await client.get("/")).read()
    assert body == b"data: a\n\ndata: b\n\n"
    stream = seen[0]
    assert stream._timer is None
    assert stream._pinging is None
    assert not stream.is_connected()
