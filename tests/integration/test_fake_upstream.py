"""The fake upstream speaks each provider's wire shapes and fails exactly as scripted."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script

CHAT = {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
WITH_USAGE = {**STREAM, "stream_options": {"include_usage": True}}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def sse(response: aiohttp.ClientResponse) -> tuple[list[str], list[str]]:
    """The comment lines and the data payloads of a whole SSE body."""
    comments, data = [], []
    for line in (await response.read()).decode().splitlines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
    return comments, data


async def stream_chunks(
    session: aiohttp.ClientSession, fake: FakeUpstream, body: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    async with session.post(f"{fake.base_url}/chat/completions", json=body) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        comments, data = await sse(response)
    assert data[-1] == "[DONE]"
    return comments, [json.loads(item) for item in data[:-1]]


async def test_a_stream_shares_one_id_starts_with_the_role_and_ends_with_finish_reason(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("openai") as fake:
        comments, chunks = await stream_chunks(session, fake, STREAM)
    assert comments == []
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["model"] == "m-1"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == wire.expected_content(3)
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("kind", ["openai", "dashscope"])
async def test_include_usage_adds_one_usage_chunk_after_chunks_with_null_usage(
    session: aiohttp.ClientSession, kind: str
) -> None:
    async with FakeUpstream(kind) as fake:
        _, chunks = await stream_chunks(session, fake, WITH_USAGE)
    *answer, last = chunks
    assert all(c["usage"] is None for c in answer)
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 3
    assert last["usage"]["total_tokens"] == 13


async def test_dashscope_chunks_carry_null_usage_even_without_include_usage(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("dashscope") as fake:
        fake.script(Script(reasoning=True))
        _, chunks = await stream_chunks(session, fake, STREAM)
    assert all(c["usage"] is None and c["choices"] for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d["reasoning_content"] or "" for d in deltas) == wire.expected_reasoning()
    assert deltas[0] == {"role": "assistant", "reasoning_content": "think0 ", "content": None}
    assert deltas[-1] == {"content": "tok2 ", "reasoning_content": None}


async def test_openrouter_stream_opens_with_a_comment_and_always_ends_with_usage(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("openrouter") as fake:
        comments, chunks = await stream_chunks(session, fake, STREAM)
    assert comments == [": OPENROUTER PROCESSING"]
    assert chunks[0]["id"].startswith("gen-")
    assert chunks[-2]["choices"][0]["native_finish_reason"] == "stop"
    assert chunks[-1]["usage"]["cost"] == wire.OPENROUTER_COST
    assert chunks[-1]["usage"]["is_byok"] is False


async def test_a_non_stream_answer_concatenates_the_stream_tokens_and_passes_extras(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("openai") as fake:
        fake.script(Script(chunks=5, extra_response_fields={"system_fingerprint": "fp_1"}))
        async with session.post(f"{fake.base_url}/chat/completions", json=CHAT) as response:
            body = await response.json()
        assert fake.requests[0].json == CHAT
        await asyncio.wait_for(fake.requests[0].finished.wait(), 1)
    assert body["object"] == "chat.completion"
    assert body["system_fingerprint"] == "fp_1"
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": wire.expected_content(5),
        "refusal": None,
        "annotations": [],
    }
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


async def test_parallel_tool_call_fragments_interleave_and_merge_back_by_index(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("openai") as fake:
        fake.script(Script(tool_calls=2))
        _, chunks = await stream_chunks(session, fake, STREAM)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks]
    fragment_indexes = [call["index"] for call in calls if "id" not in call]
    assert fragment_indexes[:4] == [0, 1, 0, 1]
    merged: dict[int, str] = {}
    for call in calls:
        merged[call["index"]] = merged.get(call["index"], "") + call["function"]["arguments"]
    assert merged == {0: wire.tool_arguments(0), 1: wire.tool_arguments(1)}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("kind", "expected_error"),
    [
        ("openai", {"type": "requests", "code": "rate_limit_exceeded", "param": None}),
        ("dashscope", {"type": "invalid_request_error", "code": "limit_requests", "param": None}),
        ("openrouter", {"code": 429}),
    ],
)
async def test_a_scripted_error_uses_the_kind_error_shape(
    session: aiohttp.ClientSession, kind: str, expected_error: dict[str, Any]
) -> None:
    async with FakeUpstream(kind) as fake:
        fake.script(Script(status=429, headers={"Retry-After": "2"}))
        async with session.post(f"{fake.base_url}/chat/completions", json=STREAM) as response:
            body = await response.json()
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert body["error"].items() >= expected_error.items()
    assert body["error"]["message"]
    assert ("request_id" in body) == (kind == "dashscope")


@pytest.mark.parametrize("kind", ["openai", "openrouter"])
async def test_a_mid_stream_failure_sends_an_error_event_and_no_done(
    session: aiohttp.ClientSession, kind: str
) -> None:
    async with FakeUpstream(kind) as fake:
        fake.script(Script(fail_after_chunks=2))
        async with session.post(f"{fake.base_url}/chat/completions", json=STREAM) as response:
            _, data = await sse(response)
    events = [json.loads(item) for item in data]
    assert len(events) == 3
    assert "error" not in events[1]
    if kind == "openrouter":
        assert events[2]["error"]["code"] == 502
        assert events[2]["choices"][0]["finish_reason"] == "error"
    else:
        assert list(events[2]) == ["error"]


async def test_a_reset_mid_stream_breaks_the_client_read(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream("openai") as fake:
        fake.script(Script(reset_after_chunks=1))
        async with session.post(f"{fake.base_url}/chat/completions", json=STREAM) as response:
            first = await response.content.readuntil(b"\n\n")
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["content"] == "tok0 "


async def test_a_client_giving_up_on_a_hung_request_is_seen_as_disconnected(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("openai") as fake:
        fake.script(Script(hang=True))
        with pytest.raises(TimeoutError):
            await session.post(
                f"{fake.base_url}/chat/completions", json=CHAT, timeout=aiohttp.ClientTimeout(0.2)
            )
        await asyncio.wait_for(fake.requests[0].disconnected.wait(), 2)
        assert not fake.requests[0].finished.is_set()


async def test_a_client_leaving_mid_stream_is_seen_as_disconnected(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream("dashscope") as fake:
        fake.script(Script(chunks=100, chunk_delay=0.02))
        async with session.post(f"{fake.base_url}/chat/completions", json=STREAM) as response:
            await response.content.readuntil(b"\n\n")
            response.close()
        await asyncio.wait_for(fake.requests[0].disconnected.wait(), 2)


async def test_dashscope_rejects_more_than_ten_embedding_inputs_and_base64(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("dashscope") as fake:
        url = f"{fake.base_url}/embeddings"
        async with session.post(url, json={"model": "text-embedding-v4", "input": ["w"] * 11}) as too_many:
            body = await too_many.json()
        base64_body = {"model": "text-embedding-v4", "input": "w", "encoding_format": "base64"}
        async with session.post(url, json=base64_body) as base64_response:
            assert base64_response.status == 400
        async with session.post(url, json={"model": "text-embedding-v4", "input": ["w"] * 10}) as ok:
            assert len((await ok.json())["data"]) == 10
    assert too_many.status == 400
    assert body["error"]["code"] == "invalid_parameter_error"
    assert body["request_id"]


async def test_embeddings_decode_to_the_documented_vectors_in_base64_and_for_token_arrays(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream("openai") as fake:
        url = f"{fake.base_url}/embeddings"
        body = {"model": "e-1", "input": ["a b", "c"], "dimensions": 4, "encoding_format": "base64"}
        async with session.post(url, json=body) as response:
            answer = await response.json()
        async with session.post(url, json={"model": "e-1", "input": [[1, 2, 3]]}) as response:
            tokens = await response.json()
        vectors = [list(struct.unpack("<4f", base64.b64decode(d["embedding"]))) for d in answer["data"]]
        assert vectors == [fake.embedding_for("a b", 4), fake.embedding_for("c", 4)]
        assert tokens["data"][0]["embedding"] == fake.embedding_for("[1, 2, 3]", 8)
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert tokens["model"] == "e-1"


async def test_a_wrong_api_key_is_refused_with_401(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream("openrouter", api_key="sk-right") as fake:
        headers = {"Authorization": "Bearer sk-wrong"}
        async with session.post(f"{fake.base_url}/chat/completions", json=CHAT, headers=headers) as response:
            body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == 401


async def test_a_malformed_stream_sends_a_chunk_that_is_not_json(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream("openai") as fake:
        fake.script(Script(malformed=True))
        async with session.post(f"{fake.base_url}/chat/completions", json=STREAM) as response:
            _, data = await sse(response)
    assert data == ["{not json", "[DONE]"]
