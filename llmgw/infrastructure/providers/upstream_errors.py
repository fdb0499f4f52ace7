"""Upstream failures as domain errors: one table from HTTP status and error body to the hierarchy."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from llmgw.domain.errors import (
    ContextTooLong,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

_REJECTED = frozenset({400, 404, 413, 422})
_MAX_MESSAGE = 2000
# How upstreams say a request is longer than the model's context: OpenAI's and vLLM's code, OpenAI's and
# OpenRouter's "maximum context length is N tokens", vLLM's "... exceeds the model's context window",
# DashScope's "Range of input length should be [1, N]", Anthropic-style "prompt is too long".
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_MESSAGE = re.compile(
    r"context[ _](length|window)|maximum context|range of input length|prompt is too long|too many tokens",
    re.IGNORECASE,
)


def error_from_status(
    status: int, body: bytes, headers: Mapping[str, str], *, provider: str, secret: str = ""
) -> UpstreamError:
    """Map an upstream error answer; the message is the upstream's own, with our key scrubbed."""
    # Scrub the key before anything is cut to length, or a cut through the key would keep part of it.
    message, code, param = _read_error(body.replace(secret.encode(), b"***") if secret else body)
    message = message or f"HTTP {status}"
    text = f"{provider}: {message}"
    if status in _REJECTED:
        if code in _CONTEXT_CODES or _CONTEXT_MESSAGE.search(message):
            return ContextTooLong(text, status=status, code=code, param=param)
        return UpstreamRejected(text, status=status, code=code, param=param)
    if status == 429:
        return UpstreamRateLimited(text, retry_after=retry_after(headers), code=code)
    if status == 408:
        return UpstreamTimeout(text, status=status, code=code)
    if status in (401, 403):
        return UpstreamUnavailable(
            f"{provider} rejected the gateway's credentials: {message}", status=status, code=code
        )
    return UpstreamUnavailable(text, status=status, code=code)


# Mid-stream errors carry no HTTP status; DashScope names them by code instead.
_STATUS_BY_CODE = {
    "data_inspection_failed": 400,
    "invalid_parameter_error": 400,
    "limit_requests": 429,
    "Throttling.RateQuota": 429,
    "rate_limit_exceeded": 429,
}


def error_from_event(error: Any, *, provider: str, secret: str = "") -> UpstreamError:
    """Map an error that arrived inside a stream (`{"error": {...}}` event or OpenRouter's error chunk)."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    raw_code = error.get("code")
    if isinstance(raw_code, int) and 400 <= raw_code < 600:
        status = raw_code
    else:
        status = _STATUS_BY_CODE.get(str(raw_code), 502)
    body = orjson.dumps({"error": error})
    return error_from_status(status, body, {}, provider=provider, secret=secret)


def _read_error(body: bytes) -> tuple[str, str | None, str | None]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip(), None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        message = parsed.get("message") if isinstance(parsed, dict) else None
        return (str(message) if message else ""), None, None
    code = error.get("code", error.get("type"))
    param = error.get("param")
    return (
        str(error.get("message") or "")[:_MAX_MESSAGE],
        None if code is None else str(code),
        None if param is None else str(param),
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
