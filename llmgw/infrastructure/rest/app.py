"""The aiohttp application: one edge middleware (request id, errors, access log) and the routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp_cors
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry.trace import Status, StatusCode

from llmgw.application.gateway import Gateway
from llmgw.domain.errors import GatewayError, InternalError
from llmgw.domain.keys import ApiKey, Scope
from llmgw.infrastructure.credentials import credential
from llmgw.infrastructure.metrics import metrics_of
from llmgw.infrastructure.request_ids import (
    ATTEMPTS_HEADER,
    GENERATION_ID_HEADER,
    PROVIDER_HEADER,
    REQUEST_ID_HEADER,
    accept_or_mint,
    current_request_id,
)
from llmgw.infrastructure.rest import admin, chat, console, embeddings, generations, health, models, openapi
from llmgw.infrastructure.rest.errors import error_response, http_error_response
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY, REQUEST_ID
from llmgw.infrastructure.rest.metrics import routes as metrics_routes
from llmgw.infrastructure.tracing import Tracing, tracing_of

log = logging.getLogger("llmgw.rest")
access_log = logging.getLogger("llmgw.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in and out, domain and aiohttp errors in OpenAI's shape, one access log line."""
    request_id = accept_or_mint(request.headers.get(REQUEST_ID_HEADER))
    current_request_id.set(request_id)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        try:
            request[CALLER] = await _caller(request)
            response = await handler(request)
        except GatewayError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            response = http_error_response(exc)
        except Exception:  # the edge: a bug becomes a 500 without leaking its details
            log.exception("unhandled error")
            response = error_response(_internal())
        status = response.status
        if not response.prepared:  # a streamed answer sent its request id with its headers
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except asyncio.CancelledError:
        status = 499
        raise
    finally:
        # Chat and embeddings log their own line with the generation record; successes here are debug.
        access_log.log(
            logging.INFO if status >= 400 else logging.DEBUG,
            "%s %s %d %.1fms",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
        )


def traced(tracing: Tracing) -> Middleware:
    """The outermost middleware while tracing is on: the request's server span around the edge, continuing
    the caller's `traceparent`."""

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        attributes = {"http.request.method": request.method, "url.path": request.path, "http.route": route}
        with tracing.server_span(f"{request.method} {route}", request.headers, attributes) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    return trace_request


# Open to anyone: liveness and readiness (whose details `health` shows to admin keys only), the
# OpenAPI document, which describes the routes and holds nothing secret, `/metrics` (counts; key labels only
# for `metrics.label_keys`) and the console's static files (`console.is_console_path`), whose API calls
# send a key.
_OPEN = frozenset({"/livez", "/readyz", "/openapi.json", "/metrics"})
# Admin routes a `usage:read` key may call too (it sees its own team's part).
_READ_USAGE = frozenset({"/admin/v1/usage", "/admin/v1/generations"})


async def _caller(request: web.Request) -> ApiKey | None:
    """The one key check of the REST front: every route but the open ones and CORS preflights needs a key;
    `/admin/` needs the `admin` scope, generation lookups and the usage reports any valid key (who may read
    which records is the use case's rule), everything else `inference`."""
    auth = request.app[GATEWAY].auth
    path = request.path
    if (
        auth is None
        or not auth.enabled
        or path in _OPEN
        or console.is_console_path(path)
        or _preflight(request)
    ):
        return None
    if path in _READ_USAGE:
        scope: Scope | None = None
    elif path.startswith("/admin/"):
        scope = Scope.ADMIN
    elif path.startswith(("/v1/generation/", "/api/v1/generation")):
        scope = None
    else:
        scope = Scope.INFERENCE
    return await auth.admit(credential(request.headers), scope)


def _preflight(request: web.Request) -> bool:
    """A browser's CORS preflight carries no credentials by design; aiohttp-cors answers it."""
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _internal() -> GatewayError:
    return InternalError("internal error", code="internal_error")


def create_app(
    gateway: Gateway,
    *,
    max_body_bytes: int,
    cors_origins: tuple[str, ...] = (),
    metrics: bool = False,
    console_enabled: bool = True,
) -> web.Application:
    """The REST app; with `cors_origins`, browsers on those origins (`*`: any) may call every route: preflight
    requests are answered, and `Authorization`, `x-api-key` and `x-request-id` may be sent. With
    `console_enabled`, the web console at `/console/`."""
    tracing = tracing_of(gateway.observers)
    middlewares: list[Middleware] = [edge] if tracing is None else [traced(tracing), edge]
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    app[GATEWAY] = gateway
    app.add_routes(
        [
            web.get("/v1/models", models.list_models),
            web.get("/v1/models/{id:.+}", models.get_model),
            web.post("/v1/chat/completions", chat.create),
            web.post("/v1/chat/completions:stream", chat.create_stream),
            web.post("/v1/embeddings", embeddings.create),
            web.get("/v1/generation/{id}", generations.get),
            web.get("/api/v1/generation", generations.get_openrouter),
            *health.routes(),
            *openapi.routes(),
            *admin.routes(),
        ]
    )
    watched = metrics_of(gateway.observers)
    if metrics and watched is not None:
        app.add_routes(metrics_routes(watched))
    if console_enabled:
        app.add_routes(console.routes())
    if cors_origins:
        _allow_cors(app, cors_origins)
    return app


def _allow_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    # aiohttp-cors leaves ResourceOptions unannotated.
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_headers=("Authorization", "Content-Type", "x-api-key", REQUEST_ID_HEADER),
        expose_headers=(REQUEST_ID_HEADER, GENERATION_ID_HEADER, ATTEMPTS_HEADER, PROVIDER_HEADER),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        cors.add(route)
