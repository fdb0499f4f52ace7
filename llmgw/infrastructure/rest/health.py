"""`/livez` and `/readyz`, served on the health port and on the REST port. From SIGTERM on `/readyz` answers
503 `"status": "draining"`; the health port keeps answering until the process exits."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from llmgw.application.gateway import Gateway, Readiness
from llmgw.infrastructure.credentials import credential
from llmgw.infrastructure.metrics import metrics_of
from llmgw.infrastructure.rest.keys import GATEWAY
from llmgw.infrastructure.rest.metrics import routes as metrics_routes


async def livez(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """Status for anyone; providers, store and circuits only for an admin key (or with auth off)."""
    gateway = request.app[GATEWAY]
    readiness = await gateway.readiness()
    auth = gateway.auth
    details = auth is None or await auth.is_admin(credential(request.headers))
    body = readiness_body(readiness) if details else {"status": _status(readiness)}
    return web.Response(
        status=200 if readiness.ready else 503, body=orjson.dumps(body), content_type="application/json"
    )


def _status(readiness: Readiness) -> str:
    return "draining" if readiness.draining else "ready" if readiness.ready else "not_ready"


def readiness_body(readiness: Readiness) -> dict[str, Any]:
    return {
        "status": _status(readiness),
        "providers": [{"name": p.name, "credentials": p.has_credentials} for p in readiness.providers],
        "store": {
            "state": "up" if readiness.store_up else "down",
            "pending_records": readiness.pending_records,
            "dropped_records": readiness.dropped_records,
        },
        # The counters of limits and budgets (Redis, or this process's); down does not make the gateway
        # unready: `limits.on_store_error` decides what limited requests meet meanwhile.
        "limits": {"state": "up" if readiness.limits_up else "down"}
        if readiness.limits_up is not None
        else None,
        # Open and half-open circuits only, earliest opened first; they do not make the gateway unready.
        "circuits": [
            {
                "provider": c.provider,
                "upstream_model": c.upstream_model,
                "state": c.state.value,
                "opened_at": c.opened_at,
            }
            for c in readiness.circuits
        ],
    }


def routes() -> list[web.RouteDef]:
    return [web.get("/livez", livez), web.get("/readyz", readyz)]


def create_health_app(gateway: Gateway) -> web.Application:
    app = web.Application()
    app[GATEWAY] = gateway
    app.add_routes(routes())
    metrics = metrics_of(gateway.observers)
    if metrics is not None:
        app.add_routes(metrics_routes(metrics))
    return app
