"""Rate limits through a real gateway (issue 15): rpm, tpm and max_parallel on keys, teams, models and the
whole gateway, admitted before the upstream and answered with OpenAI's rate-limit headers over REST and
gRPC; in this process's memory and, with `LLMGW_TEST_REDIS_URL`, in Redis. Budgets and an unreachable
limit store have files of their own (test_limits_budgets.py, test_limits_store_errors.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from grpclib import GRPCError, Status
from grpclib.const import Cardinality
from multidict import CIMultiDict

from llmgw.domain.catalog import Pricing
from llmgw.domain.limits import NO_LIMITS, Limits
from llmgw.infrastructure.config.settings import CacheSettings, LimitsSettings, Settings
from llmgw.infrastructure.grpc.messages import v1
from tests.auth_setup import ADMIN_KEY, Authed, authed_gateway, bearer, call, new_key, new_team
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, running_gateway, settings_for

REDIS_URL_VARIABLE = "LLMGW_TEST_REDIS_URL"
REDIS_URL = os.environ.get(REDIS_URL_VARIABLE, "")
UNPRICED = "local/llama"
PRICED = "dashscope/qwen-turbo"
#: 1000 micro-USD a prompt token, 2000 a completion token: the fake's answer (10 + 3 tokens) costs $0.016.
PRICING = Pricing(prompt=1000.0, completion=2000.0)
CHAT_PATH = "/llmgateway.v1.LLMGatewayService/CreateChatCompletion"
STREAM_PATH = "/llmgateway.v1.LLMGatewayService/CreateChatCompletionStream"
LIMIT_HEADER_PREFIXES = ("x-ratelimit-", "x-llmgw-budget-")


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """The limit store under test: "" (this process's memory) or the test Redis."""
    if request.param == "memory":
        return ""
    if not REDIS_URL:
        pytest.skip(f"{REDIS_URL_VARIABLE} is not set: the Redis limit store needs a Redis server")
    return REDIS_URL


def limited_settings(
    fakes: Mapping[str, FakeUpstream],
    *,
    redis_url: str = "",
    models: Mapping[str, Limits] | None = None,
    gateway: Limits = NO_LIMITS,
    **limits: Any,
) -> Settings:
    """`settings_for(fakes)` with the priced model at PRICING, `models` given limits, the gateway-wide
    limits and `[limits]` settings, counters in Redis when `redis_url` is given."""
    base = settings_for(fakes)
    model_limits = models or {}
    catalog = tuple(
        replace(
            model,
            pricing=PRICING if model.id == PRICED else model.pricing,
            limits=model_limits.get(model.id, model.limits),
        )
        for model in base.models
    )
    return replace(
        base,
        models=catalog,
        cache=CacheSettings(redis_url=redis_url),
        limits=LimitsSettings(gateway=gateway, **limits),
    )


@asynccontextmanager
async def limited_gateway(
    fakes: Mapping[str, FakeUpstream], *, cache_ttl: float = 5.0, **settings: Any
) -> AsyncIterator[Authed]:
    async with authed_gateway(fakes, cache_ttl=cache_ttl, settings=limited_settings(fakes, **settings)) as a:
        yield a


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def code(self) -> str | None:
        error = self.json.get("error") if self.status >= 400 else None
        return None if error is None else str(error.get("code"))

    @property
    def message(self) -> str:
        return str(self.json["error"]["message"])

    @property
    def limits(self) -> dict[str, str]:
        """The rate-limit and budget headers, names in lower case."""
        return {
            name.lower(): value
            for name, value in self.headers.items()
            if name.lower().startswith(LIMIT_HEADER_PREFIXES)
        }


def chat_body(model: str = UNPRICED, *, max_tokens: int | None = 10, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def post(gw: Running, path: str, key: str | None, body: Mapping[str, Any]) -> Answer:
    headers = bearer(key) if key is not None else {}
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{gw.rest_url}{path}", headers=headers, json=dict(body)) as response,
    ):
        return Answer(response.status, CIMultiDict(response.headers), await response.text())


async def chat(
    gw: Running, key: str | None, model: str = UNPRICED, *, max_tokens: int | None = 10, **extra: Any
) -> Answer:
    return await post(gw, "/v1/chat/completions", key, chat_body(model, max_tokens=max_tokens, **extra))


def rate_headers(limit: int, remaining: int) -> dict[str, str]:
    return {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining)}


def requests_part(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")}


def grpc_chat(model: str = UNPRICED, max_tokens: int = 10) -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(
        model=model, messages=[v1.ChatMessage(role="user", content="hi")], max_tokens=max_tokens
    )


async def grpc_unary(gw: Running, key: str) -> tuple[dict[str, str], dict[str, str]]:
    """A chat over gRPC that must succeed: its initial metadata and trailers."""
    async with gw.channel.request(
        CHAT_PATH,
        Cardinality.UNARY_UNARY,
        v1.CreateChatCompletionRequest,
        v1.ChatCompletion,
        metadata={"authorization": f"Bearer {key}"},
        timeout=5,
    ) as stream:
        await stream.send_message(grpc_chat(), end=True)
        reply = await stream.recv_message()
        assert reply is not None
        assert reply.choices
        await stream.recv_trailing_metadata()
    assert stream.initial_metadata is not None
    assert stream.trailing_metadata is not None
    return text_metadata(stream.initial_metadata), text_metadata(stream.trailing_metadata)


async def grpc_stream(gw: Running, key: str) -> dict[str, str]:
    """A streamed chat over gRPC that must succeed: its initial metadata."""
    async with gw.channel.request(
        STREAM_PATH,
        Cardinality.UNARY_STREAM,
        v1.CreateChatCompletionRequest,
        v1.ChatCompletionChunk,
        metadata={"authorization": f"Bearer {key}"},
        timeout=5,
    ) as stream:
        await stream.send_message(grpc_chat(), end=True)
        chunks = [chunk async for chunk in stream]
        assert chunks
    assert stream.initial_metadata is not None
    return text_metadata(stream.initial_metadata)


async def grpc_refused(gw: Running, key: str, *, streamed: bool = False) -> tuple[GRPCError, dict[str, str]]:
    path, reply = (STREAM_PATH, v1.ChatCompletionChunk) if streamed else (CHAT_PATH, v1.ChatCompletion)
    cardinality = Cardinality.UNARY_STREAM if streamed else Cardinality.UNARY_UNARY
    async with gw.channel.request(
        path, cardinality, v1.CreateChatCompletionRequest, reply, metadata=bearer_md(key), timeout=5
    ) as stream:
        await stream.send_message(grpc_chat(), end=True)
        with pytest.raises(GRPCError) as caught:
            await stream.recv_message()
    assert stream.trailing_metadata is not None
    return caught.value, text_metadata(stream.trailing_metadata)


def text_metadata(metadata: Mapping[str, str | bytes]) -> dict[str, str]:
    return {name: value if isinstance(value, str) else value.decode() for name, value in metadata.items()}


def bearer_md(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def limit_names(metadata: Mapping[str, str]) -> set[str]:
    return {name for name in metadata if name.lower().startswith(LIMIT_HEADER_PREFIXES)}


async def test_a_key_with_rpm_3_passes_three_requests_with_the_headers_and_refuses_the_fourth(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, rpm=3)

        answers = [await chat(authed.gw, key.text) for _ in range(3)]
        refused = await chat(authed.gw, key.text)

    assert [a.status for a in answers] == [200, 200, 200]
    assert [requests_part(a.limits) for a in answers] == [rate_headers(3, n) for n in (2, 1, 0)]
    # Each request moves the window's end 20 s (60 s / 3) further: the third fills the minute.
    resets = [float(a.limits["x-ratelimit-reset-requests"].removesuffix("s")) for a in answers]
    assert resets == pytest.approx([20, 40, 60], abs=1)
    assert refused.status == 429
    assert refused.code == "rate_limit_exceeded"
    assert "3 requests per minute" in refused.message
    # Three in a burst used the minute: the next slot frees 20 s (60 s / 3) from now.
    assert 18 <= int(refused.headers["Retry-After"]) <= 20
    assert requests_part(refused.limits) == rate_headers(3, 0)
    assert refused.limits["x-ratelimit-reset-requests"].endswith("s")
    assert len(fakes["local"].requests) == 3, "the refused request never reached the upstream"


async def test_an_upstream_error_answered_to_a_limited_key_carries_the_headers_too(
    fakes: dict[str, FakeUpstream],
) -> None:
    fakes["local"].script(Script(status=500), Script(status=500))
    async with limited_gateway(fakes) as authed:
        key = await new_key(authed.gw, rpm=3)
        failed = await chat(authed.gw, key.text)
        error, trailers = await grpc_refused(authed.gw, key.text)

    assert failed.status >= 500
    assert error.status is not Status.RESOURCE_EXHAUSTED
    shown = {
        "rest": failed.limits.get("x-ratelimit-remaining-requests"),
        "grpc": trailers.get("x-ratelimit-remaining-requests"),
    }
    assert shown == {"rest": "2", "grpc": "1"}


async def test_a_key_without_limits_gets_no_rate_limit_headers(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw)
        answer = await chat(authed.gw, key.text)
        streamed = await chat(authed.gw, key.text, stream=True)
        initial, trailers = await grpc_unary(authed.gw, key.text)

    assert answer.status == 200
    assert streamed.status == 200
    assert answer.limits == {}
    assert streamed.limits == {}
    assert limit_names(initial) == set()
    assert limit_names(trailers) == set()


async def test_grpc_answers_carry_the_headers_in_initial_metadata_and_refusals_in_trailers(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, rpm=3)

        unary, _ = await grpc_unary(authed.gw, key.text)
        streamed = await grpc_stream(authed.gw, key.text)
        last, _ = await grpc_unary(authed.gw, key.text)
        refused, trailers = await grpc_refused(authed.gw, key.text)
        refused_stream, stream_trailers = await grpc_refused(authed.gw, key.text, streamed=True)

    assert [requests_part(m) for m in (unary, streamed, last)] == [rate_headers(3, n) for n in (2, 1, 0)]
    for error, metadata in ((refused, trailers), (refused_stream, stream_trailers)):
        assert error.status is Status.RESOURCE_EXHAUSTED
        assert metadata["x-llmgw-error-code"] == "rate_limit_exceeded"
        assert 18 <= int(metadata["retry-after"]) <= 20
        assert requests_part(metadata) == rate_headers(3, 0)
        assert metadata["x-ratelimit-reset-requests"].endswith("s")
    assert len(fakes["local"].requests) == 3


async def test_tpm_reserves_the_prompt_estimate_plus_max_tokens_and_settles_to_the_real_tokens(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    # "hi" in one message: 1 + 4 tokens; with max_tokens 40, 45 tokens reserved (0.6 s each at 100 tpm).
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, tpm=100)

        first = await chat(authed.gw, key.text, max_tokens=40)
        await authed.gw.gateway.settled()  # the fake used 13 tokens: 32 of the 45 come back
        second = await chat(authed.gw, key.text, max_tokens=None, max_completion_tokens=40)
        await authed.gw.gateway.settled()
        too_big = await chat(authed.gw, key.text, max_tokens=1000)
        # 85 tokens: within the tpm, but only 100 - 13 - 13 = 74 are left this minute.
        over_what_is_left = await chat(authed.gw, key.text, max_tokens=80)

    assert first.status == 200
    assert second.status == 200
    assert first.limits["x-ratelimit-limit-tokens"] == "100"
    assert first.limits["x-ratelimit-remaining-tokens"] == "55"
    # 100 - 13 (the first, settled) - 45 (the second, reserved) = 42
    assert 42 <= int(second.limits["x-ratelimit-remaining-tokens"]) <= 43
    assert "x-ratelimit-limit-requests" not in first.limits
    assert too_big.status == 429
    assert too_big.code == "rate_limit_exceeded"
    assert "alone asks for more than the 100 tokens per minute" in too_big.message
    assert over_what_is_left.status == 429
    assert over_what_is_left.code == "rate_limit_exceeded"
    assert 1 <= int(over_what_is_left.headers["Retry-After"]) <= 60
    assert over_what_is_left.limits["x-ratelimit-limit-tokens"] == "100"
    assert len(fakes["local"].requests) == 2


async def test_max_parallel_refuses_a_second_request_while_a_slow_stream_holds_the_only_slot(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    fakes["local"].script(Script(chunks=3, chunk_delay=0.3))
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        key = await new_key(authed.gw, max_parallel=1)
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                f"{authed.gw.rest_url}/v1/chat/completions",
                headers=bearer(key.text),
                json=chat_body(stream=True),
            ) as slow,
        ):
            assert slow.status == 200
            first_line = await slow.content.readline()
            assert first_line.startswith(b"data: ")
            refused = await chat(authed.gw, key.text)
            rest = await slow.text()
        await authed.gw.gateway.settled()
        after = await chat(authed.gw, key.text)

    assert refused.status == 429
    assert refused.code == "rate_limit_exceeded"
    assert "1 at once" in refused.message
    assert refused.headers["Retry-After"] == "1"
    assert rest.rstrip().endswith("data: [DONE]"), "the slow stream was not cut"
    assert after.status == 200
    assert len(fakes["local"].requests) == 2


async def test_embeddings_count_requests_and_prompt_tokens_but_no_completion_estimate(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url, default_max_tokens=4096) as authed:
        key = await new_key(authed.gw, rpm=5, tpm=100)
        body = {"model": "local/embed", "input": "x" * 40}  # 10 tokens

        embedded = await post(authed.gw, "/v1/embeddings", key.text, body)
        # A chat without max_tokens reserves default_max_tokens: alone above the key's tpm.
        chat_refused = await chat(authed.gw, key.text, max_tokens=None)

    assert embedded.status == 200
    assert requests_part(embedded.limits) == rate_headers(5, 4)
    assert embedded.limits["x-ratelimit-remaining-tokens"] == "90"
    assert chat_refused.status == 429
    assert chat_refused.code == "rate_limit_exceeded"
    assert "alone asks for more than the 100 tokens" in chat_refused.message


async def test_a_team_limit_applies_to_every_key_of_the_team(
    fakes: dict[str, FakeUpstream], redis_url: str
) -> None:
    async with limited_gateway(fakes, redis_url=redis_url) as authed:
        team = await admin_create_team(authed.gw, rpm=2)
        one = await new_key(authed.gw, team_id=team)
        other = await new_key(authed.gw, team_id=team)
        outsider = await new_key(authed.gw)

        first = await chat(authed.gw, one.text)
        second = await chat(authed.gw, other.text)
        refused = await chat(authed.gw, one.text)
        outside = await chat(authed.gw, outsider.text)

    assert requests_part(first.limits) == rate_headers(2, 1)
    assert requests_part(second.limits) == rate_headers(2, 0)
    assert refused.status == 429
    assert refused.code == "rate_limit_exceeded"
    assert "this key's team allows 2 requests per minute" in refused.message
    assert requests_part(refused.limits) == rate_headers(2, 0)
    assert outside.status == 200
    assert outside.limits == {}


async def test_a_team_limit_set_later_reaches_its_keys_within_the_cache_ttl(
    fakes: dict[str, FakeUpstream],
) -> None:
    async with limited_gateway(fakes, cache_ttl=0.2) as authed:
        team = await new_team(authed.gw)
        one = await new_key(authed.gw, team_id=team)
        other = await new_key(authed.gw, team_id=team)
        before = await chat(authed.gw, one.text)

        status, _ = await call(
            authed.gw, "PATCH", f"/admin/v1/teams/{team}", headers=bearer(ADMIN_KEY), json={"rpm": 1}
        )
        assert status == 200
        await asyncio.sleep(0.3)
        first = await chat(authed.gw, one.text)
        refused = await chat(authed.gw, other.text)

    assert before.status == 200
    assert before.limits == {}
    assert first.status == 200
    assert requests_part(first.limits) == rate_headers(1, 0)
    assert refused.status == 429
    assert refused.code == "rate_limit_exceeded"


async def admin_create_team(gw: Running, **fields: Any) -> str:
    status, answer = await call(
        gw, "POST", "/admin/v1/teams", headers=bearer(ADMIN_KEY), json={"name": "limited", **fields}
    )
    assert status == 200, answer
    return str(answer["id"])


async def test_a_model_limit_from_config_applies_to_every_caller(fakes: dict[str, FakeUpstream]) -> None:
    async with limited_gateway(fakes, models={UNPRICED: Limits(rpm=2)}) as authed:
        one = await new_key(authed.gw)
        other = await new_key(authed.gw, rpm=100)

        first = await chat(authed.gw, one.text)
        second = await chat(authed.gw, other.text)
        refused = await chat(authed.gw, one.text)
        other_model = await chat(authed.gw, one.text, "local/no-price")

    assert requests_part(first.limits) == rate_headers(2, 1)
    # The tightest scope speaks: the model's 0 left, not the key's 99.
    assert requests_part(second.limits) == rate_headers(2, 0)
    assert refused.status == 429
    assert refused.code == "rate_limit_exceeded"
    assert f"model '{UNPRICED}' allows 2 requests per minute" in refused.message
    assert other_model.status == 200
    assert other_model.limits == {}


async def test_gateway_wide_limits_apply_to_every_request_even_without_keys(
    fakes: dict[str, FakeUpstream],
) -> None:
    settings = limited_settings(fakes, gateway=Limits(rpm=2))
    async with running_gateway(settings) as gw:
        first = await chat(gw, None)
        second = await chat(gw, None, "local/no-price")
        refused = await chat(gw, None, PRICED)

    assert requests_part(first.limits) == rate_headers(2, 1)
    assert requests_part(second.limits) == rate_headers(2, 0)
    assert refused.status == 429
    assert refused.code == "rate_limit_exceeded"
    assert "the gateway allows 2 requests per minute" in refused.message
    assert len(fakes["dashscope"].requests) == 0
