"""`POST /v1/embeddings`."""

from __future__ import annotations

from aiohttp import web

from llmgw.application.gateway import RequestContext
from llmgw.domain.chat import parse_embeddings_request
from llmgw.infrastructure.json_text import with_fields
from llmgw.infrastructure.limit_headers import admitted_headers
from llmgw.infrastructure.request_ids import GENERATION_ID_HEADER, attempt_headers, current_trace_id
from llmgw.infrastructure.rest.json_body import json_response, read_json, request_id
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY


async def create(request: web.Request) -> web.Response:
    embeddings = parse_embeddings_request(await read_json(request))
    ctx = RequestContext(request_id=request_id(request), key=request[CALLER], trace_id=current_trace_id.get())
    result = await request.app[GATEWAY].create_embeddings(embeddings, ctx)
    headers = {
        GENERATION_ID_HEADER: result.body["id"],
        **attempt_headers(ctx.attempts, ctx.provider),
        **admitted_headers(ctx.limits),
    }
    if result.text is None:
        return json_response(result.body, headers=headers)
    body = with_fields(result.text, result.body)
    return web.Response(body=body, content_type="application/json", headers=headers)
