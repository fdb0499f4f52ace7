"""Issue 12's "done when", through the official `openai` SDK (which never retries here: max_retries=0) and
gRPC: an alias keeps answering while one deployment fails hard, a fallback answers when both fail, and when
everything fails the client gets the right status within the request's deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.chaos_setup import (
    ALIAS,
    EAST,
    FALLBACK,
    FAST_RETRY,
    SPARE,
    UPSTREAM_MODEL,
    WEST,
    Front,
    Record,
    alias,
    call,
    chaos_gateway,
    chaos_settings,
    record_of,
    upstreams,
)
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
ANSWER = wire.expected_content(3)
REQUESTS = 20
CIRCUIT_FAILURES = 5  # llm.circuit.failures' default
# A request whose first attempt failed went on at once: its latency is its attempts' durations and little
# more (a backoff would add tens of ms at least).
NO_WAIT_MS = 50.0


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    async with upstreams() as started:
        yield started


def sdk(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0, timeout=10.0)


async def ask(client: openai.AsyncOpenAI, *, stream: bool) -> tuple[str, str, str, dict[str, str]]:
    """One chat through the SDK: the answer's content, model, generation id and response headers."""
    if stream:
        chunks = await client.chat.completions.create(model=ALIAS, messages=HELLO, stream=True)
        headers = dict(chunks.response.headers)
        async with chunks:
            received = [chunk async for chunk in chunks]
        content = "".join(c.delta.content or "" for chunk in received for c in chunk.choices)
        assert {chunk.model for chunk in received} == {received[0].model}
        return content, received[0].model, received[0].id, headers
    raw = await client.chat.completions.with_raw_response.create(model=ALIAS, messages=HELLO)
    completion = raw.parse()
    return completion.choices[0].message.content or "", completion.model, completion.id, dict(raw.headers)


def assert_no_wait(record: Record) -> None:
    spent = sum(attempt.duration_ms for attempt in record.attempts)
    assert record.latency_ms - spent < NO_WAIT_MS, record


STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])


@STREAMED
async def test_an_alias_with_one_deployment_failing_hard_answers_every_request(
    fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    """East (preferred) answers 500 to everything: its first five failures open its circuit."""
    fakes[EAST].script(*(Script(status=500) for _ in range(REQUESTS)))
    async with chaos_gateway(fakes, chaos_settings(fakes)) as gw, sdk(gw.running) as client:
        answers = [await ask(client, stream=stream) for _ in range(REQUESTS)]
        records = [await record_of(gw.running, answer[2], grpc=False) for answer in answers]

    assert {(content, model) for content, model, _, _ in answers} == {(ANSWER, ALIAS)}
    assert gw.seen() == {EAST: CIRCUIT_FAILURES, WEST: REQUESTS, SPARE: 0}
    failed_first = [(EAST, "error", "upstream_unavailable"), (WEST, "completed", "")]
    assert [r.tried for r in records] == [failed_first] * CIRCUIT_FAILURES + [[(WEST, "completed", "")]] * (
        REQUESTS - CIRCUIT_FAILURES
    )
    assert [a[3]["x-llmgw-attempts"] for a in answers] == ["2"] * CIRCUIT_FAILURES + ["1"] * (
        REQUESTS - CIRCUIT_FAILURES
    )
    assert {a[3]["x-llmgw-provider"] for a in answers} == {WEST}
    for record in records[:CIRCUIT_FAILURES]:
        assert_no_wait(record)


@STREAMED
async def test_an_alias_sharing_traffic_by_weight_stops_sending_to_the_failing_deployment(
    fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    """Both deployments take a share; whichever requests drew east fail over, until its circuit opens."""
    fakes[EAST].script(*(Script(status=500) for _ in range(REQUESTS)))
    settings = chaos_settings(fakes, model=alias(weights=(1, 1)))
    async with chaos_gateway(fakes, settings) as gw, sdk(gw.running) as client:
        answers = [await ask(client, stream=stream) for _ in range(REQUESTS)]
        records = [await record_of(gw.running, answer[2], grpc=False) for answer in answers]

    assert {(content, model) for content, model, _, _ in answers} == {(ANSWER, ALIAS)}
    east = gw.seen()[EAST]
    assert east <= CIRCUIT_FAILURES
    assert gw.seen()[WEST] == REQUESTS
    failures = 0
    for record in records:
        assert len(record.attempts) in (1, 2)
        assert record.tried[-1] == (WEST, "completed", "")
        if len(record.attempts) == 2:
            assert failures < CIRCUIT_FAILURES, "a request went to east after its circuit opened"
            assert record.tried[0] == (EAST, "error", "upstream_unavailable")
            assert_no_wait(record)
            failures += 1
    assert failures == east


@STREAMED
async def test_when_both_deployments_fail_the_sdk_gets_the_fallbacks_answer(
    fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    fakes[EAST].script(Script(status=500))
    fakes[WEST].script(Script(status=500))
    settings = chaos_settings(fakes, model=alias(fallbacks=(FALLBACK,)))
    async with chaos_gateway(fakes, settings) as gw, sdk(gw.running) as client:
        content, model, generation_id, headers = await ask(client, stream=stream)
        record = await record_of(gw.running, generation_id, grpc=False)

    assert (content, model) == (ANSWER, FALLBACK)
    assert (headers["x-llmgw-attempts"], headers["x-llmgw-provider"]) == ("3", SPARE)
    assert fakes[SPARE].requests[0].json["model"] == UPSTREAM_MODEL[SPARE]
    assert [(a.provider, a.model, a.outcome) for a in record.attempts] == [
        (EAST, ALIAS, "error"),
        (WEST, ALIAS, "error"),
        (SPARE, FALLBACK, "completed"),
    ]
    assert_no_wait(record)


# Everything fails: east, west and the fallback. Five attempts may be made (the last two after a backoff).
DEADLINE = 1.0
MARGIN = 0.4
EVERYTHING: dict[str, Any] = {
    name: {"timeout": DEADLINE, "first_token_timeout": 0.3} for name in (EAST, WEST, SPARE)
}


@dataclass(frozen=True)
class Failing:
    """How every upstream fails, what the SDK raises for it, and where the attempts go (unary, streamed)."""

    script: Script
    exception: type[openai.APIStatusError]
    status: int
    kind: str
    tried: tuple[list[str], list[str]]


EVERYTHING_FAILING = {
    # The alias's deployments, the fallback, then back to the preferred deployment after backoffs.
    "500s": Failing(
        Script(status=500),
        openai.InternalServerError,
        502,
        "upstream_error",
        ([EAST, WEST, SPARE, EAST, EAST],) * 2,
    ),
    # Each deployment asks for longer than retry_after_max: it is left out, none is left.
    "429s beyond retry_after_max": Failing(
        Script(status=429, headers={"Retry-After": "30"}),
        openai.RateLimitError,
        429,
        "rate_limit_error",
        ([EAST, WEST, SPARE],) * 2,
    ),
    # Unary: the first attempt takes the whole deadline; streams: first_token_timeout each, until it.
    "silence": Failing(
        Script(hang=True),
        openai.InternalServerError,
        504,
        "timeout_error",
        ([EAST], [EAST, WEST, SPARE, EAST]),
    ),
}


@STREAMED
@pytest.mark.parametrize("case", list(EVERYTHING_FAILING.values()), ids=list(EVERYTHING_FAILING))
async def test_when_everything_fails_the_sdk_gets_the_mapped_status_within_the_deadline(
    fakes: dict[str, FakeUpstream], case: Failing, stream: bool
) -> None:
    tried = case.tried[stream]
    for name, fake in fakes.items():
        fake.script(*(replace(case.script) for _ in range(tried.count(name))))
    settings = chaos_settings(
        fakes,
        retry=replace(FAST_RETRY, max_attempts=5),
        model=alias(fallbacks=(FALLBACK,)),
        overrides=EVERYTHING,
    )
    async with chaos_gateway(fakes, settings) as gw, sdk(gw.running) as client:
        started = time.perf_counter()
        with pytest.raises(case.exception) as caught:
            await client.chat.completions.create(model=ALIAS, messages=HELLO, stream=stream)
        elapsed = time.perf_counter() - started
        headers = caught.value.response.headers
        record = await record_of(gw.running, headers["x-generation-id"], grpc=False)
        seen = gw.seen()
        after = await call(gw.running, Front.REST_STREAM if stream else Front.REST)

    assert caught.value.status_code == case.status
    assert caught.value.type == case.kind
    assert elapsed < DEADLINE + MARGIN
    if case.status == 504:
        assert elapsed >= DEADLINE - 0.05
    if case.status == 429:
        assert headers["retry-after"] == "30"
    assert (headers["x-llmgw-attempts"], headers["x-llmgw-provider"]) == (str(len(tried)), tried[-1])
    assert record.status == "error"
    assert [a.provider for a in record.attempts] == tried
    assert seen == {name: tried.count(name) for name in (EAST, WEST, SPARE)}
    assert after.content == ANSWER  # the gateway goes on serving


@STREAMED
async def test_an_alias_answers_under_its_own_id(fakes: dict[str, FakeUpstream], stream: bool) -> None:
    async with chaos_gateway(fakes, chaos_settings(fakes)) as gw, sdk(gw.running) as client:
        content, model, _, headers = await ask(client, stream=stream)

    assert (content, model) == (ANSWER, ALIAS)
    assert (headers["x-llmgw-attempts"], headers["x-llmgw-provider"]) == ("1", EAST)
    assert fakes[EAST].requests[0].json["model"] == UPSTREAM_MODEL[EAST]


async def test_grpc_calls_to_an_alias_with_one_deployment_failing_hard_all_answer(
    fakes: dict[str, FakeUpstream],
) -> None:
    fakes[EAST].script(*(Script(status=500) for _ in range(REQUESTS)))
    fronts = [Front.GRPC, Front.GRPC_STREAM] * (REQUESTS // 2)
    async with chaos_gateway(fakes, chaos_settings(fakes)) as gw:
        outcomes = [await call(gw.running, front) for front in fronts]
        records = [await record_of(gw.running, o.generation_id, grpc=True) for o in outcomes[:6]]

    assert {(o.error, o.midstream, o.content, o.model) for o in outcomes} == {(None, None, ANSWER, ALIAS)}
    assert gw.seen() == {EAST: CIRCUIT_FAILURES, WEST: REQUESTS, SPARE: 0}
    assert [o.attempts_header for o in outcomes] == [("2", WEST)] * CIRCUIT_FAILURES + [("1", WEST)] * (
        REQUESTS - CIRCUIT_FAILURES
    )
    for record in records[:CIRCUIT_FAILURES]:
        assert record.tried == [(EAST, "error", "upstream_unavailable"), (WEST, "completed", "")]
        assert_no_wait(record)
    assert records[CIRCUIT_FAILURES].tried == [(WEST, "completed", "")]


async def test_after_the_cooldown_one_probe_goes_to_the_failing_deployment_and_its_answer_decides(
    fakes: dict[str, FakeUpstream],
) -> None:
    cooldown = 0.3
    fakes[EAST].script(*(Script(status=500) for _ in range(CIRCUIT_FAILURES + 1)))
    settings = chaos_settings(fakes)
    settings = replace(settings, circuit=replace(settings.circuit, cooldown=cooldown))
    async with chaos_gateway(fakes, settings) as gw, sdk(gw.running) as client:
        for _ in range(CIRCUIT_FAILURES + 1):
            await ask(client, stream=False)
        assert gw.seen()[EAST] == CIRCUIT_FAILURES  # open: the last request went to west alone
        await asyncio.sleep(cooldown)
        probe = await ask(client, stream=False)  # east's probe fails: west answers, east opens again
        after_probe = await ask(client, stream=False)
        assert gw.seen()[EAST] == CIRCUIT_FAILURES + 1
        await asyncio.sleep(cooldown)
        recovered = [await ask(client, stream=False) for _ in range(2)]  # east answers again: closed

    assert (probe[3]["x-llmgw-attempts"], probe[3]["x-llmgw-provider"]) == ("2", WEST)
    assert (after_probe[3]["x-llmgw-attempts"], after_probe[3]["x-llmgw-provider"]) == ("1", WEST)
    assert [(a[3]["x-llmgw-attempts"], a[3]["x-llmgw-provider"]) for a in recovered] == [("1", EAST)] * 2
    assert {a[0] for a in (probe, after_probe, *recovered)} == {ANSWER}
