"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape plus the catalog's own fields."""

from __future__ import annotations

import orjson
from aiohttp import web

from llmgw.infrastructure.model_json import model_json
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY


async def list_models(request: web.Request) -> web.Response:
    data = [model_json(m) for m in request.app[GATEWAY].list_models(request[CALLER])]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    model = request.app[GATEWAY].get_model(request.match_info["id"], request[CALLER])
    return web.Response(body=orjson.dumps(model_json(model)), content_type="application/json")
