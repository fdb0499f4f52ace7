"""Where a client puts its key: HTTP headers on REST, metadata on gRPC (keys lower-case there)."""

from __future__ import annotations

from collections.abc import Mapping


def credential(headers: Mapping[str, object]) -> str | None:
    """The key from `authorization: Bearer <key>` (the openai SDKs) or `x-api-key: <key>` (Anthropic's);
    `headers` looks names up case-insensitively (aiohttp) or has them lower-case (grpclib)."""
    authorization = headers.get("authorization")
    if isinstance(authorization, str):
        kind, _, value = authorization.partition(" ")
        return value.strip() if kind.lower() == "bearer" else None
    key = headers.get("x-api-key")
    return key if isinstance(key, str) else None
