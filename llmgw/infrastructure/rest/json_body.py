"""Reading a request's JSON body with orjson, with OpenAI-style errors for what cannot be read."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from llmgw.domain.errors import InvalidRequest, RequestTooLarge
from llmgw.infrastructure.rest.keys import REQUEST_ID


async def read_json(request: web.Request) -> Any:
    """The body, refused as too large before any of it is read when its `Content-Length` says so; a body
    without one (chunked) is cut off by aiohttp once it passes the limit, never read whole."""
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _too_large(limit) from exc
    if not raw:
        raise InvalidRequest("Request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc.msg}.") from exc


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request body is larger than the gateway's limit of {limit} bytes.")


def json_response(payload: Any, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json", headers=headers)


def request_id(request: web.Request) -> str:
    return str(request.get(REQUEST_ID, "-"))
