"""Proxies work: a provider whose traffic goes through a proxy (its `proxy` key, or HTTP(S)_PROXY from the
environment unless NO_PROXY names its host) uses the `aiohttp` transport, and its requests pass through a
real proxy on loopback; `proxy = ""` and NO_PROXY mean none."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import trustme

from llmgw.domain.chat import ChatRequest
from llmgw.infrastructure.config.settings import ProviderKind, ProviderSettings, TransportKind
from llmgw.infrastructure.providers.aiohttp_transport import AiohttpTransport
from llmgw.infrastructure.providers.client import OpenAICompatibleProvider, create_transport
from llmgw.infrastructure.providers.fast_transport import FastTransport
from tests.fakes import upstream_wire as wire
from tests.fakes.proxy import FakeProxy
from tests.fakes.upstream import FakeUpstream
from tests.harness import catalog, provider, running_gateway, settings_for

LLAMA = next(model for model in catalog() if model.id == "local/llama")
QUESTION = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("openai") as upstream:
        yield upstream


@pytest.fixture
async def proxy() -> AsyncIterator[FakeProxy]:
    async with FakeProxy() as running:
        yield running


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment with its proxy variables cleared; create_transport and aiohttp's
    `trust_env` both read os.environ, so a test sets its own through the returned monkeypatch."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def settings(fake: FakeUpstream, **overrides: Any) -> ProviderSettings:
    return provider("local", ProviderKind.OPENAI, fake, **overrides)


async def ask(settings: ProviderSettings) -> type[object]:
    """One chat completion through the transport create_transport chose; returns that transport's type."""
    transport = create_transport(settings)
    client = OpenAICompatibleProvider(settings, transport)
    try:
        completion = await client.complete(LLAMA, ChatRequest(model=LLAMA.id, body=QUESTION))
    finally:
        await client.close()
    assert completion.body["choices"][0]["message"]["content"] == wire.expected_content()
    return type(transport)


async def test_a_provider_proxy_key_sends_its_requests_through_that_proxy(
    fake: FakeUpstream, proxy: FakeProxy, env: pytest.MonkeyPatch
) -> None:
    assert await ask(settings(fake, proxy=proxy.url)) is AiohttpTransport
    assert proxy.forwarded == [f"POST {fake.base_url}/chat/completions"]
    assert len(fake.requests) == 1


async def test_http_proxy_from_the_environment_is_used_when_no_proxy_key_is_set(
    fake: FakeUpstream, proxy: FakeProxy, env: pytest.MonkeyPatch
) -> None:
    env.setenv("HTTP_PROXY", proxy.url)
    assert await ask(settings(fake)) is AiohttpTransport
    assert proxy.forwarded == [f"POST {fake.base_url}/chat/completions"]
    assert len(fake.requests) == 1


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
async def test_no_proxy_naming_the_upstream_host_sends_directly_on_the_fast_transport(
    fake: FakeUpstream,
    proxy: FakeProxy,
    env: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("NO_PROXY", no_proxy)
    assert await ask(settings(fake)) is FastTransport
    assert proxy.seen == []
    assert len(fake.requests) == 1


@pytest.mark.parametrize("transport", [None, TransportKind.AIOHTTP])
async def test_an_empty_proxy_key_means_no_proxy_whatever_the_environment_says(
    fake: FakeUpstream,
    proxy: FakeProxy,
    env: pytest.MonkeyPatch,
    transport: TransportKind | None,
) -> None:
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("HTTPS_PROXY", proxy.url)
    chosen = await ask(settings(fake, proxy="", transport=transport))
    assert chosen is (FastTransport if transport is None else AiohttpTransport)
    assert proxy.seen == []
    assert len(fake.requests) == 1


async def test_an_https_upstream_is_reached_through_a_connect_tunnel_kept_alive(proxy: FakeProxy) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    answered = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                answered += 1
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"tls":true}')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    transport = AiohttpTransport(
        f"https://127.0.0.1:{port}/v1",
        limit=4,
        connect_timeout=2,
        headers={},
        max_response_bytes=1 << 20,
        proxy=proxy.url,
        ssl_context=trusting,
    )
    try:
        for _ in range(2):
            response = await transport.post("/chat/completions", b"{}")
            assert (response.status, await response.read_all()) == (200, b'{"tls":true}')
            response.release()
    finally:
        await transport.close()
        server.close()
    assert proxy.tunnels == [f"127.0.0.1:{port}"]  # one tunnel, both requests inside it
    assert answered == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_the_gateway_reaches_a_provider_through_the_proxy_its_config_names(
    fake: FakeUpstream, proxy: FakeProxy, env: pytest.MonkeyPatch, stream: bool
) -> None:
    base = settings_for({"local": fake})
    config = replace(base, providers={"local": replace(base.providers["local"], proxy=proxy.url)})
    async with running_gateway(config) as gateway, aiohttp.ClientSession() as client:
        url = f"{gateway.rest_url}/v1/chat/completions"
        async with client.post(url, json={**QUESTION, "stream": stream}) as response:
            assert response.status == 200
            text = await response.text()
    if stream:
        events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(event) for event in events[:-1]]
        content = "".join(choice["delta"].get("content") or "" for c in chunks for choice in c["choices"])
    else:
        content = json.loads(text)["choices"][0]["message"]["content"]
    assert content == wire.expected_content()
    assert proxy.forwarded == [f"POST {fake.base_url}/chat/completions"]
    assert len(fake.requests) == 1
