"""The limit store (Redis) out of reach through a real gateway (issue 15, point 3): `limits.on_store_error`
(budgets, closed by default) and `limits.on_store_error_rates` (rpm, tpm, max_parallel, open by default)
decide what limited requests meet, and `/readyz` shows the limits down without making the gateway unready.

Keys on need Redis at start-up (key revocations subscribe there), so a Redis URL where nothing listens is
tried with the model limits of a keyless gateway, and keys' limits through a loopback proxy to the test
Redis that the test cuts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from grpclib import GRPCError, Status

from llmgw.application.limits import OnStoreError
from llmgw.domain.limits import Limits
from llmgw.infrastructure.grpc.messages import v1
from tests.auth_setup import ADMIN_KEY, authed_gateway, bearer, new_key
from tests.fakes.cut_proxy import CutProxy
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, free_port, running_gateway
from tests.integration.test_limits_gateway import (
    PRICED,
    REDIS_URL,
    REDIS_URL_VARIABLE,
    UNPRICED,
    chat,
    limited_settings,
)

ALSO_UNPRICED = "local/no-price"
#: A budget on the priced model, one on an unpriced model, and a rate alone on another.
MODEL_LIMITS = {
    PRICED: Limits(budget_usd=1.0),
    ALSO_UNPRICED: Limits(budget_usd=1.0),
    UNPRICED: Limits(rpm=5),
}


def nowhere() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def readyz(gw: Running, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"{gw.health_url}/readyz", headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_with_redis_away_budgets_fail_closed_and_rates_open_by_default(
    fakes: dict[str, FakeUpstream],
) -> None:
    async with running_gateway(limited_settings(fakes, redis_url=nowhere(), models=MODEL_LIMITS)) as gw:
        budgeted = await chat(gw, None, PRICED)
        rated = await chat(gw, None, UNPRICED)
        unpriced_budget = await chat(gw, None, ALSO_UNPRICED)
        with pytest.raises(GRPCError) as caught:
            await gw.grpc.create_chat_completion(
                v1.CreateChatCompletionRequest(
                    model=PRICED, messages=[v1.ChatMessage(role="user", content="hi")], max_tokens=10
                ),
                timeout=5,
            )
        status, ready = await readyz(gw)

    assert budgeted.status == 503
    assert budgeted.code == "limits_unavailable"
    assert fakes["dashscope"].requests == [], "a request refused for want of its budget never went upstream"
    assert caught.value.status is Status.UNAVAILABLE
    assert rated.status == 200, "rates fail open: the request passes uncounted"
    assert unpriced_budget.status == 200, "an unpriced model asks nothing of a budget, store or no store"
    assert status == 200, "limits down do not make the gateway unready"
    assert ready["limits"] == {"state": "down"}


async def test_with_rates_closed_a_rate_limited_request_is_refused_while_redis_is_away(
    fakes: dict[str, FakeUpstream],
) -> None:
    settings = limited_settings(
        fakes, redis_url=nowhere(), models=MODEL_LIMITS, on_store_error_rates=OnStoreError.CLOSED
    )
    async with running_gateway(settings) as gw:
        rated = await chat(gw, None, UNPRICED)

    assert rated.status == 503
    assert rated.code == "limits_unavailable"
    assert fakes["local"].requests == []


async def test_with_budgets_open_a_budgeted_request_passes_uncounted_while_redis_is_away(
    fakes: dict[str, FakeUpstream],
) -> None:
    settings = limited_settings(
        fakes, redis_url=nowhere(), models=MODEL_LIMITS, on_store_error=OnStoreError.OPEN
    )
    async with running_gateway(settings) as gw:
        budgeted = await chat(gw, None, PRICED)

    assert budgeted.status == 200


async def test_a_gateway_without_redis_shows_its_limits_up(fakes: dict[str, FakeUpstream]) -> None:
    async with running_gateway(limited_settings(fakes, models=MODEL_LIMITS)) as gw:
        status, ready = await readyz(gw)

    assert status == 200
    assert ready["limits"] == {"state": "up"}


@pytest.fixture
async def redis_proxy() -> AsyncIterator[CutProxy]:
    if not REDIS_URL:
        pytest.skip(f"{REDIS_URL_VARIABLE} is not set: cutting Redis off needs a Redis server behind a proxy")
    target = urlsplit(REDIS_URL)
    async with CutProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        yield proxy


@pytest.mark.parametrize("rates", ["open", "closed"])
async def test_keys_meet_on_store_error_once_redis_is_cut_off(
    fakes: dict[str, FakeUpstream], redis_proxy: CutProxy, rates: str
) -> None:
    settings = limited_settings(
        fakes, redis_url=redis_proxy.url_via(REDIS_URL), on_store_error_rates=OnStoreError(rates)
    )
    async with authed_gateway(fakes, settings=settings) as authed:
        budgeted = await new_key(authed.gw, budget_usd=5, budget_period="day")
        rated = await new_key(authed.gw, rpm=60)
        unlimited = await new_key(authed.gw)
        before = await chat(authed.gw, budgeted.text, PRICED)
        status_before, ready_before = await readyz(authed.gw, bearer(ADMIN_KEY))

        await redis_proxy.cut()
        budget_refused = await chat(authed.gw, budgeted.text, PRICED)
        rate_answer = await chat(authed.gw, rated.text)
        free = await chat(authed.gw, unlimited.text)
        status_after, ready_after = await readyz(authed.gw, bearer(ADMIN_KEY))
        await authed.gw.gateway.settled()

    assert before.status == 200
    assert ready_before["limits"] == {"state": "up"}
    assert budget_refused.status == 503
    assert budget_refused.code == "limits_unavailable"
    if rates == "open":
        assert rate_answer.status == 200
        assert rate_answer.limits == {}, "let through uncounted: no counts to show"
    else:
        assert rate_answer.status == 503
        assert rate_answer.code == "limits_unavailable"
    assert free.status == 200, "a key without limits never asks the limit store"
    assert (status_before, status_after) == (200, 200)
    assert ready_after["limits"] == {"state": "down"}
