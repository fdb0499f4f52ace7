"""Generation records: every chat and embeddings request is recorded right, and readable at once.

Each record is read back right after its response through all three lookups (`GET /v1/generation/{id}`,
OpenRouter's `GET /api/v1/generation?id=` and gRPC `GetGeneration`), which must agree with each other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import openai
import pytest
from grpclib import GRPCError, Status

from llmgw.domain.errors import NotFound
from llmgw.domain.generation import GenerationRecord
from llmgw.infrastructure.grpc.messages import v1
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import SECRETS, Running, running_gateway, settings_for

Json = dict[str, Any]
HI = [{"role": "user", "content": "hi"}]
REQUEST_ID = "records-req-0042"
USER = "user-7"
UPSTREAM_ID = "upstream-own-id-0001"
USAGE: Json = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 50},
}
# qwen-turbo: prompt 0.5, cached prompt 0.1, completion 1.5 USD per million tokens.
QWEN_COST = (600 * 0.5 + 400 * 0.1 + 200 * 1.5) / 1e6
GRPC_STATUS = {
    "completed": v1.GenerationStatus.COMPLETED,
    "error": v1.GenerationStatus.ERROR,
    "cancelled": v1.GenerationStatus.CANCELLED,
}


class Case(NamedTuple):
    """A chat model, what its fake reports as usage, and what the record must then say."""

    model: str
    provider: str
    upstream_model: str
    usage: Json | None
    tokens: tuple[int, int, int, int, int]  # prompt, completion, total, cached, reasoning
    cost: float | None


CASES = [
    Case("dashscope/qwen-turbo", "dashscope", "qwen-turbo", USAGE, (1000, 200, 1200, 400, 50), QWEN_COST),
    Case(
        "openrouter/openai/gpt-4o",
        "openrouter",
        "openai/gpt-4o",
        {**USAGE, "cost": wire.OPENROUTER_COST},
        (1000, 200, 1200, 400, 50),
        wire.OPENROUTER_COST,
    ),
    Case("openrouter/openai/gpt-4o", "openrouter", "openai/gpt-4o", None, (10, 3, 13, 0, 0), 0.00042),
    Case("local/no-price", "local", "no-price", USAGE, (1000, 200, 1200, 400, 50), None),
]
CASE_IDS = [
    "priced from the catalog",
    "upstream cost preferred over the catalog",
    "openrouter's own usage",
    "no price and no upstream cost",
]
QWEN = CASES[0]


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Json:
        body: Json = json.loads(self.text)
        return body

    @property
    def events(self) -> list[Json]:
        assert self.status == 200, self.text
        lines = [line.removeprefix("data: ") for line in self.text.split("\n") if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        return [json.loads(line) for line in lines[:-1]]

    @property
    def generation_id(self) -> str:
        """The answer's generation, named on every chat answer, errors included."""
        gen_id = self.headers.get("x-generation-id")
        assert gen_id is not None, f"no x-generation-id on a {self.status} answer: {self.text}"
        assert gen_id.startswith("gen-")
        return gen_id


class Lookup(NamedTuple):
    """One generation as the three lookups return it."""

    record: Json
    openrouter: Json
    grpc: v1.Generation


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def chat(
    session: aiohttp.ClientSession,
    gw: Running,
    model: str,
    *,
    stream: bool = False,
    include_usage: bool | None = None,
) -> Reply:
    body: Json = {"model": model, "messages": HI, "user": USER}
    if stream:
        body["stream"] = True
    if include_usage is not None:
        body["stream_options"] = {"include_usage": include_usage}
    headers = {"x-request-id": REQUEST_ID}
    async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body, headers=headers) as response:
        text = await response.text()
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, text)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Json]:
    async with session.get(url) as response:
        body: Json = await response.json()
        return response.status, body


async def lookup(session: aiohttp.ClientSession, gw: Running, gen_id: str) -> Lookup:
    """Read one generation all three ways, check they agree and that no upstream key shows."""
    status, ours = await get(session, f"{gw.rest_url}/v1/generation/{gen_id}")
    assert status == 200, ours
    status, theirs = await get(session, f"{gw.rest_url}/api/v1/generation?id={gen_id}")
    assert status == 200, theirs
    assert list(theirs) == ["data"]
    answer = await gw.grpc.get_generation(v1.GetGenerationRequest(id=gen_id))
    assert answer.generation is not None
    found = Lookup(ours["generation"], theirs["data"], answer.generation)
    assert_agree(found)
    exposed = json.dumps([found.record, found.openrouter]) + found.grpc.error_message
    for secret in SECRETS.values():
        assert secret not in exposed
    return found


def assert_agree(found: Lookup) -> None:
    r, o, g = found
    assert r["id"] == o["id"] == g.id
    assert r["request_id"] == o["request_id"] == g.request_id
    assert r["kind"] == g.kind
    assert r["model"] == o["model"] == g.model
    assert r["provider"] == o["provider_name"] == g.provider
    assert r["upstream_model"] == g.upstream_model
    assert r["upstream_id"] == g.upstream_id
    assert o["upstream_id"] == (r["upstream_id"] or None)
    assert r["streamed"] is o["streamed"] is g.streamed
    assert GRPC_STATUS[r["status"]] == g.status
    assert o["cancelled"] is (r["status"] == "cancelled")
    assert r["finish_reason"] == o["finish_reason"] == (g.finish_reason or None)
    assert r["prompt_tokens"] == o["tokens_prompt"] == g.prompt_tokens
    assert r["completion_tokens"] == o["tokens_completion"] == g.completion_tokens
    assert r["total_tokens"] == g.total_tokens
    assert r["cached_tokens"] == o["native_tokens_cached"] == g.cached_tokens
    assert r["reasoning_tokens"] == o["native_tokens_reasoning"] == g.reasoning_tokens
    assert r["cost_usd"] == o["total_cost"] == g.cost_usd
    assert r["latency_ms"] == g.latency_ms
    assert r["time_to_first_token_ms"] == g.time_to_first_token_ms
    assert (r["error_code"] or "") == g.error_code
    assert (r["error_message"] or "") == g.error_message
    assert r["user"] == o["external_user"] == (g.user or None)
    created = datetime.fromisoformat(r["created_at"])
    assert created == datetime.fromisoformat(o["created_at"])
    assert g.created_at is not None
    assert abs((g.created_at - created).total_seconds()) < 1e-3


def assert_recent(record: Json, since: float) -> None:
    created = datetime.fromisoformat(record["created_at"]).timestamp()
    assert since - 0.5 <= created <= time.time() + 0.5


def assert_timings(record: Json) -> None:
    latency, ttft = record["latency_ms"], record["time_to_first_token_ms"]
    assert latency is not None
    assert latency > 0
    assert ttft is not None
    assert 0 < ttft <= latency


def assert_completed_chat(record: Json, case: Case, *, streamed: bool) -> None:
    assert record["kind"] == "chat"
    assert record["status"] == "completed"
    assert record["streamed"] is streamed
    assert record["model"] == case.model
    assert record["provider"] == case.provider
    assert record["upstream_model"] == case.upstream_model
    assert record["finish_reason"] == "stop"
    tokens = (
        record["prompt_tokens"],
        record["completion_tokens"],
        record["total_tokens"],
        record["cached_tokens"],
        record["reasoning_tokens"],
    )
    assert tokens == case.tokens
    if case.cost is None:
        assert record["cost_usd"] is None
    else:
        assert record["cost_usd"] == pytest.approx(case.cost, rel=1e-12)
    assert record["error_code"] is None
    assert record["error_message"] is None
    assert_timings(record)


def script_for(case: Case, **fields: Any) -> Script:
    """The case's usage, and an upstream id we know, on every chunk or body."""
    return Script(usage=case.usage, extra_response_fields={"id": UPSTREAM_ID}, **fields)


async def settled(gw: Running, gen_id: str, within: float = 1.0) -> GenerationRecord:
    """The record once it exists: a cancelled stream finishes on its own after the client left."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await gw.gateway.get_generation(gen_id)
            except NotFound:
                await asyncio.sleep(0.01)


# REST chat


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_a_unary_chat_is_recorded_completely_right_after_its_response(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, case: Case
) -> None:
    fakes[case.provider].script(script_for(case))
    started = time.time()

    reply = await chat(session, gw, case.model)

    assert reply.status == 200, reply.text
    assert reply.json["id"] == reply.generation_id
    found = await lookup(session, gw, reply.generation_id)
    record = found.record
    assert_completed_chat(record, case, streamed=False)
    assert record["id"] == reply.generation_id
    assert record["request_id"] == REQUEST_ID
    assert record["user"] == USER
    assert record["upstream_id"] == UPSTREAM_ID
    assert_recent(record, started)


@pytest.mark.parametrize("include_usage", [True, False], ids=["with include_usage", "without include_usage"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_a_streamed_chat_is_recorded_with_its_usage_whether_or_not_the_client_asked(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    case: Case,
    include_usage: bool,
) -> None:
    fakes[case.provider].script(script_for(case))

    reply = await chat(session, gw, case.model, stream=True, include_usage=include_usage)

    assert {event["id"] for event in reply.events} == {reply.generation_id}
    record = (await lookup(session, gw, reply.generation_id)).record
    assert_completed_chat(record, case, streamed=True)
    assert record["request_id"] == REQUEST_ID
    assert record["user"] == USER
    assert record["upstream_id"] == UPSTREAM_ID


async def test_a_stream_the_client_leaves_is_recorded_as_cancelled(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["local"].script(Script(chunks=50, chunk_delay=0.05))
    body = {"model": "local/llama", "messages": HI, "stream": True, "user": USER}

    received = 0
    async with session.post(
        f"{gw.rest_url}/v1/chat/completions", json=body, headers={"x-request-id": REQUEST_ID}
    ) as response:
        gen_id = response.headers["x-generation-id"]
        async for line in response.content:
            if line.startswith(b"data: "):
                received += 1
                if received == 3:
                    break
        response.close()

    record = await settled(gw, gen_id)
    assert record.status.value == "cancelled"
    assert record.streamed is True
    # No usage chunk ever came: the tokens seen so far are the text deltas that were streamed (≥ the 3
    # the client read, < the 50 the upstream would have sent), and their cost is priced, not unknown.
    assert 3 <= record.completion_tokens < 50
    assert record.total_tokens == record.completion_tokens
    assert record.time_to_first_token_ms is not None
    async with asyncio.timeout(1.0):
        await fakes["local"].requests[0].disconnected.wait()
    found = await lookup(session, gw, gen_id)
    assert found.record["status"] == "cancelled"
    assert found.openrouter["cancelled"] is True
    assert found.grpc.status == v1.GenerationStatus.CANCELLED
    assert found.record["request_id"] == REQUEST_ID
    assert found.record["finish_reason"] is None


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "streamed"])
@pytest.mark.parametrize("statuses", [(429, 429), (500, 502)], ids=["429 to 429", "500 to 502"])
async def test_an_upstream_error_is_recorded_with_its_code_and_message_and_no_key(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    statuses: tuple[int, int],
    stream: bool,
) -> None:
    upstream_status, status = statuses
    echoed_key = {
        "message": f"Upstream trouble for key {SECRETS['local']}, try later.",
        "type": "server_error",
        "param": None,
        "code": "upstream_said_no",
    }
    fakes["local"].script(Script(status=upstream_status, error_body={"error": echoed_key}))

    reply = await chat(session, gw, "local/llama", stream=stream)

    assert reply.status == status, reply.text
    told = reply.json["error"]
    assert SECRETS["local"] not in reply.text
    record = (await lookup(session, gw, reply.generation_id)).record
    assert record["status"] == "error"
    assert record["streamed"] is stream
    assert record["error_code"]
    assert record["error_code"] == told["code"]
    assert record["error_message"]
    assert record["error_message"] == told["message"]
    assert SECRETS["local"] not in record["error_message"]
    assert record["request_id"] == REQUEST_ID
    assert record["user"] == USER
    assert (record["prompt_tokens"], record["completion_tokens"]) == (0, 0)
    assert record["cost_usd"] is None
    assert record["latency_ms"] is not None


async def test_an_upstream_that_never_answers_is_recorded_as_an_upstream_timeout(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    settings = settings_for(fakes, timeouts={"local": {"first_token_timeout": 0.3, "timeout": 1.0}})
    fakes["local"].script(Script(hang=True), Script(hang=True))
    async with running_gateway(settings) as gw:
        replies = await asyncio.gather(
            chat(session, gw, "local/llama", stream=True), chat(session, gw, "local/llama")
        )
        for reply, streamed in zip(replies, (True, False), strict=True):
            assert reply.status == 504, reply.text
            record = (await lookup(session, gw, reply.generation_id)).record
            assert record["status"] == "error"
            assert record["error_code"] == "upstream_timeout"
            assert record["streamed"] is streamed
            assert record["time_to_first_token_ms"] is None


async def test_a_stream_that_breaks_midway_is_recorded_as_an_error_with_what_the_client_was_told(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    broken = {
        "message": f"Upstream broke for key {SECRETS['local']}.",
        "type": "server_error",
        "param": None,
        "code": "upstream_broke",
    }
    fakes["local"].script(Script(chunks=5, fail_after_chunks=2, stream_error=broken))

    reply = await chat(session, gw, "local/llama", stream=True)

    told = reply.events[-1]["error"]
    assert SECRETS["local"] not in reply.text
    record = (await lookup(session, gw, reply.generation_id)).record
    assert record["status"] == "error"
    assert record["streamed"] is True
    assert record["error_code"] == told["code"]
    assert record["error_message"] == told["message"]
    assert SECRETS["local"] not in record["error_message"]
    assert record["time_to_first_token_ms"] is not None
    assert record["finish_reason"] is None


async def test_a_stream_that_goes_silent_midway_is_recorded_as_an_upstream_timeout(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    settings = settings_for(fakes, timeouts={"local": {"idle_timeout": 0.3, "timeout": 2.0}})
    fakes["local"].script(Script(chunks=5, hang_after_chunks=2))
    async with running_gateway(settings) as gw:
        reply = await chat(session, gw, "local/llama", stream=True)

        assert reply.events[-1]["error"]["type"] == "timeout_error"
        record = (await lookup(session, gw, reply.generation_id)).record
        assert record["status"] == "error"
        assert record["error_code"] == "upstream_timeout"
        assert record["streamed"] is True
        assert_timings(record)


# Embeddings


@pytest.mark.parametrize(
    ("model", "upstream_model", "texts"),
    [
        ("local/embed", "embed", ["one two", "three"]),
        ("dashscope/text-embedding-v3", "text-embedding-v3", [f"text {i} x" for i in range(25)]),
    ],
    ids=["one call", "split into three calls"],
)
async def test_embeddings_are_recorded_with_their_token_usage(
    gw: Running, session: aiohttp.ClientSession, model: str, upstream_model: str, texts: list[str]
) -> None:
    body = {"model": model, "input": texts, "user": USER}
    async with session.post(
        f"{gw.rest_url}/v1/embeddings", json=body, headers={"x-request-id": REQUEST_ID}
    ) as response:
        assert response.status == 200, await response.text()
        gen_id = response.headers["x-generation-id"]
        usage = (await response.json())["usage"]

    record = (await lookup(session, gw, gen_id)).record
    tokens = sum(len(text.split()) for text in texts)
    assert usage["prompt_tokens"] == tokens
    assert record["kind"] == "embeddings"
    assert record["status"] == "completed"
    assert record["streamed"] is False
    assert record["model"] == model
    assert record["upstream_model"] == upstream_model
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (
        tokens,
        0,
        tokens,
    )
    assert record["cost_usd"] is None
    assert record["request_id"] == REQUEST_ID
    assert record["user"] == USER
    assert record["latency_ms"] is not None
    assert record["latency_ms"] > 0


# gRPC


def grpc_chat(case: Case, **fields: Any) -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(
        model=case.model, messages=[v1.ChatMessage(role="user", content="hi")], user=USER, **fields
    )


@pytest.mark.parametrize("case", [QWEN, CASES[3]], ids=["priced", "unpriced"])
async def test_a_grpc_unary_chat_is_recorded_and_reads_the_same_on_both_fronts(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, case: Case
) -> None:
    fakes[case.provider].script(script_for(case))
    started = time.time()

    response = await gw.grpc.create_chat_completion(grpc_chat(case), metadata={"x-request-id": REQUEST_ID})

    assert response.id.startswith("gen-")
    found = await lookup(session, gw, response.id)
    assert_completed_chat(found.record, case, streamed=False)
    generation = found.grpc
    assert generation.status == v1.GenerationStatus.COMPLETED
    assert generation.request_id == REQUEST_ID
    assert generation.user == USER
    assert generation.upstream_id == UPSTREAM_ID
    if case.cost is None:
        assert generation.cost_usd is None
    else:
        assert generation.cost_usd == pytest.approx(case.cost, rel=1e-12)
    assert generation.created_at is not None
    assert generation.created_at.tzinfo is not None
    assert started - 0.5 <= generation.created_at.timestamp() <= time.time() + 0.5


async def test_a_grpc_streamed_chat_is_recorded_and_reads_the_same_on_both_fronts(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["dashscope"].script(script_for(QWEN))

    chunks = [
        chunk
        async for chunk in gw.grpc.create_chat_completion_stream(
            grpc_chat(QWEN), metadata={"x-request-id": REQUEST_ID}
        )
    ]

    (gen_id,) = {chunk.id for chunk in chunks}
    found = await lookup(session, gw, gen_id)
    assert_completed_chat(found.record, QWEN, streamed=True)
    assert found.grpc.status == v1.GenerationStatus.COMPLETED
    assert found.grpc.streamed is True
    assert found.grpc.request_id == REQUEST_ID
    assert found.grpc.cost_usd == pytest.approx(QWEN_COST, rel=1e-12)


# The OpenRouter-shaped lookup


async def test_the_openrouter_lookup_answers_in_openrouters_shape(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    fakes["dashscope"].script(script_for(QWEN))
    started = time.time()
    reply = await chat(session, gw, QWEN.model, stream=True)
    assert reply.status == 200, reply.text

    status, body = await get(session, f"{gw.rest_url}/api/v1/generation?id={reply.generation_id}")

    assert status == 200, body
    data = body["data"]
    assert data["id"] == reply.generation_id
    assert data["total_cost"] == pytest.approx(QWEN_COST, rel=1e-12)
    assert (data["tokens_prompt"], data["tokens_completion"]) == (1000, 200)
    assert (data["native_tokens_reasoning"], data["native_tokens_cached"]) == (50, 400)
    assert data["streamed"] is True
    assert data["cancelled"] is False
    assert data["provider_name"] == "dashscope"
    assert data["finish_reason"] == "stop"
    assert data["model"] == QWEN.model
    assert data["upstream_id"] == UPSTREAM_ID
    assert data["request_id"] == REQUEST_ID
    assert data["external_user"] == USER
    assert started - 0.5 <= datetime.fromisoformat(data["created_at"]).timestamp() <= time.time() + 0.5
    record = (await lookup(session, gw, reply.generation_id)).record
    # OpenRouter's latency is the wait for the first token; generation_time the rest, in whole ms.
    assert isinstance(data["latency"], int)
    assert isinstance(data["generation_time"], int)
    assert data["latency"] >= 0
    assert data["generation_time"] >= 0
    assert abs(data["latency"] - record["time_to_first_token_ms"]) <= 1
    assert abs(data["latency"] + data["generation_time"] - record["latency_ms"]) <= 1


# Unknown ids


async def test_an_unknown_generation_is_not_found_on_every_lookup(
    gw: Running, session: aiohttp.ClientSession
) -> None:
    for url in (
        f"{gw.rest_url}/v1/generation/gen-doesnotexist",
        f"{gw.rest_url}/api/v1/generation?id=gen-doesnotexist",
    ):
        status, body = await get(session, url)
        assert status == 404, body
        assert body["error"]["type"] == "not_found_error"
        assert body["error"]["message"]

    status, body = await get(session, f"{gw.rest_url}/api/v1/generation")
    assert status in (400, 404), body
    assert body["error"]["type"] in ("invalid_request_error", "not_found_error")

    for gen_id in ("gen-doesnotexist", ""):
        with pytest.raises(GRPCError) as caught:
            await gw.grpc.get_generation(v1.GetGenerationRequest(id=gen_id))
        assert caught.value.status == Status.NOT_FOUND


# Done when: the openai SDK's call, then OpenRouter's lookup at once


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_the_openrouter_lookup_right_after_an_sdk_call_has_its_tokens_cost_and_latency(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, stream: bool
) -> None:
    fakes["dashscope"].script(script_for(QWEN))
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        if stream:
            chunks = await client.chat.completions.create(
                model=QWEN.model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async with chunks:
                (gen_id,) = {chunk.id async for chunk in chunks}
        else:
            completion = await client.chat.completions.create(
                model=QWEN.model, messages=[{"role": "user", "content": "hi"}]
            )
            gen_id = completion.id

        status, body = await get(session, f"{gw.rest_url}/api/v1/generation?id={gen_id}")

    assert status == 200, body
    data = body["data"]
    assert (data["tokens_prompt"], data["tokens_completion"]) == (1000, 200)
    assert data["total_cost"] == pytest.approx(QWEN_COST, rel=1e-12)
    assert data["latency"] is not None
    assert data["latency"] >= 0
    assert data["generation_time"] is not None
    assert data["streamed"] is stream
    record = (await lookup(session, gw, gen_id)).record
    assert record["latency_ms"] > 0


# SQLite


async def test_records_in_sqlite_read_the_same_before_and_after_the_flush_and_a_restart(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    fakes["dashscope"].script(script_for(QWEN), script_for(QWEN))
    async with running_gateway(settings_for(fakes, storage_url=url)) as gw:
        flushed = (await chat(session, gw, QWEN.model)).generation_id
        before = await lookup(session, gw, flushed)
        assert_completed_chat(before.record, QWEN, streamed=False)

        assert await gw.gateway.recorder.flush()
        assert gw.gateway.recorder.pending == 0
        assert await lookup(session, gw, flushed) == before

        # Left for the writer or the shutdown flush.
        unflushed = (await chat(session, gw, QWEN.model, stream=True)).generation_id
        streamed = await lookup(session, gw, unflushed)
        assert_completed_chat(streamed.record, QWEN, streamed=True)

    async with running_gateway(settings_for(fakes, storage_url=url)) as gw:
        assert await lookup(session, gw, flushed) == before
        assert await lookup(session, gw, unflushed) == streamed
