"""`POST /v1/chat/completions` (JSON, or SSE with `stream`) and `POST /v1/chat/completions:stream`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from llmgw.application.gateway import ChatStream, RequestContext
from llmgw.domain.chat import ChatRequest, JSONObject, parse_chat_request
from llmgw.domain.errors import GatewayError, InternalError
from llmgw.infrastructure.limit_headers import admitted_headers
from llmgw.infrastructure.request_ids import (
    GENERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    attempt_headers,
    current_trace_id,
)
from llmgw.infrastructure.rest.errors import error_body
from llmgw.infrastructure.rest.json_body import json_response, read_json, request_id
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY
from llmgw.infrastructure.sse import DONE_EVENT, encode_event

log = logging.getLogger(__name__)


async def create(request: web.Request) -> web.StreamResponse:
    return await _answer(request, parse_chat_request(await read_json(request)))


async def create_stream(request: web.Request) -> web.StreamResponse:
    return await _answer(request, parse_chat_request(await read_json(request), stream=True))


async def _answer(request: web.Request, chat: ChatRequest) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ctx = RequestContext(request_id=request_id(request), key=request[CALLER], trace_id=current_trace_id.get())
    if not chat.stream:
        result = await gateway.create_chat_completion(chat, ctx)
        headers = {
            GENERATION_ID_HEADER: result.body["id"],
            **attempt_headers(ctx.attempts, ctx.provider),
            **admitted_headers(ctx.limits),
        }
        return json_response(result.body, headers=headers)
    stream = gateway.stream_chat_completion(chat, ctx)
    async with contextlib.aclosing(stream):
        return await _stream(request, stream, ctx)


async def _stream(request: web.Request, stream: ChatStream, ctx: RequestContext) -> web.StreamResponse:
    """Nothing is sent before the first upstream chunk: until then an error is an ordinary JSON answer."""
    first = await anext(stream, None)
    # An SSE answer to a POST is OpenAI's protocol, hence allow_all_methods. No send_timeout: it wraps the
    # socket in a new object and costs three socket option calls per stream (about 4% of a paced stream's
    # CPU in the benchmark's profile), and a client that stops reading is noticed by the kernel anyway.
    headers = {
        GENERATION_ID_HEADER: stream.generation_id,
        REQUEST_ID_HEADER: request_id(request),
        **attempt_headers(ctx.attempts, ctx.provider),
        **admitted_headers(ctx.limits),
    }
    response = EventSourceResponse(headers=headers, sep="\n", allow_all_methods=True, send_timeout=None)
    try:
        await response.prepare(request)  # writes the headers: the client may have left already
        try:
            await _send(response, first, stream)
        finally:
            response.stop_streaming()  # cancels its ping task, which ends on its own: nothing waits for it
    except ConnectionResetError as exc:
        # The client left between two writes: what a cancellation is, not an error to report.
        raise asyncio.CancelledError from exc
    return response


async def _send(response: web.StreamResponse, chunks: list[JSONObject] | None, stream: ChatStream) -> None:
    """Chunks as they come, those that arrived together in one write; an error after the first becomes an
    error event; then [DONE]."""
    tail = b""
    try:
        while chunks is not None:
            await response.write(b"".join([encode_event(chunk) for chunk in chunks]))
            chunks = await anext(stream, None)  # the stream's end writes its record, before [DONE] goes out
    except GatewayError as exc:
        tail = encode_event(error_body(exc))
    except ConnectionResetError:
        raise
    except Exception:  # the edge, mid-stream: a bug ends the stream with an error event
        log.exception("unhandled error mid-stream")
        tail = encode_event(error_body(InternalError("internal error")))
    await response.write_eof(tail + DONE_EVENT)
