"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape plus the catalog's own fields."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.infrastructure.rest.keys import GATEWAY


def model_json(model: ModelSpec) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by or model.provider,
        "name": model.name,
        "provider": model.provider,
        "capabilities": [c.value for c in Capability if c in model.capabilities],
    }


async def list_models(request: web.Request) -> web.Response:
    data = [model_json(m) for m in request.app[GATEWAY].list_models()]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    model = request.app[GATEWAY].get_model(request.match_info["id"])
    return web.Response(body=orjson.dumps(model_json(model)), content_type="application/json")
