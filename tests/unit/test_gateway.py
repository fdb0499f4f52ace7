"""The use cases in-process, over fakes of their ports: what each request answers, and the generation
record every outcome leaves (completed, error, cancelled), or does not leave (a request never routed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmgw.application.gateway import ChatStream, Gateway, RequestContext
from llmgw.application.recording import GenerationRecorder
from llmgw.application.retries import RetryPolicy
from llmgw.application.routing import Router
from llmgw.bootstrap import build_gateway
from llmgw.domain.catalog import Capability, ModelSpec, Pricing
from llmgw.domain.chat import ChatRequest, EmbeddingsRequest, JSONObject, parse_chat_request
from llmgw.domain.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgw.domain.generation import GenerationKind, GenerationStatus
from llmgw.infrastructure.config.settings import NO_AUTH, Settings
from tests.fakes.ports import (
    UPSTREAM_ID,
    FakeProvider,
    FakeStore,
    StreamScript,
    chat_answer,
    chunk,
    embeddings_answer,
    text_stream,
    usage_json,
)

PRICED = "fake/priced"  # chat, tools, vision; priced
PLAIN = "fake/plain"  # chat only; no price
EMBED = "fake/embed"
ALIAS = "smart"  # a catalog alias served by the other provider
PRICING = Pricing(prompt=2.0, completion=10.0, cached_prompt=0.5)
HI = [{"role": "user", "content": "hi"}]


def spec(
    model_id: str, provider: str, upstream: str, *caps: Capability, pricing: Pricing | None = None
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        name=model_id,
        provider=provider,
        upstream_model=upstream,
        capabilities=frozenset(caps),
        pricing=pricing,
        owned_by=provider,
    )


CATALOG = (
    spec(PRICED, "fake", "priced-v1", Capability.CHAT, Capability.TOOLS, Capability.VISION, pricing=PRICING),
    spec(PLAIN, "fake", "plain-v1", Capability.CHAT),
    spec(EMBED, "fake", "embed-v1", Capability.EMBEDDINGS, pricing=Pricing(prompt=0.1, completion=0.0)),
    spec(ALIAS, "other", "big-model-2", Capability.CHAT),
)
# One attempt per request: each test scripts one answer (test_failover: retries and fallbacks).
SETTINGS = Settings(providers={}, models=CATALOG, retry=RetryPolicy(max_attempts=1), auth=NO_AUTH)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider("fake")


@pytest.fixture
def other() -> FakeProvider:
    return FakeProvider("other", has_credentials=False)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
async def gateway(provider: FakeProvider, other: FakeProvider, store: FakeStore) -> AsyncIterator[Gateway]:
    async with build_gateway(SETTINGS, store=store, providers={"fake": provider, "other": other}) as gateway:
        yield gateway
        # A store a test took down would have the stop retry for its whole grace period.
        store.down = False


def ctx() -> RequestContext:
    return RequestContext(request_id="req-42")


def chat(model: str = PRICED, *, stream: bool = False, **fields: Any) -> ChatRequest:
    return parse_chat_request({"model": model, "messages": HI, **fields}, stream=stream)


async def drain(stream: ChatStream) -> list[JSONObject]:
    return [part async for group in stream for part in group]


async def next_chunk(stream: ChatStream) -> JSONObject:
    """The next chunk: the fake provider hands each over alone, as an upstream writing one per write."""
    (chunk,) = await anext(stream)
    return chunk


async def no_records(gateway: Gateway, store: FakeStore) -> bool:
    """Nothing waits to be written and nothing was: the recorder never saw a record."""
    await gateway.recorder.flush()
    return gateway.recorder.pending == 0 and store.written == []


# Models


async def test_models_are_listed_in_catalog_order_and_found_by_id(gateway: Gateway) -> None:
    assert [model.id for model in gateway.list_models()] == [PRICED, PLAIN, EMBED, ALIAS]
    assert gateway.get_model(ALIAS).upstream_model == "big-model-2"


@pytest.mark.parametrize("model_id", ["fake/unknown", "fake", ""])
async def test_a_model_outside_the_catalog_is_not_found(gateway: Gateway, model_id: str) -> None:
    with pytest.raises(NotFound) as raised:
        gateway.get_model(model_id)

    assert (raised.value.code, raised.value.param) == ("model_not_found", "model")


# Chat, one piece


async def test_a_completed_chat_is_recorded_with_tokens_cost_from_pricing_upstream_id_and_timings(
    gateway: Gateway, provider: FakeProvider
) -> None:
    usage = usage_json(1000, 200, prompt_tokens_details={"cached_tokens": 400})
    provider.will_answer(chat_answer(usage=usage, finish_reason="length"), delay=0.02)
    started = time.time()

    result = await gateway.create_chat_completion(chat(user="alice"), ctx())
    record = await gateway.get_generation(result.body["id"])

    assert record.status is GenerationStatus.COMPLETED
    assert (record.kind, record.streamed) == (GenerationKind.CHAT, False)
    assert (record.model, record.provider, record.upstream_model) == (PRICED, "fake", "priced-v1")
    assert (record.request_id, record.user) == ("req-42", "alice")
    assert (record.upstream_id, record.finish_reason) == (UPSTREAM_ID, "length")
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (1000, 200, 1200)
    assert record.cached_tokens == 400
    # 600 prompt tokens at $2/M, 400 cached at $0.5/M, 200 completion at $10/M.
    assert record.cost_usd == pytest.approx((600 * 2.0 + 400 * 0.5 + 200 * 10.0) / 1e6)
    assert record.time_to_first_token_ms is not None
    assert record.latency_ms is not None
    assert 19.0 <= record.time_to_first_token_ms <= record.latency_ms  # the upstream took 20 ms
    assert record.created_at == pytest.approx(started, abs=0.05)
    assert (record.error_code, record.error_message) == ("", "")


async def test_the_cost_the_upstream_reports_wins_over_the_price_table(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_answer(chat_answer(usage=usage_json(10, 5, cost=0.0123)))

    result = await gateway.create_chat_completion(chat(), ctx())

    assert (await gateway.get_generation(result.body["id"])).cost_usd == 0.0123


async def test_a_model_without_a_price_records_no_cost_rather_than_zero(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_answer(chat_answer(usage=usage_json(10, 5)))

    result = await gateway.create_chat_completion(chat(PLAIN), ctx())

    record = await gateway.get_generation(result.body["id"])
    assert (record.total_tokens, record.cost_usd) == (15, None)


async def test_the_answer_carries_the_generation_id_and_the_gateway_model_and_the_upstream_is_asked_for_its_own(
    gateway: Gateway, provider: FakeProvider
) -> None:
    result = await gateway.create_chat_completion(chat(), ctx())

    assert result.body["id"].startswith("gen-")
    assert result.body["model"] == PRICED
    assert result.body["choices"][0]["message"]["content"] == "Hello!"
    (call,) = provider.calls
    assert (call.kind, call.model.upstream_model) == ("complete", "priced-v1")
    assert (await gateway.get_generation(result.body["id"])).id == result.body["id"]


async def test_an_alias_is_served_by_the_provider_its_catalog_entry_names(
    gateway: Gateway, provider: FakeProvider, other: FakeProvider
) -> None:
    result = await gateway.create_chat_completion(chat(ALIAS), ctx())

    assert provider.calls == []
    assert [call.model.upstream_model for call in other.calls] == ["big-model-2"]
    record = await gateway.get_generation(result.body["id"])
    assert (record.model, record.provider, record.upstream_model) == (ALIAS, "other", "big-model-2")


async def test_a_provider_prefixed_id_outside_the_catalog_goes_upstream_as_the_rest_of_the_id(
    gateway: Gateway, provider: FakeProvider
) -> None:
    result = await gateway.create_chat_completion(chat("fake/vendor/new-model"), ctx())

    assert [call.model.upstream_model for call in provider.calls] == ["vendor/new-model"]
    assert result.body["model"] == "fake/vendor/new-model"


@pytest.mark.parametrize(
    "error",
    [
        UpstreamRateLimited("The upstream is rate limiting us.", retry_after=3.0),
        UpstreamUnavailable("The upstream answered 503.", status=503),
        UpstreamTimeout("The upstream did not answer within 20s."),
    ],
    ids=["rate-limited", "unavailable", "timeout"],
)
async def test_an_upstream_error_is_recorded_and_names_its_generation(
    gateway: Gateway, provider: FakeProvider, error: GatewayError
) -> None:
    provider.will_answer(error)

    with pytest.raises(type(error)) as raised:
        await gateway.create_chat_completion(chat(), ctx())

    assert raised.value.generation_id is not None
    record = await gateway.get_generation(raised.value.generation_id)
    assert record.status is GenerationStatus.ERROR
    assert (record.error_code, record.error_message) == (error.code, error.message)
    assert (record.total_tokens, record.cost_usd, record.time_to_first_token_ms) == (0, None, None)
    assert record.latency_ms is not None


async def test_a_bug_in_a_provider_is_recorded_as_an_internal_error_without_its_text(
    gateway: Gateway, provider: FakeProvider, store: FakeStore
) -> None:
    provider.will_answer(KeyError("sk-secret-in-a-traceback"))

    with pytest.raises(KeyError):
        await gateway.create_chat_completion(chat(), ctx())

    (record,) = await store.wait_for(1)
    assert record.status is GenerationStatus.ERROR
    assert (record.error_code, record.error_message) == ("internal_error", "internal error")


async def test_a_chat_cancelled_while_the_upstream_thinks_is_recorded_cancelled(
    gateway: Gateway, provider: FakeProvider, store: FakeStore
) -> None:
    provider.will_answer(chat_answer(), hang=True)
    task = asyncio.create_task(gateway.create_chat_completion(chat(), ctx()))
    call = await provider.hanging()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert call.ended == "cancelled"
    (record,) = await store.wait_for(1)
    assert (record.status, record.streamed) == (GenerationStatus.CANCELLED, False)
    assert (record.error_code, record.total_tokens) == ("cancelled", 0)


# Routing: refused before any upstream call, and no record


ROUTING_ERRORS = [
    pytest.param(chat("nowhere/model"), NotFound, "model_not_found", "model", id="unknown-provider-prefix"),
    pytest.param(chat("no-such-model"), NotFound, "model_not_found", "model", id="unknown-model"),
    pytest.param(chat(EMBED), InvalidRequest, "model_not_supported", "model", id="chat-to-embeddings-model"),
    pytest.param(
        chat(PLAIN, tools=[{"type": "function", "function": {"name": "now"}}]),
        InvalidRequest,
        "model_not_supported",
        "tools",
        id="tools-without-tools",
    ),
    pytest.param(
        parse_chat_request(
            {
                "model": PLAIN,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        ],
                    }
                ],
            }
        ),
        InvalidRequest,
        "model_not_supported",
        "messages",
        id="images-without-vision",
    ),
]


@pytest.mark.parametrize(("request_", "error", "code", "param"), ROUTING_ERRORS)
async def test_a_chat_that_cannot_be_routed_is_refused_without_an_upstream_call_or_a_record(
    *,
    gateway: Gateway,
    provider: FakeProvider,
    store: FakeStore,
    request_: ChatRequest,
    error: type[GatewayError],
    code: str,
    param: str,
) -> None:
    with pytest.raises(error) as raised:
        await gateway.create_chat_completion(request_, ctx())

    assert (raised.value.code, raised.value.param, raised.value.generation_id) == (code, param, None)
    assert provider.calls == []
    assert await no_records(gateway, store)


@pytest.mark.parametrize(("request_", "error", "code", "param"), ROUTING_ERRORS)
async def test_a_stream_that_cannot_be_routed_is_refused_before_it_starts(
    *,
    gateway: Gateway,
    provider: FakeProvider,
    store: FakeStore,
    request_: ChatRequest,
    error: type[GatewayError],
    code: str,
    param: str,
) -> None:
    with pytest.raises(error) as raised:
        gateway.stream_chat_completion(request_, ctx())

    assert (raised.value.code, raised.value.param, raised.value.generation_id) == (code, param, None)
    assert provider.calls == []
    assert await no_records(gateway, store)


async def test_images_and_tools_reach_a_model_that_supports_them(
    gateway: Gateway, provider: FakeProvider
) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    request = parse_chat_request(
        {
            "model": PRICED,
            "messages": [{"role": "user", "content": [image]}],
            "tools": [{"type": "function", "function": {"name": "now"}}],
        }
    )

    await gateway.create_chat_completion(request, ctx())

    assert [call.request.body["tools"][0]["function"]["name"] for call in provider.calls] == ["now"]


# Chat, streamed


async def test_a_completed_stream_is_recorded_with_the_usage_of_its_usage_chunk(
    gateway: Gateway, provider: FakeProvider
) -> None:
    usage = usage_json(12, 30, completion_tokens_details={"reasoning_tokens": 7})
    provider.will_stream(StreamScript(text_stream("Hel", "lo", finish_reason="stop", usage=usage)))
    stream = gateway.stream_chat_completion(chat(stream=True, user="bob"), ctx())

    await drain(stream)
    # The stream's end writes the record: it is there when the last chunk has been read.
    record = await gateway.get_generation(stream.generation_id)

    assert (record.status, record.streamed, record.user) == (GenerationStatus.COMPLETED, True, "bob")
    assert (record.upstream_id, record.finish_reason) == (UPSTREAM_ID, "stop")
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (12, 30, 42)
    assert record.reasoning_tokens == 7
    assert record.cost_usd == pytest.approx((12 * 2.0 + 30 * 10.0) / 1e6)
    assert provider.calls[0].ended == "answered"


async def test_every_chunk_carries_the_generation_id_and_the_gateway_model(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a", "b", usage=usage_json(3, 2))))
    stream = gateway.stream_chat_completion(chat(stream=True, stream_options={"include_usage": True}), ctx())

    chunks = await drain(stream)

    assert stream.generation_id.startswith("gen-")
    assert {(c["id"], c["model"]) for c in chunks} == {(stream.generation_id, PRICED)}
    assert [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]] == ["", "a", "b", None]


async def test_the_usage_chunk_is_withheld_from_a_client_that_did_not_ask_but_its_usage_is_recorded(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a", "b", usage=usage_json(3, 2))))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    chunks = await drain(stream)

    assert len(chunks) == 4  # role, two texts, finish
    assert all(c["choices"] and "usage" not in c for c in chunks)
    record = await gateway.get_generation(stream.generation_id)
    assert (record.prompt_tokens, record.completion_tokens) == (3, 2)


async def test_the_usage_chunk_reaches_a_client_that_asked_for_it(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a", usage=usage_json(3, 1, cost=0.5))))
    stream = gateway.stream_chat_completion(chat(stream=True, stream_options={"include_usage": True}), ctx())

    chunks = await drain(stream)

    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == usage_json(3, 1, cost=0.5)
    assert (await gateway.get_generation(stream.generation_id)).cost_usd == 0.5


async def test_usage_riding_on_the_last_content_chunk_is_stripped_but_the_chunk_is_forwarded(
    gateway: Gateway, provider: FakeProvider
) -> None:
    last = chunk({"content": "!"}, finish_reason="stop", usage=usage_json(8, 2))
    provider.will_stream(StreamScript([chunk({"content": "Hi"}), last]))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    chunks = await drain(stream)

    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Hi", "!"]
    assert "usage" not in chunks[-1]
    record = await gateway.get_generation(stream.generation_id)
    assert (record.total_tokens, record.finish_reason) == (10, "stop")


async def test_a_stream_without_usage_counts_one_token_per_text_delta(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a", "b", "c")))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    await drain(stream)

    record = await gateway.get_generation(stream.generation_id)
    assert record.status is GenerationStatus.COMPLETED
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (0, 3, 3)
    assert record.cost_usd == pytest.approx(3 * 10.0 / 1e6)


async def test_a_stream_records_its_time_to_first_token_and_its_latency(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a", "b"), pause=0.01))  # four chunks, 10 ms apart
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    await drain(stream)

    record = await gateway.get_generation(stream.generation_id)
    assert record.time_to_first_token_ms is not None
    assert record.latency_ms is not None
    assert 9.0 <= record.time_to_first_token_ms < record.latency_ms
    assert record.latency_ms >= 39.0


async def test_an_upstream_error_before_the_first_chunk_is_raised_by_the_first_read_and_recorded(
    gateway: Gateway, provider: FakeProvider
) -> None:
    error = UpstreamRateLimited("Rate limited by the upstream.", retry_after=2.0)
    provider.will_stream(StreamScript(text_stream("never"), error=error, error_after=0))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    with pytest.raises(UpstreamRateLimited) as raised:
        await next_chunk(stream)

    assert raised.value.generation_id == stream.generation_id
    record = await gateway.get_generation(stream.generation_id)
    assert record.status is GenerationStatus.ERROR
    assert (record.error_code, record.error_message) == (
        "rate_limit_exceeded",
        "Rate limited by the upstream.",
    )
    assert (record.total_tokens, record.cost_usd, record.time_to_first_token_ms) == (0, None, None)
    assert provider.calls[0].ended == "raised"


async def test_an_upstream_error_mid_stream_is_recorded_with_the_tokens_seen_so_far(
    gateway: Gateway, provider: FakeProvider
) -> None:
    error = UpstreamUnavailable("The upstream reset the connection.")
    provider.will_stream(StreamScript(text_stream("a", "b", "c", "d"), error=error, error_after=3))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    seen: list[JSONObject] = []

    async def consume() -> None:
        async for group in stream:
            seen.extend(group)

    with pytest.raises(UpstreamUnavailable) as raised:
        await consume()

    assert len(seen) == 3  # role, "a", "b"
    assert raised.value.generation_id == stream.generation_id
    record = await gateway.get_generation(stream.generation_id)
    assert record.status is GenerationStatus.ERROR
    assert (record.error_code, record.error_message) == (
        "upstream_unavailable",
        "The upstream reset the connection.",
    )
    assert (record.completion_tokens, record.total_tokens) == (2, 2)
    assert record.cost_usd == pytest.approx(2 * 10.0 / 1e6)
    assert record.time_to_first_token_ms is not None


# Cancellation


async def test_a_consumer_that_closes_a_stream_early_closes_the_upstream_and_is_recorded_cancelled(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream(*"abcdefgh", usage=usage_json(5, 8))))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    seen = [await next_chunk(stream) for _ in range(4)]  # role, "a", "b", "c"
    await stream.aclose()

    assert [c["choices"][0]["delta"]["content"] for c in seen] == ["", "a", "b", "c"]
    (call,) = provider.calls
    assert (call.ended, call.sent) == ("closed", 4)
    record = await gateway.get_generation(stream.generation_id)
    assert (record.status, record.error_code) == (GenerationStatus.CANCELLED, "cancelled")
    assert (record.prompt_tokens, record.completion_tokens) == (0, 3)
    assert record.cost_usd == pytest.approx(3 * 10.0 / 1e6)


async def test_a_task_cancelled_mid_stream_closes_the_upstream_and_is_recorded_cancelled(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a", "b", "c"), hang_after=3))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())
    seen: list[JSONObject] = []

    async def consume() -> None:
        async for group in stream:
            seen.extend(group)

    task = asyncio.create_task(consume())
    call = await provider.hanging()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(seen) == 3
    assert call.ended == "cancelled"
    record = await gateway.get_generation(stream.generation_id)
    assert (record.status, record.streamed) == (GenerationStatus.CANCELLED, True)
    assert record.completion_tokens == 2
    assert record.time_to_first_token_ms is not None


async def test_a_stream_cancelled_before_its_first_chunk_is_recorded_cancelled_with_no_tokens(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_stream(StreamScript(text_stream("a"), hang_after=0))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())
    task = asyncio.create_task(drain(stream))
    call = await provider.hanging()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (call.ended, call.sent) == ("cancelled", 0)
    record = await gateway.get_generation(stream.generation_id)
    assert record.status is GenerationStatus.CANCELLED
    assert (record.total_tokens, record.cost_usd, record.time_to_first_token_ms, record.upstream_id) == (
        0,
        None,
        None,
        "",
    )


async def test_deltas_with_content_reasoning_or_tool_calls_count_one_token_each(
    gateway: Gateway, provider: FakeProvider
) -> None:
    tool_call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}
    chunks = [
        chunk({"role": "assistant", "content": ""}),  # no text
        chunk({"reasoning_content": "Let me think"}),
        chunk({"reasoning_content": " about it."}),
        chunk({"content": None, "reasoning_content": None}),  # DashScope's empty delta between phases
        chunk({"content": "Sure."}),
        chunk({"tool_calls": [tool_call]}),
        chunk({}, finish_reason="tool_calls"),
    ]
    provider.will_stream(StreamScript(chunks, hang_after=len(chunks)))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    assert len([await next_chunk(stream) for _ in chunks]) == len(chunks)
    await stream.aclose()

    record = await gateway.get_generation(stream.generation_id)
    assert record.status is GenerationStatus.CANCELLED
    assert (record.completion_tokens, record.finish_reason) == (4, "tool_calls")
    assert provider.calls[0].ended == "closed"


async def test_openrouter_reasoning_deltas_count_as_tokens_seen(
    gateway: Gateway, provider: FakeProvider
) -> None:
    # OpenRouter (and vLLM, Ollama) stream thinking as `delta.reasoning`, not `reasoning_content`.
    chunks = [chunk({"role": "assistant", "reasoning": "Hmm"}), chunk({"reasoning": ", let me see."})]
    provider.will_stream(StreamScript(chunks, hang_after=2))
    stream = gateway.stream_chat_completion(chat(stream=True), ctx())

    await next_chunk(stream)
    await next_chunk(stream)
    await stream.aclose()

    record = await gateway.get_generation(stream.generation_id)
    assert record.status is GenerationStatus.CANCELLED
    assert record.completion_tokens == 2


# Embeddings


async def test_embeddings_are_recorded_with_their_tokens_and_cost_and_answer_with_the_generation_id(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_embed(embeddings_answer([[0.1, 0.2], [0.3, 0.4]], prompt_tokens=20))
    request = EmbeddingsRequest(model=EMBED, body={"model": EMBED, "input": ["a", "b"], "user": "carol"})

    result = await gateway.create_embeddings(request, ctx())

    assert (result.body["model"], [d["embedding"] for d in result.body["data"]]) == (
        EMBED,
        [[0.1, 0.2], [0.3, 0.4]],
    )
    record = await gateway.get_generation(result.body["id"])
    assert (record.kind, record.status, record.streamed) == (
        GenerationKind.EMBEDDINGS,
        GenerationStatus.COMPLETED,
        False,
    )
    assert (record.model, record.upstream_model, record.user) == (EMBED, "embed-v1", "carol")
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (20, 0, 20)
    assert record.cost_usd == pytest.approx(20 * 0.1 / 1e6)
    assert [call.kind for call in provider.calls] == ["embed"]


async def test_an_embeddings_upstream_error_is_recorded_and_names_its_generation(
    gateway: Gateway, provider: FakeProvider
) -> None:
    provider.will_embed(UpstreamUnavailable("The upstream answered 500.", status=500))
    request = EmbeddingsRequest(model=EMBED, body={"model": EMBED, "input": "a"})

    with pytest.raises(UpstreamUnavailable) as raised:
        await gateway.create_embeddings(request, ctx())

    assert raised.value.generation_id is not None
    record = await gateway.get_generation(raised.value.generation_id)
    assert (record.kind, record.status, record.error_code) == (
        GenerationKind.EMBEDDINGS,
        GenerationStatus.ERROR,
        "upstream_unavailable",
    )


async def test_embeddings_for_a_chat_model_are_refused_without_an_upstream_call_or_a_record(
    gateway: Gateway, provider: FakeProvider, store: FakeStore
) -> None:
    request = EmbeddingsRequest(model=PLAIN, body={"model": PLAIN, "input": "a"})

    with pytest.raises(InvalidRequest) as raised:
        await gateway.create_embeddings(request, ctx())

    assert (raised.value.code, raised.value.param, raised.value.generation_id) == (
        "model_not_supported",
        "model",
        None,
    )
    assert provider.calls == []
    assert await no_records(gateway, store)


# Generation lookups


async def test_a_generation_is_found_the_moment_its_response_ends_even_with_the_store_down(
    gateway: Gateway, store: FakeStore
) -> None:
    store.down = True  # so the record can only come from this process's waiting records

    result = await gateway.create_chat_completion(chat(), ctx())
    record = await gateway.get_generation(result.body["id"])

    assert (record.id, record.status) == (result.body["id"], GenerationStatus.COMPLETED)
    assert store.written == []


async def test_a_generation_is_found_in_the_store_once_written(gateway: Gateway, store: FakeStore) -> None:
    result = await gateway.create_chat_completion(chat(), ctx())
    written = await store.record_of(result.body["id"])

    found = await gateway.get_generation(result.body["id"])

    assert gateway.recorder.pending == 0
    assert found == written
    assert found.status is GenerationStatus.COMPLETED


@pytest.mark.parametrize(
    "generation_id",
    ["", "gen-nope", "chatcmpl-upstream-1", "gen-0000000000010000000000000000"],
    ids=["empty", "malformed", "upstream-id", "minted-long-ago"],
)
async def test_an_unknown_generation_is_not_found_at_once(gateway: Gateway, generation_id: str) -> None:
    await gateway.create_chat_completion(chat(), ctx())
    started = time.monotonic()

    with pytest.raises(NotFound) as raised:
        await gateway.get_generation(generation_id)

    assert (raised.value.code, raised.value.param) == ("generation_not_found", "id")
    assert time.monotonic() - started < 0.5


async def test_records_waiting_when_the_gateway_stops_reach_the_store_before_it_closes(
    provider: FakeProvider, store: FakeStore
) -> None:
    async with build_gateway(SETTINGS, store=store, providers={"fake": provider}) as gateway:
        ids = [(await gateway.create_chat_completion(chat(), ctx())).body["id"] for _ in range(3)]
        assert store.opened

    assert store.closed
    assert sorted(store.records) == sorted(ids)
    assert store.puts >= 1


# Readiness


async def test_a_gateway_whose_store_answers_is_ready_and_lists_its_providers(gateway: Gateway) -> None:
    readiness = await gateway.readiness()

    assert (readiness.ready, readiness.store_up) == (True, True)
    assert (readiness.pending_records, readiness.dropped_records) == (0, 0)
    assert {(p.name, p.has_credentials) for p in readiness.providers} == {("fake", True), ("other", False)}


async def test_a_gateway_whose_store_is_down_is_not_ready_and_counts_the_records_waiting(
    gateway: Gateway, store: FakeStore
) -> None:
    store.down = True
    for _ in range(2):
        await gateway.create_chat_completion(chat(), ctx())

    readiness = await gateway.readiness()

    assert (readiness.ready, readiness.store_up) == (False, False)
    assert (readiness.pending_records, readiness.dropped_records) == (2, 0)

    store.down = False
    await gateway.recorder.flush()
    assert (await gateway.readiness()).ready
    assert len(store.written) == 2


async def test_records_dropped_from_a_full_buffer_are_reported(
    provider: FakeProvider, store: FakeStore
) -> None:
    # A buffer of one record and no writer, built by hand: build_gateway sizes the buffer for production.
    recorder = GenerationRecorder(store, max_pending=1, lookup_wait=0.05)
    gateway = Gateway(Router(CATALOG, {"fake": provider}), recorder)

    first = await gateway.create_chat_completion(chat(), ctx())
    second = await gateway.create_chat_completion(chat(), ctx())
    readiness = await gateway.readiness()

    assert (readiness.pending_records, readiness.dropped_records) == (1, 1)
    assert (await gateway.get_generation(first.body["id"])).status is GenerationStatus.COMPLETED
    with pytest.raises(NotFound):
        await gateway.get_generation(second.body["id"])
