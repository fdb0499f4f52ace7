"""Provider timeouts fire when an upstream stalls, and a client that leaves cancels the upstream request."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, NamedTuple

import aiohttp
import pytest

from llmgw.domain.generation import GenerationStatus
from tests.fakes import upstream_wire as wire
from tests.fakes.ports import FakeStore
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, running_gateway, settings_for

Json = dict[str, Any]
HI = [{"role": "user", "content": "hi"}]
MODELS = {
    "local": "local/llama",
    "dashscope": "dashscope/qwen-turbo",
    "openrouter": "openrouter/openai/gpt-4o",
}
# Room for a loaded machine; every bound stays far below the time a test takes when the timeout never fires.
SLACK = 0.7


class Answer(NamedTuple):
    status: int
    content_type: str
    text: str
    elapsed: float

    @property
    def error(self) -> Json:
        error: Json = json.loads(self.text)["error"]
        return error

    def events(self) -> list[Json]:
        """The JSON events of an SSE answer, after checking it ends with [DONE]."""
        assert self.status == 200, self.text
        assert self.content_type == "text/event-stream"
        payloads = [
            line.removeprefix("data: ") for line in self.text.split("\n") if line.startswith("data: ")
        ]
        assert payloads[-1] == "[DONE]"
        return [json.loads(payload) for payload in payloads[:-1]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@asynccontextmanager
async def gateway_with(
    fakes: dict[str, FakeUpstream], provider: str, **timeouts: float
) -> AsyncIterator[Running]:
    async with running_gateway(settings_for(fakes, timeouts={provider: timeouts})) as gw:
        yield gw


async def post(session: aiohttp.ClientSession, gw: Running, body: Json) -> Answer:
    started = time.monotonic()
    async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response:
        text = await response.text()
        return Answer(response.status, response.content_type, text, time.monotonic() - started)


def chat(provider: str, **fields: Any) -> Json:
    return {"model": MODELS[provider], "messages": HI, **fields}


@pytest.fixture
def store() -> FakeStore:
    """The records as the gateway writes them: requests cancelled before their headers never tell us
    their id."""
    return FakeStore()


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream], store: FakeStore) -> AsyncIterator[Running]:
    async with running_gateway(settings_for(fakes), store=store) as running:
        yield running


async def upstream_disconnected(fake: FakeUpstream) -> None:
    """The upstream saw its connection closed within one second."""
    (request,) = await asyncio.wait_for(fake.wait_for_requests(1), 1.0)
    await asyncio.wait_for(request.disconnected.wait(), 1.0)
    assert not request.finished.is_set()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_stream_whose_upstream_never_answers_is_a_504_before_the_stream(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, provider: str
) -> None:
    fakes[provider].script(Script(hang=True))

    async with gateway_with(fakes, provider, first_token_timeout=0.3) as gw:
        answer = await post(session, gw, chat(provider, stream=True))

    assert answer.status == 504
    assert answer.content_type == "application/json"
    assert answer.error["type"] == "timeout_error"
    assert 0.3 <= answer.elapsed < 0.3 + SLACK


@pytest.mark.parametrize("provider", ["local", "dashscope"])
async def test_a_stream_whose_upstream_sends_headers_but_no_chunk_is_a_504_before_the_stream(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, provider: str
) -> None:
    fakes[provider].script(Script(first_chunk_delay=0.3 + 2 * SLACK))

    async with gateway_with(fakes, provider, first_token_timeout=0.3) as gw:
        answer = await post(session, gw, chat(provider, stream=True))

    assert answer.status == 504, answer.text
    assert answer.content_type == "application/json"
    assert answer.error["type"] == "timeout_error"
    assert answer.elapsed < 0.3 + SLACK


async def test_openrouter_processing_comments_keep_a_slow_stream_alive(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    # first_token_timeout bounds the wait for the first upstream *byte* (issue #3): OpenRouter's
    # `: OPENROUTER PROCESSING` comments prove the upstream is alive, and the total `timeout` still bounds it.
    fakes["openrouter"].script(Script(comments=2, first_chunk_delay=0.3 + 2 * SLACK))

    async with gateway_with(fakes, "openrouter", first_token_timeout=0.3, idle_timeout=5.0) as gw:
        answer = await post(session, gw, chat("openrouter", stream=True))

    assert answer.status == 200, answer.text
    assert answer.text.endswith("data: [DONE]\n\n")
    assert '"error"' not in answer.text


async def test_a_non_stream_request_whose_upstream_never_answers_is_a_504_at_the_request_timeout(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    # A non-streamed answer has no first chunk: the whole request is bounded by `timeout`.
    fakes["local"].script(Script(hang=True))

    async with gateway_with(fakes, "local", timeout=0.5) as gw:
        answer = await post(session, gw, chat("local"))

    assert answer.status == 504
    assert answer.error["type"] == "timeout_error"
    assert 0.5 <= answer.elapsed < 0.5 + SLACK


async def test_a_non_stream_answer_cut_off_halfway_times_out_at_the_request_timeout(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["local"].script(Script(hang_after_chunks=1))

    async with gateway_with(fakes, "local", timeout=0.5) as gw:
        answer = await post(session, gw, chat("local"))

    assert answer.status == 504
    assert answer.error["type"] == "timeout_error"
    assert answer.elapsed < 0.5 + SLACK


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_stream_that_goes_silent_gets_an_idle_timeout_error_event_then_done(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, provider: str
) -> None:
    fakes[provider].script(Script(hang_after_chunks=1))

    async with gateway_with(fakes, provider, idle_timeout=0.3) as gw:
        answer = await post(session, gw, chat(provider, stream=True))

    first, *rest = answer.events()
    assert first["choices"][0]["delta"]["content"] == wire.content_token(0)
    assert len(rest) == 1
    assert rest[0]["error"]["type"] == "timeout_error"
    assert set(rest[0]["error"]) == {"message", "type", "param", "code"}
    assert answer.elapsed < 0.3 + SLACK


async def test_the_total_timeout_ends_a_slow_but_steady_stream_with_an_error_event(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    # 20 chunks 0.2 s apart would take 4 s; no gap reaches the idle timeout.
    fakes["local"].script(Script(chunks=20, chunk_delay=0.2))

    async with gateway_with(fakes, "local", timeout=1.0, idle_timeout=0.5) as gw:
        answer = await post(session, gw, chat("local", stream=True))

    *chunks, last = answer.events()
    assert 3 <= len(chunks) < 20
    assert all(chunk["choices"][0]["delta"]["content"] for chunk in chunks)
    assert last["error"]["type"] == "timeout_error"
    assert 1.0 <= answer.elapsed < 1.0 + SLACK


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection attempt hangs in SYN_SENT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel accepts connections beyond a full backlog")
        finally:
            probe.close()
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_that_does_not_accept_the_connection_times_out_at_connect_timeout(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, unanswered_port: int, stream: bool
) -> None:
    settings = settings_for(fakes, timeouts={"local": {"connect_timeout": 0.3}})
    unreachable = replace(settings.providers["local"], base_url=f"http://127.0.0.1:{unanswered_port}/v1")
    settings = replace(settings, providers={**settings.providers, "local": unreachable})

    async with running_gateway(settings) as gw:
        answer = await post(session, gw, chat("local", stream=stream))

    assert answer.status == 504
    assert answer.error["type"] == "timeout_error"
    assert 0.3 <= answer.elapsed < 0.3 + SLACK


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_client_that_leaves_mid_stream_cancels_the_upstream_and_the_record_says_cancelled(
    *,
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    store: FakeStore,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    fakes[provider].script(Script(chunks=50, chunk_delay=0.1))

    url = f"{gw.rest_url}/v1/chat/completions"
    async with session.post(url, json=chat(provider, stream=True)) as response:
        generation_id = response.headers["x-generation-id"]
        first = await response.content.readuntil(b"\n\n")
        response.close()  # hang up: the connection is dropped, not returned to the pool

    assert first.startswith(b"data: {")
    await upstream_disconnected(fakes[provider])
    (record,) = await store.wait_for(1)
    assert record.id == generation_id
    assert (await gw.gateway.get_generation(generation_id)).status is GenerationStatus.CANCELLED
    assert record.streamed
    assert errors_logged(caplog) == []


async def test_a_client_that_gives_up_before_the_first_chunk_cancels_the_upstream(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    store: FakeStore,
) -> None:
    fakes["local"].script(Script(first_chunk_delay=5.0))

    with pytest.raises(TimeoutError):
        await session.post(
            f"{gw.rest_url}/v1/chat/completions",
            json=chat("local", stream=True),
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    await upstream_disconnected(fakes["local"])
    (record,) = await store.wait_for(1)

    assert record.status is GenerationStatus.CANCELLED
    assert (await gw.gateway.get_generation(record.id)).status is GenerationStatus.CANCELLED


@pytest.mark.parametrize("script", [Script(hang=True), Script(delay=5.0)], ids=["hang", "slow"])
async def test_a_client_that_gives_up_on_a_non_stream_request_cancels_the_upstream(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    store: FakeStore,
    script: Script,
) -> None:
    fakes["local"].script(script)

    with pytest.raises(TimeoutError):
        await session.post(
            f"{gw.rest_url}/v1/chat/completions",
            json=chat("local"),
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    await upstream_disconnected(fakes["local"])
    (record,) = await store.wait_for(1)

    assert record.status is GenerationStatus.CANCELLED
    assert not record.streamed
    assert (await gw.gateway.get_generation(record.id)).status is GenerationStatus.CANCELLED
