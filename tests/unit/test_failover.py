"""Retries, failover and fallbacks through the gateway's use cases, against scripted providers: which
deployment each attempt goes to, when, how many there are, and what the record and the fronts are told."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

import pytest

from llmgw.application.circuits import Circuits, CircuitState
from llmgw.application.failover import Verdict, judge
from llmgw.application.gateway import ChatStream, Gateway, RequestContext
from llmgw.application.recording import GenerationRecorder
from llmgw.application.retries import RetryBudget, RetryPolicy
from llmgw.application.routing import Router
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.domain.chat import ChatRequest, parse_chat_request, parse_embeddings_request
from llmgw.domain.errors import (
    ContextTooLong,
    InvalidRequest,
    Overloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgw.domain.generation import GenerationRecord, GenerationStatus
from llmgw.domain.keys import ApiKey
from tests.fakes.ports import FakeProvider, FakeStore, StreamScript, chat_answer, text_stream

CHAT = frozenset({Capability.CHAT, Capability.EMBEDDINGS})
DOWN = UpstreamUnavailable("sick: upstream answered 503", status=503)
FAST = RetryPolicy(backoff=0.01, backoff_max=0.02, retry_after_max=0.5)


def model(model_id: str, *deployments: Deployment, **extra: object) -> ModelSpec:
    return ModelSpec(id=model_id, name=model_id, capabilities=CHAT, deployments=deployments, **extra)  # type: ignore[arg-type]


EAST = Deployment("east", "gpt-4o")
WEST = Deployment("west", "gpt-4o", priority=1)
SPARE = Deployment("spare", "gpt-4o-mini")
BIG = Deployment("spare", "long-context")
GPT4O = model("gpt-4o", EAST, WEST, fallbacks=("mini",), fallbacks_on_context=("long",))
MINI = model("mini", SPARE)
LONG = model("long", BIG)
SOLO = model("solo", Deployment("east", "solo-model"))


class Setup:
    def __init__(
        self,
        *,
        policy: RetryPolicy = FAST,
        models: Sequence[ModelSpec] = (GPT4O, MINI, LONG, SOLO),
        max_in_flight: dict[str, int] | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.providers = {name: FakeProvider(name) for name in ("east", "west", "spare")}
        self.circuits = Circuits()
        router = Router(
            models,
            self.providers,
            is_available=self.circuits.is_available,
            opened_first=self.circuits.opened_first,
            claim=self.circuits.claim,
            draw=draw,
        )
        self.recorder = GenerationRecorder(FakeStore())
        self.gateway = Gateway(
            router,
            self.recorder,
            circuits=self.circuits,
            provider_max_in_flight=max_in_flight,
            retry_policies=dict.fromkeys(self.providers, policy),
        )

    def calls(self, name: str) -> int:
        return len(self.providers[name].calls)

    async def record(self, generation_id: str) -> GenerationRecord:
        return await self.recorder.get(generation_id) or pytest.fail("no record")


def chat(model_id: str = "gpt-4o", *, stream: bool = False) -> ChatRequest:
    return parse_chat_request(
        {"model": model_id, "messages": [{"role": "user", "content": "hi"}]}, stream=stream
    )


def attempts(record: GenerationRecord) -> list[tuple[str, str, str]]:
    return [(a.provider, a.outcome, a.error_code) for a in record.attempts]


async def test_one_failing_deployment_costs_one_attempt_until_its_circuit_opens_then_nothing() -> None:
    setup = Setup()
    for _ in range(5):
        setup.providers["east"].will_answer(DOWN)
    for _ in range(5):
        ctx = RequestContext("r")
        result = await setup.gateway.create_chat_completion(chat(), ctx)
        assert (ctx.attempts, ctx.provider) == (2, "west"), "the other deployment, at once"
        record = await setup.record(result.body["id"])
        assert attempts(record) == [
            ("east", "error", "upstream_unavailable"),
            ("west", "completed", ""),
        ]
        assert (record.provider, record.status) == ("west", GenerationStatus.COMPLETED)
    assert setup.circuits.state(EAST) is CircuitState.OPEN

    ctx = RequestContext("r")
    await setup.gateway.create_chat_completion(chat(), ctx)
    assert (ctx.attempts, ctx.provider) == (1, "west"), "an open circuit costs no attempt"
    assert setup.calls("east") == 5


async def test_moving_to_another_deployment_does_not_wait_for_a_backoff() -> None:
    setup = Setup(policy=RetryPolicy(backoff=5.0, backoff_max=5.0))
    setup.providers["east"].will_answer(DOWN)
    started = time.perf_counter()
    await setup.gateway.create_chat_completion(chat(), RequestContext("r"))
    assert time.perf_counter() - started < 1.0


async def test_the_same_deployment_is_tried_again_after_a_jittered_backoff() -> None:
    setup = Setup(policy=RetryPolicy(backoff=0.2, backoff_max=0.2))
    setup.providers["east"].will_answer(DOWN)
    setup.providers["east"].will_answer(UpstreamTimeout("east: no answer"))
    ctx = RequestContext("r")
    started = time.perf_counter()
    result = await setup.gateway.create_chat_completion(chat("solo"), ctx)
    assert time.perf_counter() - started < 0.2 * 2 + 0.2, "each wait is at most the ceiling"
    assert ctx.attempts == 3
    record = await setup.record(result.body["id"])
    assert [a.error_code for a in record.attempts] == ["upstream_unavailable", "upstream_timeout", ""]


async def test_every_deployment_failing_goes_to_the_fallback_whose_answer_the_client_gets() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(DOWN)
    setup.providers["west"].will_answer(DOWN)
    setup.providers["spare"].will_answer(chat_answer("from the fallback"))
    ctx = RequestContext("r")
    result = await setup.gateway.create_chat_completion(chat(), ctx)
    assert result.body["choices"][0]["message"]["content"] == "from the fallback"
    assert result.body["model"] == "mini", "the model that answered"
    record = await setup.record(result.body["id"])
    assert record.model == "gpt-4o", "the record keeps the model asked for"
    assert [(a.model, a.provider, a.outcome) for a in record.attempts] == [
        ("gpt-4o", "east", "error"),
        ("gpt-4o", "west", "error"),
        ("mini", "spare", "completed"),
    ]
    assert (record.provider, record.upstream_model) == ("spare", "gpt-4o-mini")


async def test_with_everything_failing_the_last_error_comes_after_max_attempts() -> None:
    setup = Setup()
    for name in ("east", "west", "spare"):
        for _ in range(3):
            setup.providers[name].will_answer(DOWN)
    ctx = RequestContext("r")
    with pytest.raises(UpstreamUnavailable) as caught:
        await setup.gateway.create_chat_completion(chat(), ctx)
    assert ctx.attempts == 3 == caught.value.attempts
    assert caught.value.provider == "spare"
    record = await setup.record(caught.value.generation_id or "")
    assert record.status is GenerationStatus.ERROR
    assert len(record.attempts) == 3


async def test_a_429_moves_on_at_once_and_comes_back_only_after_its_retry_after() -> None:
    setup = Setup(models=(SOLO,))
    setup.providers["east"].will_answer(UpstreamRateLimited("east: slow down", retry_after=0.15))
    started = time.perf_counter()
    ctx = RequestContext("r")
    await setup.gateway.create_chat_completion(chat("solo"), ctx)
    assert time.perf_counter() - started >= 0.15
    assert ctx.attempts == 2
    assert setup.circuits.state(SOLO.deployments[0]) is CircuitState.CLOSED


async def test_a_retry_after_beyond_the_cap_is_returned_to_the_client_with_its_retry_after() -> None:
    setup = Setup(models=(SOLO,))
    setup.providers["east"].will_answer(UpstreamRateLimited("east: slow down", retry_after=30))
    with pytest.raises(UpstreamRateLimited) as caught:
        await setup.gateway.create_chat_completion(chat("solo"), RequestContext("r"))
    assert caught.value.retry_after == 30
    assert setup.calls("east") == 1


async def test_a_refused_key_leaves_the_deployment_out_and_opens_its_circuit_at_once() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(UpstreamUnavailable("east rejected the key", status=401))
    ctx = RequestContext("r")
    await setup.gateway.create_chat_completion(chat(), ctx)
    assert (ctx.attempts, ctx.provider) == (2, "west")
    assert setup.circuits.state(EAST) is CircuitState.OPEN


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_the_upstreams_refusal_of_the_request_is_never_retried(status: int) -> None:
    setup = Setup()
    setup.providers["east"].will_answer(UpstreamRejected("east: bad request", status=status))
    with pytest.raises(UpstreamRejected):
        await setup.gateway.create_chat_completion(chat(), RequestContext("r"))
    assert (setup.calls("east"), setup.calls("west"), setup.calls("spare")) == (1, 0, 0)


async def test_a_request_too_long_for_the_context_goes_to_the_larger_context_fallback() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(ContextTooLong("east: maximum context length", status=400))
    result = await setup.gateway.create_chat_completion(chat(), RequestContext("r"))
    assert result.body["model"] == "long"
    assert setup.providers["spare"].calls[0].model.upstream_model == "long-context"
    assert setup.calls("west") == 0, "the same model elsewhere has the same context"


async def test_a_request_too_long_without_a_larger_fallback_is_not_retried() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(ContextTooLong("east: maximum context length", status=400))
    with pytest.raises(ContextTooLong):
        await setup.gateway.create_chat_completion(chat("solo"), RequestContext("r"))
    assert setup.calls("east") == 1


async def test_one_deadline_bounds_every_attempt_and_no_backoff_runs_past_it() -> None:
    # The backoff's jitter draws 0.5: a 5 s wait, past the 0.5 s deadline.
    setup = Setup(policy=RetryPolicy(backoff=10.0, backoff_max=10.0, timeout=0.5), draw=lambda: 0.5)
    setup.providers["east"].will_answer(DOWN)
    started = time.perf_counter()
    with pytest.raises(UpstreamUnavailable):
        await setup.gateway.create_chat_completion(chat("solo"), RequestContext("r"))
    assert time.perf_counter() - started < 0.4, "a backoff past the deadline is not waited for"
    assert setup.calls("east") == 1


async def test_with_an_attempt_timeout_a_hanging_deployment_costs_that_wait_not_the_deadline() -> None:
    setup = Setup(policy=RetryPolicy(attempt_timeout=0.1, timeout=30.0))
    setup.providers["east"].will_answer(chat_answer("never"), hang=True)
    ctx = RequestContext("r")
    started = time.perf_counter()
    result = await setup.gateway.create_chat_completion(chat(), ctx)
    assert 0.1 <= time.perf_counter() - started < 1.0
    assert (ctx.attempts, ctx.provider) == (2, "west")
    record = await setup.record(result.body["id"])
    assert attempts(record) == [("east", "error", "upstream_timeout"), ("west", "completed", "")]


async def test_without_an_attempt_timeout_a_unary_attempt_has_the_whole_deadline() -> None:
    setup = Setup(policy=RetryPolicy(timeout=30.0))
    loop = asyncio.get_running_loop()
    before = loop.time()
    await setup.gateway.create_chat_completion(chat(), RequestContext("r"))
    deadline = setup.providers["east"].calls[0].deadline
    assert deadline is not None
    assert deadline - before >= 29.0


async def test_a_stream_attempt_gets_the_requests_deadline_even_with_an_attempt_timeout() -> None:
    setup = Setup(policy=RetryPolicy(attempt_timeout=0.1, timeout=30.0))
    loop = asyncio.get_running_loop()
    before = loop.time()
    stream = setup.gateway.stream_chat_completion(chat(stream=True), RequestContext("r"))
    async for _ in stream:
        pass
    deadline = setup.providers["east"].calls[0].deadline
    assert deadline is not None
    assert deadline - before >= 29.0, "a stream is bounded by first_token_timeout, not cut mid-way"


async def test_every_attempt_gets_the_same_deadline_the_clients_own_when_sooner() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(DOWN)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    await setup.gateway.create_chat_completion(chat(), RequestContext("r", deadline=deadline))
    assert [c.deadline for c in setup.providers["east"].calls + setup.providers["west"].calls] == [
        deadline,
        deadline,
    ]


async def test_the_retry_budget_stops_repeat_attempts_at_a_provider_that_keeps_failing() -> None:
    setup = Setup(policy=RetryPolicy(backoff=0.001, backoff_max=0.001, budget=0.0, budget_floor=2))
    for _ in range(9):
        setup.providers["east"].will_answer(DOWN)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await setup.gateway.create_chat_completion(chat("solo"), RequestContext("r"))
    assert setup.calls("east") == 3 + 2, "three first attempts, two retries from the budget"


def test_a_retry_budget_allows_its_floor_plus_its_share_of_requests_over_a_sliding_window() -> None:
    now = [0.0]
    budget = RetryBudget(RetryPolicy(budget=0.2, budget_window=10.0, budget_floor=1), lambda: now[0])
    for _ in range(10):
        budget.note_request()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    now[0] = 15.0  # half of the last window still counts: 5 requests and 1.5 retries, room for 2
    assert [budget.try_spend() for _ in range(2)] == [True, False]
    now[0] = 25.0  # nothing overlaps any more
    assert budget.try_spend() is True


async def test_a_full_provider_sends_the_attempt_to_another_deployment() -> None:
    setup = Setup(max_in_flight={"east": 1})
    setup.providers["east"].will_answer(chat_answer("slow"), delay=0.2)
    first = asyncio.create_task(setup.gateway.create_chat_completion(chat("solo"), RequestContext("a")))
    await asyncio.sleep(0.05)
    ctx = RequestContext("b")
    await setup.gateway.create_chat_completion(chat(), ctx)
    assert ctx.provider == "west"
    await first

    setup.providers["east"].will_answer(chat_answer("slow"), delay=0.2)
    again = asyncio.create_task(setup.gateway.create_chat_completion(chat("solo"), RequestContext("c")))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded):  # a model with nowhere else to go
        await setup.gateway.create_chat_completion(chat("solo"), RequestContext("d"))
    await again


async def test_with_every_deployment_and_fallback_open_the_one_opened_first_is_tried() -> None:
    setup = Setup()
    for deployment in (WEST, EAST, SPARE):  # WEST opens first
        for _ in range(5):
            setup.circuits.record(deployment, DOWN)
        await asyncio.sleep(0.01)
    ctx = RequestContext("r")
    await setup.gateway.create_chat_completion(chat(), ctx)
    assert ctx.provider == "west"


async def test_a_client_that_leaves_during_a_backoff_stops_every_further_attempt() -> None:
    setup = Setup(models=(SOLO,), policy=RetryPolicy(backoff=5.0, backoff_max=5.0), draw=lambda: 0.5)
    setup.providers["east"].will_answer(DOWN)
    ctx = RequestContext("r")
    task = asyncio.create_task(setup.gateway.create_chat_completion(chat("solo"), ctx))
    while not setup.providers["east"].calls or not setup.providers["east"].calls[0].closed:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert setup.calls("east") == 1
    assert setup.gateway.in_flight == 0


async def test_a_stream_failing_before_its_first_chunk_fails_over_like_a_unary_call() -> None:
    setup = Setup()
    setup.providers["east"].will_stream(StreamScript(text_stream("x"), error=DOWN, error_after=0))
    ctx = RequestContext("r")
    stream = setup.gateway.stream_chat_completion(chat(stream=True), ctx)
    texts = [c["choices"][0]["delta"].get("content") async for chunks in stream for c in chunks]
    assert "".join(t or "" for t in texts) == "Hello!"
    assert (ctx.attempts, ctx.provider) == (2, "west")
    record = await setup.record(stream.generation_id)
    assert attempts(record) == [("east", "error", "upstream_unavailable"), ("west", "completed", "")]


async def test_a_stream_failing_after_its_first_chunk_never_switches() -> None:
    setup = Setup()
    setup.providers["east"].will_stream(StreamScript(text_stream("a", "b"), error=DOWN, error_after=2))
    stream: ChatStream = setup.gateway.stream_chat_completion(chat(stream=True), RequestContext("r"))
    first = await anext(stream)
    second = await anext(stream)
    with pytest.raises(UpstreamUnavailable):
        await anext(stream)
    assert len(first) + len(second) == 2
    assert setup.calls("west") == 0
    record = await setup.record(stream.generation_id)
    assert attempts(record) == [("east", "error", "upstream_unavailable")]


async def test_embeddings_fail_over_too() -> None:
    setup = Setup()
    setup.providers["east"].will_embed(DOWN)
    ctx = RequestContext("r")
    request = parse_embeddings_request({"model": "gpt-4o", "input": "hi"})
    await setup.gateway.create_embeddings(request, ctx)
    assert (ctx.attempts, ctx.provider) == (2, "west")


def test_what_each_failure_says_about_the_next_attempt() -> None:
    assert judge(DOWN) is Verdict.RETRY
    assert judge(UpstreamTimeout("t")) is Verdict.RETRY
    assert judge(UpstreamRateLimited("r")) is Verdict.RATE_LIMITED
    for status in (401, 402, 403):
        assert judge(UpstreamUnavailable("k", status=status)) is Verdict.LEAVE_OUT
    assert judge(UpstreamUnavailable("no key", code="missing_credentials")) is Verdict.LEAVE_OUT
    assert judge(UpstreamRejected("r", status=400)) is Verdict.STOP
    assert judge(ContextTooLong("c", status=400)) is Verdict.CONTEXT
    assert judge(InvalidRequest("bad")) is Verdict.STOP
    assert judge(asyncio.CancelledError()) is Verdict.STOP


async def test_a_key_limited_to_some_models_is_never_answered_by_a_fallback_outside_them() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(DOWN)
    setup.providers["east"].will_answer(DOWN)
    setup.providers["west"].will_answer(DOWN)
    key = ApiKey(public_id="k" * 12, name="ci", secret_hash=b"", models=("gpt-4o",))
    with pytest.raises(UpstreamUnavailable):
        await setup.gateway.create_chat_completion(chat(), RequestContext("r", key=key))
    assert setup.calls("spare") == 0, "the fallback `mini` is not the key's to use"


async def test_a_key_limited_to_some_models_gets_no_larger_context_fallback_outside_them() -> None:
    setup = Setup()
    setup.providers["east"].will_answer(ContextTooLong("east: maximum context length", status=400))
    key = ApiKey(public_id="k" * 12, name="ci", secret_hash=b"", models=("gpt-*",))
    with pytest.raises(ContextTooLong):
        await setup.gateway.create_chat_completion(chat(), RequestContext("r", key=key))
    assert setup.calls("spare") == 0
