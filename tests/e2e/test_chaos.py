"""Chaos: fake upstreams that fail in every way the wire allows, on both fronts, against the real gateway.

Before the first chunk a failure is followed by another attempt (another deployment at once, the same one
after a backoff or its Retry-After) or ends in the mapped error; after it, a stream ends with one error
event and `[DONE]` (gRPC: its status), never a silent switch. Each case checks what the client got, what
each fake saw, the record's attempts, `x-llmgw-attempts` / `x-llmgw-provider`, and that the gateway goes
on serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest

from llmgw.application.retries import RetryPolicy
from tests.e2e.chaos_setup import (
    ALIAS,
    ALL_FRONTS,
    EAST,
    FALLBACK,
    FAST_RETRY,
    KEYS,
    SLACK,
    SOLO,
    SPARE,
    STATUS_OF_TYPE,
    STREAM_FRONTS,
    TIMEOUTS,
    UNARY_FRONTS,
    UPSTREAM_MODEL,
    WEST,
    Front,
    Gateway,
    Outcome,
    alias,
    call,
    chaos_gateway,
    chaos_settings,
    chat_body,
    grpc_request,
    record_of,
    upstreams,
)
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script

Json = dict[str, Any]
ANSWER = wire.expected_content(3)
# Over `max_response_bytes` below (1 MB): ten times over.
TEN_MB = "x" * 10_000_000
SMALL_ANSWERS: Json = {"max_response_bytes": 1_000_000}


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    async with upstreams() as started:
        yield started


async def assert_still_serving(gw: Gateway, front: Front) -> None:
    """A plain request right after the chaos gets its answer."""
    outcome = await call(gw.running, front)
    assert (outcome.error, outcome.midstream) == (None, None), outcome
    assert outcome.content == ANSWER


def assert_no_key_leaked(outcome: Outcome) -> None:
    seen = [*outcome.headers.values(), *outcome.trailers.values(), outcome.content]
    assert not [key for key in KEYS.values() for text in seen if key in text]


def assert_error(outcome: Outcome, error: str) -> None:
    """The mapped error, before any chunk: a JSON error answer on REST (streams included), the status on gRPC."""
    rest_status, grpc_status = STATUS_OF_TYPE[error]
    assert outcome.error == error, outcome
    assert outcome.status == (grpc_status if outcome.front.grpc else rest_status), outcome
    assert outcome.content == ""


# Failures before the first chunk, at the preferred deployment: the other one answers at once.


@dataclass(frozen=True)
class Failover:
    """East fails as `script` says (None: east refuses connections); its attempt is recorded `code`."""

    script: Script | None
    code: str
    fronts: list[Front] = field(default_factory=lambda: ALL_FRONTS)
    east: Json = field(default_factory=dict)


FAILOVERS = {
    "429 with Retry-After": Failover(Script(status=429, headers={"Retry-After": "1"}), "rate_limit_exceeded"),
    "500": Failover(Script(status=500), "upstream_unavailable"),
    "503": Failover(Script(status=503), "upstream_unavailable"),
    "401": Failover(Script(status=401), "invalid_api_key"),
    "connection refused": Failover(None, "upstream_unavailable"),
    # Unary: a body that is not JSON; streams: a first SSE event that is not JSON.
    "malformed body or SSE line": Failover(Script(malformed=True), "upstream_unavailable"),
    "10 MB answer": Failover(
        Script(extra_response_fields={"pad": TEN_MB}), "upstream_unavailable", east=SMALL_ANSWERS
    ),
    # Unary: the connection cut halfway through the body; streams: after the headers, before any chunk.
    "reset before the first chunk": Failover(Script(reset_after_chunks=0), "upstream_unavailable"),
    "accept then hang": Failover(Script(hang=True), "upstream_timeout", fronts=STREAM_FRONTS),
    "first byte slower than first_token_timeout": Failover(
        Script(first_chunk_delay=1.0), "upstream_timeout", fronts=STREAM_FRONTS
    ),
}
FAILOVER_CASES = [
    pytest.param(case, front, id=f"{name}-{front.value}")
    for name, case in FAILOVERS.items()
    for front in case.fronts
]


@pytest.mark.parametrize(("case", "front"), FAILOVER_CASES)
async def test_a_failure_before_the_first_chunk_goes_to_the_other_deployment_at_once(
    fakes: dict[str, FakeUpstream], case: Failover, front: Front
) -> None:
    refused = () if case.script is not None else (EAST,)
    if case.script is not None:
        fakes[EAST].script(replace(case.script))
    settings = chaos_settings(fakes, overrides={EAST: case.east}, refused=refused)

    async with chaos_gateway(fakes, settings) as gw:
        outcome = await call(gw.running, front)

        assert (outcome.error, outcome.midstream) == (None, None), outcome
        assert (outcome.content, outcome.model) == (ANSWER, ALIAS)
        assert outcome.attempts_header == ("2", WEST)
        assert gw.seen() == {EAST: 0 if refused else 1, WEST: 1, SPARE: 0}
        assert fakes[WEST].requests[0].json["model"] == UPSTREAM_MODEL[WEST]
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert (record.status, record.error_code, record.provider) == ("completed", "", WEST)
        assert record.tried == [(EAST, "error", case.code), (WEST, "completed", "")]
        assert {a.model for a in record.attempts} == {ALIAS}
        assert [a.upstream_model for a in record.attempts] == [UPSTREAM_MODEL[EAST], UPSTREAM_MODEL[WEST]]
        assert outcome.elapsed < TIMEOUTS["first_token_timeout"] * 2 + SLACK
        await assert_still_serving(gw, front)


async def test_a_refused_key_opens_the_deployments_circuit_at_once(fakes: dict[str, FakeUpstream]) -> None:
    fakes[EAST].script(Script(status=401), Script(status=401))
    async with chaos_gateway(fakes, chaos_settings(fakes)) as gw:
        first = await call(gw.running, Front.REST)
        second = await call(gw.running, Front.GRPC_STREAM)

        assert (first.content, second.content) == (ANSWER, ANSWER)
        assert first.attempts_header == ("2", WEST)
        assert second.attempts_header == ("1", WEST)
        assert gw.seen() == {EAST: 1, WEST: 2, SPARE: 0}
        second_record = await record_of(gw.running, second.generation_id, grpc=True)
        assert second_record.tried == [(WEST, "completed", "")]


@pytest.mark.parametrize("front", UNARY_FRONTS, ids=lambda front: front.value)
async def test_with_an_attempt_timeout_a_unary_hang_fails_over_before_the_deadline(
    fakes: dict[str, FakeUpstream], front: Front
) -> None:
    fakes[EAST].script(Script(hang=True))
    settings = chaos_settings(fakes, retry=replace(FAST_RETRY, attempt_timeout=0.2))

    async with chaos_gateway(fakes, settings) as gw:
        outcome = await call(gw.running, front)

        assert (outcome.error, outcome.content) == (None, ANSWER), outcome
        assert outcome.attempts_header == ("2", WEST)
        assert outcome.elapsed < TIMEOUTS["timeout"], "one attempt's wait, not the whole deadline"
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert record.tried == [(EAST, "error", "upstream_timeout"), (WEST, "completed", "")]
        await assert_still_serving(gw, front)


# The same failures where no other deployment is left: the mapped error, at once or at the deadline.


@dataclass(frozen=True)
class Fatal:
    """Every attempt east gets fails as `script` says (None: east refuses connections); the client gets
    `error`, the record `code`."""

    script: Script | None
    error: str
    code: str
    attempts: int
    #: The answer comes when the request's deadline (east's `timeout`) passes, not before.
    at_deadline: bool = False
    fronts: list[Front] = field(default_factory=lambda: ALL_FRONTS)
    east: Json = field(default_factory=dict)


FATALS = {
    "500s": Fatal(Script(status=500), "upstream_error", "upstream_unavailable", attempts=3),
    "503s": Fatal(Script(status=503), "upstream_error", "upstream_unavailable", attempts=3),
    "401": Fatal(Script(status=401), "upstream_error", "invalid_api_key", attempts=1),
    "connection refused": Fatal(None, "upstream_error", "upstream_unavailable", attempts=3),
    "10 MB answers": Fatal(
        Script(extra_response_fields={"pad": TEN_MB}),
        "upstream_error",
        "upstream_unavailable",
        3,
        east=SMALL_ANSWERS,
    ),
    "resets before the first chunk": Fatal(
        Script(reset_after_chunks=0), "upstream_error", "upstream_unavailable", 3
    ),
    "malformed body or SSE line": Fatal(Script(malformed=True), "upstream_error", "upstream_unavailable", 3),
    "429 beyond retry_after_max": Fatal(
        Script(status=429, headers={"Retry-After": "30"}), "rate_limit_error", "rate_limit_exceeded", 1
    ),
    # Without streaming, one attempt may take the whole deadline: nothing is left for another.
    "accept then hang": Fatal(
        Script(hang=True), "timeout_error", "upstream_timeout", 1, at_deadline=True, fronts=UNARY_FRONTS
    ),
    "first byte slower than the timeout": Fatal(
        Script(delay=2.0), "timeout_error", "upstream_timeout", 1, at_deadline=True, fronts=UNARY_FRONTS
    ),
    "stall halfway through the body": Fatal(
        Script(hang_after_chunks=1),
        "timeout_error",
        "upstream_timeout",
        1,
        at_deadline=True,
        fronts=UNARY_FRONTS,
    ),
    # Streams: each attempt has first_token_timeout (0.25 s), three fit in the deadline (0.8 s).
    "accept then hang, streamed": Fatal(
        Script(hang=True), "timeout_error", "upstream_timeout", 3, fronts=STREAM_FRONTS
    ),
}
FATAL_CASES = [
    pytest.param(case, front, id=f"{name}-{front.value}")
    for name, case in FATALS.items()
    for front in case.fronts
]


@pytest.mark.parametrize(("case", "front"), FATAL_CASES)
async def test_a_deployment_that_keeps_failing_alone_ends_in_the_mapped_error(
    fakes: dict[str, FakeUpstream], case: Fatal, front: Front
) -> None:
    refused = () if case.script is not None else (EAST,)
    if case.script is not None:
        fakes[EAST].script(*(replace(case.script) for _ in range(case.attempts)))
    settings = chaos_settings(fakes, overrides={EAST: case.east}, refused=refused)

    async with chaos_gateway(fakes, settings) as gw:
        outcome = await call(gw.running, front, SOLO)

        assert_error(outcome, case.error)
        assert_no_key_leaked(outcome)
        assert outcome.attempts_header == (str(case.attempts), EAST)
        assert gw.seen() == {EAST: 0 if refused else case.attempts, WEST: 0, SPARE: 0}
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert (record.status, record.error_code, record.provider) == ("error", case.code, EAST)
        assert record.tried == [(EAST, "error", case.code)] * case.attempts
        deadline = TIMEOUTS["timeout"]
        if case.at_deadline:
            assert deadline - 0.05 <= outcome.elapsed < deadline + SLACK
        else:
            assert outcome.elapsed < deadline + SLACK
        await assert_still_serving(gw, front)


@pytest.mark.parametrize("front", ALL_FRONTS, ids=[f.value for f in ALL_FRONTS])
async def test_a_429_beyond_retry_after_max_comes_back_at_once_with_its_retry_after(
    fakes: dict[str, FakeUpstream], front: Front
) -> None:
    fakes[EAST].script(Script(status=429, headers={"Retry-After": "30"}))
    async with chaos_gateway(fakes, chaos_settings(fakes)) as gw:
        outcome = await call(gw.running, front, SOLO)

    assert_error(outcome, "rate_limit_error")
    assert outcome.elapsed < SLACK
    if not front.grpc:
        assert outcome.headers["retry-after"] == "30"


@pytest.mark.parametrize("front", ALL_FRONTS, ids=[f.value for f in ALL_FRONTS])
async def test_a_burst_of_500s_is_retried_at_the_same_deployment_after_a_backoff(
    fakes: dict[str, FakeUpstream], front: Front
) -> None:
    fakes[EAST].script(Script(status=500), Script(status=500))
    async with chaos_gateway(fakes, chaos_settings(fakes)) as gw:
        outcome = await call(gw.running, front, SOLO)

        assert outcome.content == ANSWER
        assert outcome.attempts_header == ("3", EAST)
        assert gw.seen() == {EAST: 3, WEST: 0, SPARE: 0}
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert record.tried == [(EAST, "error", "upstream_unavailable")] * 2 + [(EAST, "completed", "")]
        await assert_still_serving(gw, front)


@pytest.mark.parametrize("front", [Front.REST, Front.GRPC_STREAM], ids=["rest", "grpc-stream"])
async def test_a_429_within_retry_after_max_is_tried_again_after_its_retry_after(
    fakes: dict[str, FakeUpstream], front: Front
) -> None:
    fakes[EAST].script(Script(status=429, headers={"Retry-After": "1"}))
    # The deadline must leave room for the wait.
    settings = chaos_settings(fakes, overrides={EAST: {"timeout": 3.0}})
    async with chaos_gateway(fakes, settings) as gw:
        outcome = await call(gw.running, front, SOLO)

        assert outcome.content == ANSWER
        assert outcome.attempts_header == ("2", EAST)
        assert 1.0 <= outcome.elapsed < 1.0 + SLACK
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert record.tried == [(EAST, "error", "rate_limit_exceeded"), (EAST, "completed", "")]


@pytest.mark.parametrize("front", ALL_FRONTS, ids=[f.value for f in ALL_FRONTS])
async def test_when_both_deployments_fail_the_fallback_model_answers_under_its_own_id(
    fakes: dict[str, FakeUpstream], front: Front
) -> None:
    fakes[EAST].script(Script(status=500))
    fakes[WEST].script(Script(status=503))
    settings = chaos_settings(fakes, model=alias(fallbacks=(FALLBACK,)))
    async with chaos_gateway(fakes, settings) as gw:
        outcome = await call(gw.running, front)

        assert (outcome.content, outcome.model) == (ANSWER, FALLBACK)
        assert outcome.attempts_header == ("3", SPARE)
        assert gw.seen() == {EAST: 1, WEST: 1, SPARE: 1}
        assert fakes[SPARE].requests[0].json["model"] == UPSTREAM_MODEL[SPARE]
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert record.tried == [
            (EAST, "error", "upstream_unavailable"),
            (WEST, "error", "upstream_unavailable"),
            (SPARE, "completed", ""),
        ]
        assert [a.model for a in record.attempts] == [ALIAS, ALIAS, FALLBACK]
        await assert_still_serving(gw, front)


# Failures after the first chunk: one error event and [DONE] (gRPC: the status), never another attempt.


@dataclass(frozen=True)
class Midstream:
    script: Script
    error: str
    code: str
    east: Json = field(default_factory=dict)


MIDSTREAMS = {
    "stall": Midstream(Script(hang_after_chunks=1), "timeout_error", "upstream_timeout"),
    "reset": Midstream(Script(reset_after_chunks=1), "upstream_error", "upstream_unavailable"),
    "error event": Midstream(Script(fail_after_chunks=1), "upstream_error", "upstream_unavailable"),
    "malformed SSE line": Midstream(
        Script(malformed_after_chunks=1), "upstream_error", "upstream_unavailable"
    ),
    "10 MB event": Midstream(
        Script(oversized_event=(1, 10_000_000)), "upstream_error", "upstream_unavailable", east=SMALL_ANSWERS
    ),
}
MIDSTREAM_CASES = [
    pytest.param(case, front, id=f"{name}-{front.value}")
    for name, case in MIDSTREAMS.items()
    for front in STREAM_FRONTS
]


@pytest.mark.parametrize(("case", "front"), MIDSTREAM_CASES)
async def test_a_failure_after_the_first_chunk_ends_the_stream_with_an_error_and_no_switch(
    fakes: dict[str, FakeUpstream], case: Midstream, front: Front
) -> None:
    fakes[EAST].script(replace(case.script))
    async with chaos_gateway(fakes, chaos_settings(fakes, overrides={EAST: case.east})) as gw:
        outcome = await call(gw.running, front)

        assert outcome.error is None, outcome
        assert outcome.content == wire.content_token(0)
        assert outcome.midstream == case.error
        assert outcome.ended  # REST: `data: [DONE]` came after the error event
        if front.grpc:
            assert outcome.status == STATUS_OF_TYPE[case.error][1]
            assert outcome.trailers["x-llmgw-attempts"] == "1"
        assert outcome.attempts_header == ("1", EAST)
        assert_no_key_leaked(outcome)
        assert gw.seen() == {EAST: 1, WEST: 0, SPARE: 0}
        record = await record_of(gw.running, outcome.generation_id, grpc=front.grpc)
        assert (record.status, record.error_code, record.provider) == ("error", case.code, EAST)
        assert record.tried == [(EAST, "error", case.code)]
        await assert_still_serving(gw, front)


# A client that leaves while the gateway waits to try again stops every later attempt.

LONG_BACKOFF = RetryPolicy(max_attempts=3, backoff=60.0, backoff_max=60.0, retry_after_max=10.0)


async def leave_during_the_wait(gw: Gateway, front: Front) -> None:
    """Send one request on `front` and drop it once east has answered its first attempt."""
    running = gw.running

    async def send() -> None:
        if front.grpc:
            request = grpc_request(SOLO)
            if front is Front.GRPC:
                await running.grpc.create_chat_completion(request)
            else:
                [_ async for _ in running.grpc.create_chat_completion_stream(request)]
            return
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{running.rest_url}/v1/chat/completions", json=chat_body(SOLO, stream=front.streamed)
            ) as response,
        ):
            await response.read()

    task = asyncio.create_task(send())
    async with asyncio.timeout(2.0):
        (first,) = await gw.fakes[EAST].wait_for_requests(1)
        await first.finished.wait()
    await asyncio.sleep(0.05)  # the gateway has the failure and waits
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@dataclass(frozen=True)
class Wait:
    script: Script
    code: str
    #: How long to watch the fake afterwards: past the Retry-After when the wait is known.
    watch: float


WAITS = {
    "backoff after a 503": Wait(Script(status=503), "upstream_unavailable", watch=0.5),
    "Retry-After of a 429": Wait(
        Script(status=429, headers={"Retry-After": "1"}), "rate_limit_exceeded", watch=1.3
    ),
}
WAIT_CASES = [
    pytest.param(case, front, id=f"{name}-{front.value}")
    for name, case in WAITS.items()
    for front in ALL_FRONTS
    if name.startswith("backoff") or front in (Front.REST, Front.GRPC_STREAM)
]


@pytest.mark.parametrize(("case", "front"), WAIT_CASES)
async def test_a_client_that_leaves_during_a_backoff_stops_every_later_attempt(
    fakes: dict[str, FakeUpstream], case: Wait, front: Front
) -> None:
    fakes[EAST].script(replace(case.script), replace(case.script))
    # A backoff of up to 60 s (full jitter: one shorter than the few ms the client takes to leave is
    # about one in a thousand) under a deadline that leaves room for it.
    settings = chaos_settings(fakes, retry=LONG_BACKOFF, overrides={EAST: {"timeout": 120.0}})
    async with chaos_gateway(fakes, settings) as gw:
        await leave_during_the_wait(gw, front)
        (record,) = await gw.store.wait_for(1)
        await asyncio.sleep(case.watch)

        assert gw.seen() == {EAST: 1, WEST: 0, SPARE: 0}
        found = await record_of(gw.running, record.id, grpc=front.grpc)
        assert (found.status, found.error_code) == ("cancelled", "cancelled")
        assert found.tried == [(EAST, "error", case.code)]
        await assert_still_serving(gw, front)
