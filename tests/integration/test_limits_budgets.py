"""USD budgets through a real gateway (issue 15, points 2, 4 and 5): a priced request reserves its estimate
up front, pays its real cost once it ends, is refused before the upstream when what is left cannot pay its
max_tokens, and a stream that started is never cut; in memory and, with `LLMGW_TEST_REDIS_URL`, in Redis."""

from __future__ import annotations

import io
import math
import time
from dataclasses import replace

import aiohttp
import pytest

from llmgw.domain.limits import Period
from llmgw.infrastructure.config.settings import LogFormat
from tests.auth_setup import authed_gateway, bearer, new_key
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import free_port
from tests.integration.test_limits_gateway import (
    PRICED,
    UNPRICED,
    chat,
    chat_body,
    limited_gateway,
    limited_settings,
    redis_url,
)
from tests.log_capture import capture, logged

#: `redis_url` is the store fixture, shared with the rate tests: exported so that it is not an unused import.
__all__ = ["redis_url"]

REMAINING = "x-llmgw-budget-remaining-usd"
SOFT = "x-llmgw-budget-soft-exceeded"
# Priced at PRICING with "hi" (1 + 4 prompt tokens): max_tokens 10 reserves 5 * 1000 + 10 * 2000 micro-USD.
ESTIMATE_10 = 0.025
# The fake answers 10 prompt and 3 completion tokens: 10 * 1000 + 3 * 2000 micro-USD.
ACTUAL = 0.016
#: A priced model whose fake upstream answers (the catalog's price: $2.5 and $10 per million tokens).
ANSWERING_PRICED = "openrouter/openai/gpt-4o"


def usd(header: str) -> float:
    return round(float(header), 6)


async def test_a_budget_pays_for_each_request_its_actual_cost_once_settled(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, budget_usd=1, budget_period="day")

        first = await chat(authed.gw, key.text, PRICED)
        await authed.gw.gateway.settled()
        second = await chat(authed.gw, key.text, PRICED)
        await authed.gw.gateway.settled()
        third = await chat(authed.gw, key.text, PRICED)

    assert [a.status for a in (first, second, third)] == [200, 200, 200]
    # Each answer shows what is left with its own estimate still reserved.
    assert usd(first.limits[REMAINING]) == pytest.approx(1 - ESTIMATE_10)
    assert usd(second.limits[REMAINING]) == pytest.approx(1 - ACTUAL - ESTIMATE_10)
    assert usd(third.limits[REMAINING]) == pytest.approx(1 - 2 * ACTUAL - ESTIMATE_10)
    assert SOFT not in first.limits


async def test_a_request_the_remaining_budget_cannot_pay_is_refused_up_front_saying_what_is_left(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, budget_usd=0.03, budget_period="day")

        paid = await chat(authed.gw, key.text, PRICED)
        await authed.gw.gateway.settled()  # $0.03 - $0.016 = $0.014 left
        refused = await chat(authed.gw, key.text, PRICED)  # may cost $0.025
        _, day_ends = Period.DAY.bounds(time.time())
        expected_retry = math.ceil(day_ends - time.time())
        smaller = await chat(authed.gw, key.text, PRICED, max_tokens=2)  # $0.009

    assert paid.status == 200
    assert refused.status == 429
    assert refused.code == "budget_exceeded"
    assert "$0.014 left" in refused.message
    assert "$0.03 per day" in refused.message
    assert abs(int(refused.headers["Retry-After"]) - expected_retry) <= 2
    assert usd(refused.limits[REMAINING]) == pytest.approx(0.014)
    assert smaller.status == 200, "the refusal did not lower max_tokens: a request that fits still passes"
    assert len(fakes["dashscope"].requests) == 2, "the refused request never reached the upstream"


async def test_a_lifetime_budget_refusal_says_it_does_not_renew_and_gives_no_retry_after(
    fakes: dict[str, FakeUpstream],
) -> None:
    async with limited_gateway(fakes) as authed:
        key = await new_key(authed.gw, budget_usd=0.02)
        refused = await chat(authed.gw, key.text, PRICED)

    assert refused.status == 429
    assert refused.code == "budget_exceeded"
    assert "$0.02 left" in refused.message
    assert "does not renew" in refused.message
    assert "Retry-After" not in refused.headers
    assert fakes["dashscope"].requests == []


async def test_a_started_stream_is_never_cut_and_pays_its_real_cost_when_it_ends(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    # The upstream reports 10 + 100 tokens: $0.21, far above the $0.025 reserved and the $0.04 budget.
    expensive = {"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110}
    fakes["dashscope"].script(Script(chunks=4, chunk_delay=0.1, usage=expensive))
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, budget_usd=0.04, budget_period="day")
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                f"{authed.gw.rest_url}/v1/chat/completions",
                headers=bearer(key.text),
                json=chat_body(PRICED, stream=True),
            ) as stream,
        ):
            assert stream.status == 200
            assert usd(stream.headers[REMAINING]) == pytest.approx(0.04 - ESTIMATE_10)
            await stream.content.readline()
            # While it runs its reservation holds: $0.015 left cannot pay another $0.025.
            meanwhile = await chat(authed.gw, key.text, PRICED)
            text = await stream.text()
        await authed.gw.gateway.settled()
        after = await chat(authed.gw, key.text, PRICED, max_tokens=1)

    assert meanwhile.status == 429
    assert meanwhile.code == "budget_exceeded"
    assert "$0.015 left" in meanwhile.message
    assert text.count("tok") == 3, "every chunk after the first arrived"
    assert text.rstrip().endswith("data: [DONE]"), "the stream ran to its end"
    # Charged $0.21 (its real cost), not the $0.025 estimate: nothing is left.
    assert after.status == 429
    assert after.code == "budget_exceeded"
    assert "$0.00 left" in after.message
    assert usd(after.limits[REMAINING]) == 0


async def test_a_stream_the_upstream_cuts_pays_for_what_arrived_to_the_micro_dollar(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    fakes["dashscope"].script(Script(chunks=5, reset_after_chunks=2))
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, budget_usd=1, budget_period="day")
        cut = await chat(authed.gw, key.text, PRICED, stream=True)
        await authed.gw.gateway.settled()
        record = await authed.gw.gateway.recorder.get(cut.headers["x-generation-id"])
        after = await chat(authed.gw, key.text, PRICED)

    assert cut.status == 200
    assert '"error"' in cut.text, "the client was told its stream was cut"
    assert record is not None
    assert record.cost_usd is not None
    assert record.cost_usd > 0, "two chunks of generated text arrived"
    # What the budget was charged is the record's cost, to the micro-dollar.
    assert usd(after.limits[REMAINING]) == pytest.approx(1 - round(record.cost_usd, 6) - ESTIMATE_10)


async def test_a_model_without_pricing_is_never_refused_by_a_budget(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, budget_usd=0.000001, budget_period="month")
        answers = [await chat(authed.gw, key.text, UNPRICED, max_tokens=100_000) for _ in range(3)]
        await authed.gw.gateway.settled()
        priced = await chat(authed.gw, key.text, PRICED)

    assert [a.status for a in answers] == [200, 200, 200]
    assert all(usd(a.limits[REMAINING]) == pytest.approx(0.000001) for a in answers)
    assert priced.status == 429
    assert priced.code == "budget_exceeded"


async def test_a_soft_budget_only_warns_with_a_header_once_passed(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, budget_usd=1, soft_budget_usd=0.03, budget_period="week")

        under = await chat(authed.gw, key.text, PRICED)  # $0.025 reserved: under $0.03
        await authed.gw.gateway.settled()
        over = await chat(authed.gw, key.text, PRICED)  # $0.016 spent + $0.025 reserved
        await authed.gw.gateway.settled()
        still = await chat(authed.gw, key.text, PRICED)

    assert under.status == 200
    assert SOFT not in under.limits
    assert over.status == 200
    assert over.limits[SOFT] == "true"
    assert still.status == 200
    assert still.limits[SOFT] == "true"


async def test_passing_a_soft_budget_is_logged(
    fakes: dict[str, FakeUpstream], log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.TEXT)
    async with limited_gateway(fakes) as authed:
        key = await new_key(authed.gw, soft_budget_usd=0.01)
        answer = await chat(authed.gw, key.text, PRICED)
        await authed.gw.gateway.settled()

    assert answer.status == 200
    assert answer.limits[SOFT] == "true"
    assert "soft budget" in logged(log_buffer).lower()


async def test_a_request_that_never_gets_an_upstream_answer_gives_its_reservation_back(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    # The priced model's provider points at a port where nothing listens: every attempt fails to connect.
    settings = limited_settings(fakes, redis_url=redis_url)
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    providers = dict(settings.providers)
    providers["dashscope"] = replace(providers["dashscope"], base_url=nowhere)
    async with authed_gateway(fakes, settings=replace(settings, providers=providers)) as authed:
        # Room for one $0.025 reservation and one 15-token one at a time.
        key = await new_key(authed.gw, budget_usd=0.03, budget_period="day", tpm=20)
        failed = []
        for _ in range(3):
            failed.append(await chat(authed.gw, key.text, PRICED, max_tokens=10))
            await authed.gw.gateway.settled()
        # Another priced model on the same key, whose upstream answers: $0.000112 (5 * 2.5 + 10 * 10
        # micro-USD, rounded) and 15 tokens reserved.
        check = await chat(authed.gw, key.text, ANSWERING_PRICED, max_tokens=10)

    codes = {a.code for a in failed}
    assert all(a.status >= 500 for a in failed), [a.text for a in failed]
    assert codes.isdisjoint({"budget_exceeded", "rate_limit_exceeded"}), codes
    # Still the whole budget and the whole minute's tokens: nothing was spent, nothing stays reserved.
    assert check.status == 200, check.text
    assert usd(check.limits[REMAINING]) == pytest.approx(0.03 - 0.000112)
    assert check.limits["x-ratelimit-remaining-tokens"] == "5"
