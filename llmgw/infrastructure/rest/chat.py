"""`POST /v1/chat/completions` (JSON, or SSE with `stream`) and `POST /v1/chat/completions:stream`."""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from llmgw.application.gateway import ChatStream, RequestContext
from llmgw.domain.chat import ChatRequest, parse_chat_request
from llmgw.domain.errors import GatewayError, InternalError
from llmgw.infrastructure.providers.sse import DONE_EVENT, encode_event
from llmgw.infrastructure.request_ids import GENERATION_ID_HEADER
from llmgw.infrastructure.rest.errors import error_body
from llmgw.infrastructure.rest.json_body import json_response, read_json, request_id
from llmgw.infrastructure.rest.keys import GATEWAY

log = logging.getLogger(__name__)


async def create(request: web.Request) -> web.StreamResponse:
    return await _answer(request, parse_chat_request(await read_json(request)))


async def create_stream(request: web.Request) -> web.StreamResponse:
    return await _answer(request, parse_chat_request(await read_json(request), stream=True))


async def _answer(request: web.Request, chat: ChatRequest) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ctx = RequestContext(request_id=request_id(request))
    if not chat.stream:
        result = await gateway.create_chat_completion(chat, ctx)
        return json_response(result.body, headers={GENERATION_ID_HEADER: result.body["id"]})
    stream = gateway.stream_chat_completion(chat, ctx)
    async with contextlib.aclosing(stream):
        return await _stream(request, stream)


async def _stream(request: web.Request, stream: ChatStream) -> web.StreamResponse:
    """Nothing is sent before the first upstream chunk: until then an error is an ordinary JSON answer."""
    try:
        first: bytes | None = encode_event(await anext(stream))
    except StopAsyncIteration:
        first = None
    # An SSE answer to a POST is OpenAI's protocol, hence allow_all_methods.
    response = EventSourceResponse(
        headers={GENERATION_ID_HEADER: stream.generation_id}, allow_all_methods=True
    )
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(first)
            async for chunk in stream:
                await response.write(encode_event(chunk))
    except GatewayError as exc:
        await response.write(encode_event(error_body(exc)))
    except Exception:  # the edge, mid-stream: a bug ends the stream with an error event
        log.exception("unhandled error mid-stream")
        await response.write(encode_event(error_body(InternalError("internal error"))))
    finally:
        response.stop_streaming()
    await response.write(DONE_EVENT)
    await response.write_eof()
    return response
