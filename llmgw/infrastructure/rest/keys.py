"""Typed aiohttp application state."""

from __future__ import annotations

from aiohttp import web

from llmgw.application.gateway import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)
