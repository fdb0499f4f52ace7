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
    message, code, param = _read_error(scrub_key(body, secret) if secret else body)
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


# How upstreams mask a key they echo: OpenAI's `sk-proj-****...wxyz`, `sk-secret****XYZ`, `sk-ab…yz`.
_MASK = re.compile(rb"(\*{3,}|\.{3,}|\xe2\x80\xa6)")
_KEY_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
# A run of key characters long enough that, found inside the key, it is a piece of it.
_KEY_PIECE = re.compile(rb"[A-Za-z0-9_\-]{8,}")


def scrub_key(body: bytes, secret: str) -> bytes:
    """`body` without the key or any recognisable piece of it: the key itself, a masked echo of it whose
    visible start or end is the key's, and any run of 8 or more of its characters. Linear in the body's
    length (no pattern here backtracks), since an upstream's error body can be anything."""
    key = secret.encode()
    parts = _MASK.split(body.replace(key, b"***"))
    # parts alternate: text, mask, text, ...; a mask's neighbours end and start with what it hides.
    for index in range(1, len(parts), 2):
        before, after = parts[index - 1], parts[index + 1]
        head = before[len(before.rstrip(_KEY_CHARS)) :]
        tail = after[: len(after) - len(after.lstrip(_KEY_CHARS))]
        if _is_key_end(head, key, start=True) or _is_key_end(tail, key, start=False):
            parts[index - 1] = before[: len(before) - len(head)]
            parts[index] = b"***"
            parts[index + 1] = after[len(tail) :]
    body = b"".join(parts)
    return _KEY_PIECE.sub(lambda match: b"***" if match.group(0) in key else match.group(0), body)


def _is_key_end(visible: bytes, key: bytes, *, start: bool) -> bool:
    """Whether the characters shown beside a mask are the key's own start (or end), or a piece of it."""
    if len(visible) >= 3 and (key.startswith(visible) if start else key.endswith(visible)):
        return True
    return len(visible) >= 6 and visible in key


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
