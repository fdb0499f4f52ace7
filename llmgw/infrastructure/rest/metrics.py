"""`GET /metrics`: the Prometheus text format, on the health port (and the REST port with
`metrics.on_http_port`). Open like `/livez`: it holds counts, never a secret nor a key that is not on
`metrics.label_keys`."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from llmgw.infrastructure.metrics import Metrics


def routes(metrics: Metrics) -> list[web.RouteDef]:
    async def scrape(request: web.Request) -> web.Response:
        await metrics.sample()
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return [web.get("/metrics", scrape)]
