"""`/metrics` (issue 16, point 1): after a scripted mix of requests on both fronts (answers, an upstream
error, a rate-limited request, a cancelled stream, embeddings), the counters and histogram counts equal
what was sent and what the records say; key and team labels and budget gauges only for `label_keys`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from grpclib import GRPCError
from prometheus_client.parser import text_string_to_metric_families

from llmgw.domain.generation import GenerationRecord
from llmgw.domain.limits import Limits
from llmgw.infrastructure.config.settings import CircuitSettings, MetricsSettings, Settings
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.storage.memory import MemoryStore
from tests.auth_setup import auth_settings, bearer, call, new_key
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, running_gateway, settings_for

PRICED = "dashscope/qwen-turbo"
LIMITED = "local/no-price"
FAILING = "local/llama"
STREAMED = "openrouter/openai/gpt-4o"
EMBED = "dashscope/text-embedding-v3"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(base: str) -> tuple[int, str, Samples]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
        return response.status, response.headers.get("Content-Type", ""), parse(text) if response.ok else {}


def mixed_settings(fakes: Mapping[str, FakeUpstream], **metrics: Any) -> Settings:
    base = settings_for(fakes)
    models = tuple(replace(m, limits=Limits(rpm=1)) if m.id == LIMITED else m for m in base.models)
    return replace(
        base,
        models=models,
        circuit=CircuitSettings(failures=1, cooldown=60.0),
        metrics=MetricsSettings(**metrics),
    )


@pytest.fixture
async def mixed(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    async with running_gateway(mixed_settings(fakes, on_http_port=True)) as gw:
        yield gw


async def records(gw: Running, ids: Iterable[str]) -> list[GenerationRecord]:
    return [await gw.gateway.get_generation(generation_id) for generation_id in ids]


async def test_counters_and_histograms_equal_what_was_sent_on_both_fronts(
    mixed: Running, fakes: dict[str, FakeUpstream]
) -> None:
    gw = mixed
    ids = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(f"{gw.rest_url}/v1/chat/completions", json=chat(PRICED)) as response:
                assert response.status == 200
                ids.append((await response.json())["id"])
        fakes["local"].script(Script(status=500, error_body={"error": {"message": "boom"}}))
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=chat(FAILING)) as response:
            assert response.status == 502
            ids.append(response.headers["x-generation-id"])
        statuses = []
        for _ in range(2):
            async with session.post(f"{gw.rest_url}/v1/chat/completions", json=chat(LIMITED)) as response:
                statuses.append(response.status)
                if response.status == 200:
                    ids.append((await response.json())["id"])
        assert sorted(statuses) == [200, 429]
        fakes["openrouter"].script(Script(chunks=50, chunk_delay=0.1))
        async with session.post(
            f"{gw.rest_url}/v1/chat/completions", json=chat(STREAMED, stream=True)
        ) as response:
            cancelled = response.headers["x-generation-id"]
            await response.content.readuntil(b"\n\n")
            response.close()
        async with session.post(
            f"{gw.rest_url}/v1/embeddings", json={"model": EMBED, "input": "x"}
        ) as response:
            assert response.status == 200
            ids.append((await response.json())["id"])
    answer = await gw.grpc.create_chat_completion(
        v1.CreateChatCompletionRequest(model=PRICED, messages=[v1.ChatMessage(role="user", content="hi")])
    )
    ids.append(answer.id)
    fakes["dashscope"].script(Script(status=503, error_body={"error": {"message": "busy"}}))
    with pytest.raises(GRPCError):
        await gw.grpc.create_chat_completion(
            v1.CreateChatCompletionRequest(model=PRICED, messages=[v1.ChatMessage(role="user", content="hi")])
        )
    # The cancelled stream's record is made when the gateway sees the client gone.
    for _ in range(100):
        _, _, samples = await scrape(gw.health_url)
        if value(samples, "llmgw_requests_total", status="cancelled"):
            break
        await asyncio.sleep(0.02)
    ids.append(cancelled)
    status, content_type, samples = await scrape(gw.health_url)
    assert status == 200
    assert content_type.startswith("text/plain")

    def requests(**labels: str) -> float:
        return value(samples, "llmgw_requests_total", **labels)

    assert requests() == 9  # 2 + 1 + 2 + 1 + 1 over REST, 2 over gRPC
    assert requests(front="rest") == 7
    assert requests(front="grpc") == 2
    assert requests(front="rest", kind="chat", model=PRICED, provider="dashscope", status="completed") == 2
    assert requests(front="grpc", model=PRICED, status="completed") == 1
    assert requests(front="grpc", model=PRICED, status="error") == 1
    assert requests(kind="embeddings", model=EMBED, status="completed") == 1
    assert requests(model=STREAMED, status="cancelled", error_code="cancelled") == 1
    assert requests(model=LIMITED, status="error", error_code="rate_limit_exceeded", provider="") == 1
    assert value(samples, "llmgw_rate_limited_total", scope="model", reason="requests") == 1
    failed = await gw.gateway.get_generation(ids[2])
    assert requests(model=FAILING, status="error", error_code=failed.error_code) == 1

    # Histograms: one observation per recorded request, TTFT for the chat answers only.
    assert value(samples, "llmgw_request_duration_seconds_count") == 8  # every record: all but the 429
    assert value(samples, "llmgw_request_duration_seconds_count", model=PRICED) == 4
    assert value(samples, "llmgw_time_to_first_token_seconds_count", model=PRICED) == 3
    assert value(samples, "llmgw_time_to_first_token_seconds_count", model=EMBED) == 0

    # Tokens and cost are the records' sums.
    written = await records(gw, ids)
    for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
        assert value(samples, "llmgw_tokens_total", type=kind) == sum(getattr(r, field) for r in written)
    assert value(samples, "llmgw_tokens_total", type="prompt") > 0
    cost = sum(r.cost_usd or 0.0 for r in written)
    assert cost > 0
    assert value(samples, "llmgw_cost_usd_total") == pytest.approx(cost)
    assert value(samples, "llmgw_cost_usd_total", model=PRICED) == pytest.approx(
        sum(r.cost_usd or 0.0 for r in written if r.model == PRICED)
    )

    # Attempts by outcome; the failed deployments' circuits are open (failures = 1).
    assert value(samples, "llmgw_upstream_attempts_total", provider="dashscope", outcome="completed") == 4
    assert value(samples, "llmgw_upstream_attempts_total", provider="local", outcome=failed.error_code) == 1
    assert value(samples, "llmgw_upstream_attempts_total") == 8
    assert value(samples, "llmgw_circuit_open", deployment="local/llama") == 1
    assert value(samples, "llmgw_circuit_open", deployment="dashscope/qwen-turbo") == 1
    assert value(samples, "llmgw_in_flight") == 0
    assert ("llmgw_records_pending", frozenset()) in samples
    assert value(samples, "llmgw_records_dropped_total") == 0
    # No key labels without label_keys.
    assert all(dict(labels).get("key", "") == "" for (_, labels) in samples)

    # The same on the REST port with metrics.on_http_port, without a key.
    status, _, on_rest = await scrape(gw.rest_url)
    assert status == 200
    assert value(on_rest, "llmgw_requests_total") == 9


async def test_metrics_are_on_the_health_port_only_unless_asked(gw: Running) -> None:
    assert (await scrape(gw.health_url))[0] == 200
    assert (await scrape(gw.rest_url))[0] == 404


async def test_metrics_disabled_serve_no_endpoint(fakes: dict[str, FakeUpstream]) -> None:
    async with running_gateway(replace(settings_for(fakes), metrics=MetricsSettings(enabled=False))) as gw:
        assert (await scrape(gw.health_url))[0] == 404
        assert gw.gateway.observers == ()


async def test_only_keys_on_label_keys_get_their_own_series_and_budget_gauges(
    fakes: dict[str, FakeUpstream],
) -> None:
    store = MemoryStore()
    authed = replace(settings_for(fakes), auth=auth_settings())
    async with running_gateway(authed, store=store) as gw:  # keys are minted before they can be listed
        watched = await new_key(gw, budget_usd=2, budget_period="day")
        other = await new_key(gw, budget_usd=3, budget_period="day")
    listed = replace(authed, metrics=MetricsSettings(label_keys=(watched.id,)))
    async with running_gateway(listed, store=store) as gw:
        for key in (watched, other):
            status, _ = await call(
                gw, "POST", "/v1/chat/completions", headers=bearer(key.text), json=chat(PRICED)
            )
            assert status == 200
        await gw.gateway.settled()
        _, _, samples = await scrape(gw.health_url)
    assert value(samples, "llmgw_requests_total", key=watched.id) == 1
    assert value(samples, "llmgw_requests_total", key="") == 1
    assert value(samples, "llmgw_cost_usd_total", key=watched.id) > 0
    left = value(samples, "llmgw_budget_remaining_usd", key=watched.id)
    assert 0 < left < 2
    assert not any(other.id in dict(labels).values() for (_, labels) in samples)
