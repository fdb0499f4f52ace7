"""The bytes of a REST chat stream are well-formed SSE, however a reader's buffers happen to split them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from llmgw.infrastructure.sse import SSEDecoder
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

TOOL_CALLS = 2
# Reasoning, then each call's head and its argument fragments; plus the usage chunk.
EXPECTED_CHUNKS = wire.REASONING_CHUNKS + TOOL_CALLS * (1 + wire.ARGUMENT_FRAGMENTS) + 1


class ReferenceParser:
    """A minimal incremental SSE reader written from the spec, independent of the gateway's decoder."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        lines = self._pending.splitlines(keepends=True)
        # A last line without its terminator (or a lone CR that a LF may follow) waits for more bytes.
        self._pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        events = []
        for line in lines:
            field, _, value = line.rstrip(b"\r\n").partition(b":")
            if not line.rstrip(b"\r\n"):
                if self._data:
                    events.append(b"\n".join(self._data))
                self._data = []
            elif field == b"data":
                self._data.append(value.removeprefix(b" "))
        return events


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def raw_stream(session: aiohttp.ClientSession, gw: Running, body: dict[str, Any]) -> bytes:
    async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        return await response.read()


@pytest.fixture
async def raw(gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession) -> bytes:
    """A whole streamed answer as sent on the wire: reasoning, parallel tool calls and usage."""
    fakes["dashscope"].script(Script(tool_calls=TOOL_CALLS, reasoning=True))
    body = {
        "model": "dashscope/qwen-turbo",
        "messages": [{"role": "user", "content": "weather in two cities?"}],
        "tools": [{"type": "function", "function": {"name": "fn", "parameters": {"type": "object"}}}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return await raw_stream(session, gw, body)


def test_every_event_is_one_data_line_of_json_and_the_last_is_done(raw: bytes) -> None:
    assert raw.endswith(b"\n\n")
    events = raw.removesuffix(b"\n\n").split(b"\n\n")

    assert events[-1] == b"data: [DONE]"
    assert len(events) == EXPECTED_CHUNKS + 1
    for event in events[:-1]:
        assert event.startswith(b"data: ")
        assert b"\n" not in event
        assert isinstance(json.loads(event.removeprefix(b"data: ")), dict)
    chunks = [json.loads(event.removeprefix(b"data: ")) for event in events[:-1]]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[:-1]]
    assert any(delta.get("reasoning_content") for delta in deltas)
    assert {call["index"] for delta in deltas for call in delta.get("tool_calls") or []} == {0, 1}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == wire.REASONING_CHUNKS


def test_the_reference_parser_and_the_gateway_decoder_agree_on_the_whole_stream(raw: bytes) -> None:
    decoder = SSEDecoder(1 << 20)
    whole = decoder.feed(raw) + decoder.close()

    assert whole == ReferenceParser().feed(raw)
    assert len(whole) == EXPECTED_CHUNKS + 1
    assert whole[-1] == b"[DONE]"


def test_every_split_of_the_stream_yields_the_same_events_to_both_parsers(raw: bytes) -> None:
    reference = ReferenceParser().feed(raw)

    for cut in range(len(raw) + 1):
        decoder = SSEDecoder(1 << 20)
        decoded = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.close()
        parser = ReferenceParser()
        parsed = parser.feed(raw[:cut]) + parser.feed(raw[cut:])
        assert decoded == reference, f"SSEDecoder differs when split at byte {cut}"
        assert parsed == reference, f"reference parser differs when split at byte {cut}"


@pytest.mark.parametrize(
    ("provider", "model"), [("local", "local/llama"), ("openrouter", "openrouter/openai/gpt-4o")]
)
async def test_nothing_reaches_the_client_before_the_first_upstream_chunk(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, provider: str, model: str
) -> None:
    # The upstream sends its headers (and, for OpenRouter, comment lines) at once, its first chunk later.
    delay = 0.3
    fakes[provider].script(Script(first_chunk_delay=delay, comments=2))
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}

    started = time.monotonic()
    async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response:
        headers_after = time.monotonic() - started
        first = await response.content.readuntil(b"\n\n")
        rest = await response.read()

    assert headers_after >= delay * 0.9
    assert response.status == 200
    assert first.startswith(b"data: {")
    assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["role"] == "assistant"
    assert rest.endswith(b"data: [DONE]\n\n")
