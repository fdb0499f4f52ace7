"""Circuit breakers per deployment: when a sick deployment stops getting requests, when it is probed, when it
comes back; and the same through the gateway, with one of two deployments failing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from llmgw.application.circuits import Circuits, CircuitState
from llmgw.application.gateway import Gateway, RequestContext
from llmgw.application.retries import RetryPolicy
from llmgw.bootstrap import build_gateway
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.domain.chat import ChatRequest, parse_chat_request
from llmgw.domain.errors import (
    InvalidRequest,
    NotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgw.infrastructure.config.settings import NO_AUTH, Settings
from llmgw.infrastructure.rest.health import readiness_body
from tests.fakes.ports import FakeProvider, FakeStore, StreamScript, text_stream

SICK = Deployment("sick", "model-a")
WELL = Deployment("well", "model-b")
DOWN = UpstreamUnavailable("upstream answered 503", status=503)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def circuits(clock: Clock) -> Circuits:
    return Circuits(failures=5, cooldown=30.0, clock=clock, wall_clock=lambda: 1_700_000_000.0)


def fail(circuits: Circuits, deployment: Deployment, times: int, error: BaseException = DOWN) -> None:
    for _ in range(times):
        circuits.record(deployment, error)


def test_five_consecutive_failures_open_the_circuit_and_four_do_not(circuits: Circuits) -> None:
    fail(circuits, SICK, 4)
    assert circuits.is_available(SICK)

    fail(circuits, SICK, 1)

    assert circuits.state(SICK) is CircuitState.OPEN
    assert not circuits.is_available(SICK)
    assert circuits.is_available(WELL)


def test_a_success_in_between_starts_the_count_again(circuits: Circuits) -> None:
    fail(circuits, SICK, 4)
    circuits.record(SICK, None)
    fail(circuits, SICK, 4)

    assert circuits.state(SICK) is CircuitState.CLOSED


def test_timeouts_count_as_failures(circuits: Circuits) -> None:
    fail(circuits, SICK, 5, UpstreamTimeout("no answer in time"))

    assert circuits.state(SICK) is CircuitState.OPEN


@pytest.mark.parametrize(
    "error",
    [
        UpstreamRateLimited("429", retry_after=1.0),
        UpstreamRejected("400", status=400),
        InvalidRequest("bad request"),
        NotFound("no such model"),
        asyncio.CancelledError(),
    ],
    ids=["429", "400", "invalid", "not-found", "cancelled"],
)
def test_rate_limits_client_errors_and_cancellations_never_open_a_circuit(
    circuits: Circuits, error: BaseException
) -> None:
    fail(circuits, SICK, 20, error)

    assert circuits.state(SICK) is CircuitState.CLOSED
    assert circuits.is_available(SICK)


def test_after_the_cooldown_exactly_one_probe_may_go(circuits: Circuits, clock: Clock) -> None:
    fail(circuits, SICK, 5)
    clock.now += 29.9
    assert not circuits.is_available(SICK)
    assert not circuits.claim(SICK)

    clock.now += 0.1
    assert circuits.is_available(SICK)
    assert circuits.claim(SICK), "the first request after the cooldown is the probe"

    assert circuits.state(SICK) is CircuitState.HALF_OPEN
    assert not circuits.is_available(SICK), "no second request while the probe runs"
    assert not circuits.claim(SICK)


def test_a_probe_that_answers_closes_the_circuit(circuits: Circuits, clock: Clock) -> None:
    fail(circuits, SICK, 5)
    clock.now += 30
    probe = circuits.claim(SICK)

    circuits.record(SICK, None, probe=probe)

    assert circuits.state(SICK) is CircuitState.CLOSED
    assert circuits.is_available(SICK)
    fail(circuits, SICK, 4)
    assert circuits.state(SICK) is CircuitState.CLOSED, "a closed circuit counts from zero again"


def test_a_probe_that_fails_opens_the_circuit_for_another_cooldown(circuits: Circuits, clock: Clock) -> None:
    fail(circuits, SICK, 5)
    clock.now += 30
    probe = circuits.claim(SICK)

    circuits.record(SICK, DOWN, probe=probe)

    assert circuits.state(SICK) is CircuitState.OPEN
    clock.now += 29
    assert not circuits.is_available(SICK)
    clock.now += 1
    assert circuits.is_available(SICK)


def test_a_probe_cancelled_or_rate_limited_frees_the_slot_for_another(
    circuits: Circuits, clock: Clock
) -> None:
    fail(circuits, SICK, 5)
    clock.now += 30
    probe = circuits.claim(SICK)

    circuits.record(SICK, asyncio.CancelledError(), probe=probe)

    assert circuits.state(SICK) is CircuitState.HALF_OPEN
    assert circuits.is_available(SICK)
    assert circuits.claim(SICK)


def test_each_transition_is_logged_warning_on_open_info_otherwise(
    circuits: Circuits, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llmgw.application.circuits")

    fail(circuits, SICK, 5)
    clock.now += 30
    circuits.record(SICK, None, probe=circuits.claim(SICK))

    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO, logging.INFO]
    assert lines[0][1].startswith("circuit open: provider=sick upstream_model=model-a after 5 consecutive")
    assert lines[1][1].startswith("circuit half-open: provider=sick")
    assert lines[2][1].startswith("circuit closed: provider=sick")


def test_the_deployment_that_opened_first_is_named_and_views_list_open_ones(
    circuits: Circuits, clock: Clock
) -> None:
    fail(circuits, WELL, 5)
    clock.now += 1
    fail(circuits, SICK, 5)

    assert circuits.opened_first([SICK, WELL]) == WELL
    assert [(v.provider, v.state) for v in circuits.views()] == [
        ("well", CircuitState.OPEN),
        ("sick", CircuitState.OPEN),
    ]
    circuits.record(WELL, None)
    assert circuits.opened_first([SICK, WELL]) == WELL, "a closed deployment comes before any open one"
    assert [v.provider for v in circuits.views()] == ["sick"]


# Through the gateway

DUO = ModelSpec(id="duo", name="duo", deployments=(SICK, WELL), capabilities=frozenset({Capability.CHAT}))
SOLO = ModelSpec(
    id="solo",
    name="solo",
    provider="sick",
    upstream_model="model-s",
    capabilities=frozenset({Capability.CHAT}),
)


@pytest.fixture
def sick() -> FakeProvider:
    return FakeProvider("sick")


@pytest.fixture
def well() -> FakeProvider:
    return FakeProvider("well")


@pytest.fixture
async def gateway(sick: FakeProvider, well: FakeProvider) -> AsyncIterator[Gateway]:
    # One attempt per request: these tests watch the circuits alone (test_failover: with retries).
    settings = Settings(providers={}, models=(DUO, SOLO), retry=RetryPolicy(max_attempts=1), auth=NO_AUTH)
    async with build_gateway(settings, store=FakeStore(), providers={"sick": sick, "well": well}) as gateway:
        yield gateway


def chat(model: str = "duo", *, stream: bool = False) -> ChatRequest:
    return parse_chat_request(
        {"model": model, "messages": [{"role": "user", "content": "hi"}]}, stream=stream
    )


def ctx() -> RequestContext:
    return RequestContext(request_id="req-circuits")


async def test_a_failing_deployment_is_left_out_once_its_circuit_opens(
    gateway: Gateway, sick: FakeProvider, well: FakeProvider
) -> None:
    for _ in range(5):
        sick.will_answer(DOWN)
    errors = 0
    for _ in range(200):
        if len(sick.calls) == 5:
            break
        try:
            await gateway.create_chat_completion(chat(), ctx())
        except UpstreamUnavailable:
            errors += 1
    assert errors == 5, "without retries each failure before the circuit opens reaches the client"

    for _ in range(20):
        await gateway.create_chat_completion(chat(), ctx())

    assert len(sick.calls) == 5
    body = readiness_body(await gateway.readiness())
    assert body["status"] == "ready"
    assert [(c["provider"], c["upstream_model"], c["state"]) for c in body["circuits"]] == [
        ("sick", "model-a", "open")
    ]
    assert isinstance(body["circuits"][0]["opened_at"], float)


async def test_when_every_deployment_is_open_the_one_that_opened_first_is_tried(
    gateway: Gateway, sick: FakeProvider, well: FakeProvider
) -> None:
    for _ in range(5):
        sick.will_answer(DOWN)
    while len(sick.calls) < 5:
        with contextlib.suppress(UpstreamUnavailable):
            await gateway.create_chat_completion(chat(), ctx())
    for _ in range(5):
        well.will_answer(DOWN)
    for _ in range(5):
        with pytest.raises(UpstreamUnavailable):
            await gateway.create_chat_completion(chat(), ctx())
    assert [c["provider"] for c in readiness_body(await gateway.readiness())["circuits"]] == ["sick", "well"]
    calls = len(sick.calls), len(well.calls)

    await gateway.create_chat_completion(chat(), ctx())

    assert (len(sick.calls), len(well.calls)) == (calls[0] + 1, calls[1])
    assert [c["provider"] for c in readiness_body(await gateway.readiness())["circuits"]] == ["well"]


@pytest.mark.parametrize("error_after", [0, 1], ids=["before-first-chunk", "mid-stream"])
async def test_a_stream_failing_before_or_after_its_first_chunk_counts_once_as_a_failure(
    gateway: Gateway, sick: FakeProvider, error_after: int
) -> None:
    for attempt in range(5):
        assert readiness_body(await gateway.readiness())["circuits"] == [], f"open after {attempt}"
        sick.will_stream(StreamScript(text_stream("a", "b"), error=DOWN, error_after=error_after))
        stream = gateway.stream_chat_completion(chat("solo", stream=True), ctx())
        with pytest.raises(UpstreamUnavailable):
            async for _ in stream:
                pass

    assert [c["state"] for c in readiness_body(await gateway.readiness())["circuits"]] == ["open"]


async def test_rate_limited_answers_never_open_a_deployments_circuit(
    gateway: Gateway, sick: FakeProvider
) -> None:
    for _ in range(8):
        sick.will_answer(UpstreamRateLimited("slow down", retry_after=1.0))
        with pytest.raises(UpstreamRateLimited):
            await gateway.create_chat_completion(chat("solo"), ctx())

    assert readiness_body(await gateway.readiness())["circuits"] == []
