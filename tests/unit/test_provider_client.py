"""The OpenAI-compatible provider client over an in-memory transport: answers, streams, error mapping and
timeouts, with no sockets; and a few status mappings through the real aiohttp transport (aioresponses)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp.abc import AbstractStreamWriter
from aioresponses import aioresponses

from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import ChatRequest, EmbeddingsRequest, JSONObject
from llmgw.domain.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgw.infrastructure.config.settings import ProviderKind, ProviderSettings
from llmgw.infrastructure.providers.aiohttp_transport import AiohttpTransport
from llmgw.infrastructure.providers.client import OpenAICompatibleProvider
from llmgw.infrastructure.providers.transport import ResponseTooLarge, TransportError
from tests.fakes.transport import Answer, MemoryTransport

KEY = "sk-test-SECRET-0123456789abcdef"
BASE_URL = "https://upstream.test/v1"
MODEL = ModelSpec(
    id="up/gpt",
    name="gpt",
    provider="up",
    upstream_model="gpt-upstream",
    capabilities=frozenset({Capability.CHAT, Capability.TOOLS}),
)
QUESTION = {"model": "up/gpt", "messages": [{"role": "user", "content": "hi"}]}
SETTINGS = ProviderSettings(
    name="up",
    kind=ProviderKind.OPENAI,
    base_url=BASE_URL,
    api_key=KEY,
    timeout=5.0,
    first_token_timeout=2.0,
    idle_timeout=2.0,
)
COMPLETION: JSONObject = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-upstream",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> JSONObject:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-upstream",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


USAGE_CHUNK = {**chunk(), "choices": [], "usage": COMPLETION["usage"]}


def provider(transport: MemoryTransport | AiohttpTransport, **overrides: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(replace(SETTINGS, **overrides), transport)


async def complete(transport: MemoryTransport, **overrides: Any) -> JSONObject:
    return (await provider(transport, **overrides).complete(MODEL, ChatRequest("up/gpt", QUESTION))).body


async def stream(transport: MemoryTransport | AiohttpTransport, **overrides: Any) -> list[JSONObject]:
    groups: AsyncIterator[list[JSONObject]] = provider(transport, **overrides).stream(
        MODEL, ChatRequest("up/gpt", QUESTION, stream=True)
    )
    return [chunk async for group in groups for chunk in group]


def openai_error(message: str, code: str | None = None) -> JSONObject:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


# Answers and streams


async def test_a_completion_is_posted_with_the_upstream_model_and_read_back() -> None:
    transport = MemoryTransport(Answer.json(COMPLETION))
    completion = await provider(transport).complete(MODEL, ChatRequest("up/gpt", QUESTION))

    assert completion.body == COMPLETION
    assert (completion.finish_reason, completion.upstream_id) == ("stop", "chatcmpl-1")
    assert completion.usage is not None
    assert completion.usage.total_tokens == 8
    [posted] = transport.posted
    assert posted.path == "/chat/completions"
    assert posted.json == {**QUESTION, "model": "gpt-upstream"}
    assert transport.responses[0].ended == "released"  # read whole: its connection may be reused


async def test_a_stream_yields_each_chunk_and_asks_for_usage() -> None:
    sent = [chunk("Hel"), chunk("lo"), chunk(finish="stop"), USAGE_CHUNK]
    transport = MemoryTransport(Answer.events(b": PROCESSING\n\n", *sent))

    assert await stream(transport) == sent
    body = transport.posted[0].json
    assert (body["model"], body["stream"], body["stream_options"]) == (
        "gpt-upstream",
        True,
        {"include_usage": True},
    )
    assert transport.responses[0].ended == "released"


async def test_events_split_anywhere_between_reads_are_put_back_together() -> None:
    wire = (
        b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in (chunk("a"), chunk("b")))
        + b"data: [DONE]\n\n"
    )
    pieces: list[bytes | float | TransportError] = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    transport = MemoryTransport(Answer(200, {"content-type": "text/event-stream"}, pieces))

    assert [c["choices"][0]["delta"]["content"] for c in await stream(transport)] == ["a", "b"]


async def test_chunks_that_arrive_together_are_handed_over_together_and_apart_when_apart() -> None:
    """Under load an upstream's writes reach us several in one read; a front can then send them at once."""

    def events(*texts: str) -> bytes:
        return b"".join(b"data: " + orjson.dumps(chunk(text)) + b"\n\n" for text in texts)

    pieces: list[bytes | float | TransportError] = [events("a", "b"), 0.01, events("c"), b"data: [DONE]\n\n"]
    transport = MemoryTransport(Answer(200, {"content-type": "text/event-stream"}, pieces))
    groups = provider(transport).stream(MODEL, ChatRequest("up/gpt", QUESTION, stream=True))

    texts = [[c["choices"][0]["delta"]["content"] for c in group] async for group in groups]

    assert texts == [["a", "b"], ["c"]]


async def test_a_stream_answered_with_one_json_completion_becomes_well_formed_chunks() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    message = {"role": "assistant", "content": "Checking.", "tool_calls": calls}
    answer = {
        **COMPLETION,
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }
    transport = MemoryTransport(Answer.json(answer))

    first, last = await stream(transport)

    assert first["object"] == "chat.completion.chunk"
    assert (first["id"], first["model"], first["system_fingerprint"]) == (
        "chatcmpl-1",
        "gpt-upstream",
        "fp_1",
    )
    [choice] = first["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["delta"]["content"] == "Checking."
    assert [(call["index"], call["id"]) for call in choice["delta"]["tool_calls"]] == [
        (0, "call_a"),
        (1, "call_b"),
    ]
    assert choice["delta"]["tool_calls"][0]["function"] == calls[0]["function"]
    assert (last["choices"], last["usage"]) == ([], COMPLETION["usage"])


async def test_a_stream_answered_with_a_json_error_body_raises_that_error() -> None:
    transport = MemoryTransport(Answer.json({"error": {"code": 429, "message": "slow down"}}))

    with pytest.raises(UpstreamRateLimited, match="slow down"):
        await stream(transport)


# Error mapping


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_an_upstream_refusal_is_rejected_with_its_own_status_and_message(
    status: int, streamed: bool
) -> None:
    transport = MemoryTransport(Answer.json(openai_error("model not found", "bad_model"), status=status))

    with pytest.raises(UpstreamRejected, match="model not found") as caught:
        await (stream(transport) if streamed else complete(transport))
    assert (caught.value.status, caught.value.code) == (status, "bad_model")


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_upstream_429_is_a_rate_limit_with_its_retry_after(streamed: bool) -> None:
    transport = MemoryTransport(
        Answer.json(openai_error("slow down"), status=429, headers={"Retry-After": "7"})
    )

    with pytest.raises(UpstreamRateLimited) as caught:
        await (stream(transport) if streamed else complete(transport))
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_unavailable_and_names_the_credentials_never_the_key(status: int) -> None:
    echoed = openai_error(f"Incorrect API key provided: {KEY}. You can find your API key at ...")
    transport = MemoryTransport(Answer.json(echoed, status=status))

    with pytest.raises(UpstreamUnavailable, match="rejected the gateway's credentials") as caught:
        await complete(transport)
    assert caught.value.status == status
    assert KEY not in str(caught.value)
    assert KEY[:12] not in caught.value.message


async def test_a_key_echoed_in_a_mid_stream_error_event_is_scrubbed() -> None:
    transport = MemoryTransport(
        Answer.events(chunk("a"), {"error": {"message": f"key {KEY} revoked", "code": 401}})
    )

    with pytest.raises(UpstreamUnavailable) as caught:
        await stream(transport)
    assert KEY not in caught.value.message
    assert "***" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_an_upstream_server_error_is_unavailable_with_its_status(status: int) -> None:
    transport = MemoryTransport(Answer.json(openai_error("overloaded"), status=status))

    with pytest.raises(UpstreamUnavailable, match="overloaded") as caught:
        await complete(transport)
    assert caught.value.status == status


async def test_an_answer_that_is_not_json_is_unavailable() -> None:
    transport = MemoryTransport(Answer(200, {"content-type": "text/html"}, [b"<html>gateway page</html>"]))

    with pytest.raises(UpstreamUnavailable, match="not JSON"):
        await complete(transport)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_transport_that_cannot_reach_the_upstream_is_unavailable(streamed: bool) -> None:
    transport = MemoryTransport(Answer(error=TransportError("cannot connect (Connection refused)")))

    with pytest.raises(UpstreamUnavailable, match=r"^up: cannot connect \(Connection refused\)\.$"):
        await (stream(transport) if streamed else complete(transport))


async def test_a_connection_broken_mid_stream_is_unavailable_and_the_answer_closed() -> None:
    transport = MemoryTransport(
        Answer.events(chunk("a"), TransportError("the upstream closed the connection"))
    )

    with pytest.raises(UpstreamUnavailable, match="closed the connection"):
        await stream(transport)
    assert transport.responses[0].ended == "closed"


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_answer_over_max_response_bytes_is_unavailable_naming_the_limit(streamed: bool) -> None:
    too_large = ResponseTooLarge(1024)
    answer = Answer.events(chunk("a"), too_large) if streamed else Answer(200, {}, [b'{"id":', too_large])
    transport = MemoryTransport(answer)

    with pytest.raises(UpstreamUnavailable, match=re.escape("larger than max_response_bytes (1024 bytes)")):
        await (stream(transport) if streamed else complete(transport))
    assert transport.responses[0].ended == "closed"


async def test_an_event_stream_line_longer_than_max_response_bytes_is_unavailable() -> None:
    transport = MemoryTransport(Answer.events(chunk("a"), b"data: " + b"x" * 600, b"x" * 600, done=False))

    with pytest.raises(UpstreamUnavailable, match="longer than 1000 bytes"):
        await stream(transport, max_response_bytes=1000)
    assert transport.responses[0].ended == "closed"


async def test_a_stream_that_ends_before_done_is_unavailable() -> None:
    transport = MemoryTransport(Answer.events(chunk("a"), chunk("b"), done=False))

    with pytest.raises(UpstreamUnavailable, match=r"ended before \[DONE\]"):
        await stream(transport)


# Timeouts


async def test_no_answer_within_the_first_token_timeout_is_a_timeout() -> None:
    transport = MemoryTransport(replace(Answer.events(chunk("a")), delay=10.0))

    with pytest.raises(UpstreamTimeout, match="no answer within the time allowed"):
        await stream(transport, first_token_timeout=0.05)


async def test_no_first_event_within_the_first_token_timeout_is_a_timeout() -> None:
    transport = MemoryTransport(Answer.events(10.0, chunk("a")))

    with pytest.raises(UpstreamTimeout, match="went silent"):
        await stream(transport, first_token_timeout=0.05)
    assert transport.responses[0].ended == "closed"


async def test_a_stream_silent_longer_than_the_idle_timeout_is_a_timeout() -> None:
    transport = MemoryTransport(Answer.events(chunk("a"), 0.02, chunk("b"), 10.0, chunk("c")))

    with pytest.raises(UpstreamTimeout, match="the stream went silent"):
        await stream(transport, idle_timeout=0.1)
    assert transport.responses[0].ended == "closed"


async def test_a_stream_that_keeps_talking_past_the_whole_timeout_is_a_timeout() -> None:
    steady = [step for i in range(40) for step in (chunk(str(i)), 0.01)]
    transport = MemoryTransport(Answer.events(*steady))

    with pytest.raises(UpstreamTimeout):
        await stream(transport, timeout=0.15, idle_timeout=1.0)
    assert transport.responses[0].ended == "closed"


async def test_a_completion_whose_body_trickles_past_the_timeout_is_a_timeout() -> None:
    body = orjson.dumps(COMPLETION)
    trickle: list[bytes | float | TransportError] = [step for b in body for step in (bytes([b]), 0.01)]
    transport = MemoryTransport(Answer(200, {"content-type": "application/json"}, trickle))

    with pytest.raises(UpstreamTimeout, match="no answer within the time allowed"):
        await complete(transport, timeout=0.15)
    assert transport.responses[0].ended == "closed"


async def test_a_completion_whose_headers_never_come_is_a_timeout() -> None:
    transport = MemoryTransport(replace(Answer.json(COMPLETION), delay=10.0))

    with pytest.raises(UpstreamTimeout):
        await complete(transport, timeout=0.05)


# The real aiohttp transport against aioresponses (status mapping only: it cannot split a body)


class MockedResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); its `response_class` option lets us hand it one. The stand-in only
    reports how much of the request was written, which is all a response built after the fact asks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", cast(AbstractStreamWriter, SimpleNamespace(output_size=0)))
        super().__init__(*args, **kwargs)


def aiohttp_transport() -> AiohttpTransport:
    return AiohttpTransport(
        BASE_URL,
        limit=4,
        connect_timeout=1,
        headers={"Authorization": f"Bearer {KEY}"},
        max_response_bytes=1 << 20,
        proxy="",
    )


async def test_the_aiohttp_transport_reads_a_json_completion_back() -> None:
    with aioresponses() as mocked:
        mocked.post(f"{BASE_URL}/chat/completions", payload=COMPLETION, response_class=MockedResponse)
        client = provider(aiohttp_transport())
        try:
            completion = await client.complete(MODEL, ChatRequest("up/gpt", QUESTION))
        finally:
            await client.close()
    assert completion.body == COMPLETION
    [(_, calls)] = mocked.requests.items()
    assert orjson.loads(calls[0].kwargs["data"]) == {**QUESTION, "model": "gpt-upstream"}


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [(503, UpstreamUnavailable, None), (429, UpstreamRateLimited, 3.0), (400, UpstreamRejected, None)],
)
async def test_the_aiohttp_transport_maps_an_upstream_error_status(
    status: int, error: type[UpstreamError], retry_after: float | None
) -> None:
    with aioresponses() as mocked:
        mocked.post(
            f"{BASE_URL}/chat/completions",
            status=status,
            payload=openai_error("nope"),
            headers={"Retry-After": "3"},
            response_class=MockedResponse,
        )
        client = provider(aiohttp_transport())
        try:
            with pytest.raises(error, match="nope") as caught:
                await client.complete(MODEL, ChatRequest("up/gpt", QUESTION))
        finally:
            await client.close()
    assert caught.value.status == status
    assert getattr(caught.value, "retry_after", None) == retry_after


@pytest.mark.parametrize("kind", [ProviderKind.DASHSCOPE, ProviderKind.OPENROUTER])
@pytest.mark.parametrize("call", ["complete", "stream", "embed"])
async def test_a_provider_of_a_kind_that_needs_a_key_and_has_none_answers_at_once_naming_what_to_set(
    kind: ProviderKind, call: str
) -> None:
    transport = MemoryTransport(Answer.json(COMPLETION))
    keyless = provider(transport, name="my-cloud", kind=kind, api_key="")

    async def use() -> None:
        if call == "complete":
            await keyless.complete(MODEL, ChatRequest("up/gpt", QUESTION))
        elif call == "stream":
            _ = [group async for group in keyless.stream(MODEL, ChatRequest("up/gpt", QUESTION, stream=True))]
        else:
            await keyless.embed(MODEL, EmbeddingsRequest("up/embed", {"model": "up/embed", "input": "x"}))

    with pytest.raises(UpstreamUnavailable) as raised:
        await use()

    assert raised.value.code == "missing_credentials"
    assert "MY_CLOUD_API_KEY" in raised.value.message
    assert "llm.providers.my-cloud.api_key" in raised.value.message
    assert transport.posted == []


async def test_an_openai_kind_provider_without_a_key_still_calls_its_upstream() -> None:
    """Local OpenAI-compatible servers (vLLM, Ollama) need no key."""
    transport = MemoryTransport(Answer.json(COMPLETION))

    assert (await complete(transport, api_key=""))["id"] == "chatcmpl-1"
    assert len(transport.posted) == 1
