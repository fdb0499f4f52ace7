"""The REST edge's one table from domain errors to HTTP status and OpenAI error `type`."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from llmgw.domain import errors
from llmgw.infrastructure.limit_headers import refusal_headers
from llmgw.infrastructure.request_ids import GENERATION_ID_HEADER, attempt_headers

# Most specific first: the first matching class wins.
_TABLE: tuple[tuple[type[errors.GatewayError], int, str], ...] = (
    (errors.RequestTooLarge, 413, "invalid_request_error"),
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.Unauthenticated, 401, "authentication_error"),
    (errors.PermissionDenied, 403, "permission_error"),
    (errors.NotFound, 404, "not_found_error"),
    (errors.RateLimited, 429, "rate_limit_error"),
    (errors.ServiceUnavailable, 503, "service_unavailable_error"),
    (errors.UpstreamRejected, 400, "invalid_request_error"),
    (errors.UpstreamRateLimited, 429, "rate_limit_error"),
    (errors.UpstreamTimeout, 504, "timeout_error"),
    (errors.UpstreamError, 502, "upstream_error"),
    (errors.GatewayError, 500, "server_error"),
)


def status_and_type(exc: errors.GatewayError) -> tuple[int, str]:
    for cls, status, kind in _TABLE:
        if isinstance(exc, cls):
            if isinstance(exc, errors.UpstreamRejected) and exc.status:
                return exc.status, kind
            return status, kind
    raise AssertionError("GatewayError is the last row")  # pragma: no cover


def error_body(exc: errors.GatewayError) -> dict[str, Any]:
    _, kind = status_and_type(exc)
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}


def error_response(exc: errors.GatewayError) -> web.Response:
    status, _ = status_and_type(exc)
    headers = attempt_headers(exc.attempts, exc.provider) | refusal_headers(exc)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
    if exc.generation_id is not None:
        headers[GENERATION_ID_HEADER] = exc.generation_id
    return web.Response(
        status=status, body=orjson.dumps(error_body(exc)), content_type="application/json", headers=headers
    )


def http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown route, wrong method, body too large) in OpenAI's shape."""
    kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
    message = exc.reason if exc.status != 413 else "Request body is larger than http.max_body_bytes."
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
    return web.Response(
        status=exc.status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )
