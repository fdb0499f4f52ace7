"""CORS for browser clients: `http.cors.allow_origins` (none by default); preflights answered, the key and
request-id headers allowed, the gateway's own headers readable by the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

APP = "https://app.example.com"
CHAT = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def cors_gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    settings = settings_for(fakes)
    async with running_gateway(replace(settings, http=replace(settings.http, cors=(APP,)))) as running:
        yield running


async def preflight(gw: Running, origin: str) -> aiohttp.ClientResponse:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-api-key",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.options(f"{gw.rest_url}/v1/chat/completions", headers=headers) as response,
    ):
        await response.read()
        return response


async def test_a_preflight_from_an_allowed_origin_is_answered_with_the_key_headers_allowed(
    cors_gw: Running,
) -> None:
    response = await preflight(cors_gw, APP)
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


async def test_a_preflight_from_another_origin_is_refused(cors_gw: Running) -> None:
    response = await preflight(cors_gw, "https://evil.example")
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_an_allowed_origins_request_may_read_the_answer_and_the_gateways_headers(
    cors_gw: Running,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{cors_gw.rest_url}/v1/chat/completions", json=CHAT, headers={"Origin": APP}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == APP
        exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"x-generation-id", "x-request-id", "x-llmgw-attempts", "x-llmgw-provider"} <= exposed


async def test_without_configured_origins_no_cors_header_is_sent(gw: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT, headers={"Origin": APP}) as response,
    ):
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
    assert (await preflight(gw, APP)).status == 405
