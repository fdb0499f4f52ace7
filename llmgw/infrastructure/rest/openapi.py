"""`GET /openapi.json`: the checked-in OpenAPI document of the REST routes (`openapi_document` writes it),
served as it is and without a key: it describes the API and holds nothing secret."""

from __future__ import annotations

from importlib import resources

from aiohttp import web


def routes() -> list[web.RouteDef]:
    document = resources.files(__package__).joinpath("openapi.json").read_bytes()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return [web.get("/openapi.json", openapi)]
