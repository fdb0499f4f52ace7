"""Typed aiohttp application state."""

from __future__ import annotations

from aiohttp import web

from llmgw.application.gateway import Gateway
from llmgw.domain.keys import ApiKey

GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)
#: The caller's key, once the edge checked it (None: auth is off, or a route open to all).
CALLER: web.RequestKey[ApiKey | None] = web.RequestKey("caller")
