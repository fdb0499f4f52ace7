"""Limits and budgets across real `llmgw serve` processes sharing one PostgreSQL schema and one Redis.

Replica A runs two workers on one set of ports, replica B one; a key limited to 60 RPM hammered through
all three processes gets 60 requests (then one a second), not 60 per process; 200 concurrent streams
against a $0.50 budget spend it exactly, never more. Replicas C (`on_store_error = "closed"`) and D
("open") reach Redis through a loopback proxy the test cuts: C refuses a budgeted key with 503
`limits_unavailable`, D lets it through uncounted, and both `/readyz` say so until the proxy is restored.

All four replicas start at once and serve every test. Figures are logged (`--log-cli-level=INFO`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as redis

from tests.e2e.limits_setup import (
    COST_MICROS,
    Budget,
    bearer,
    budget_counters,
    chat_body,
    create_key,
    forget_keys,
    generation_cost_micros,
    readyz,
    replica_env,
    settled_budget,
    usage_budget,
    write_config,
)
from tests.e2e.procfs import my_connections_to, worker_pids, worker_serving
from tests.e2e.replicas import Replica, replicas
from tests.fakes.cut_proxy import CutProxy
from tests.fakes.upstream import FakeUpstream, Script

log = logging.getLogger(__name__)

DSN = os.environ.get("LLMGW_TEST_POSTGRES_DSN", "")
REDIS_URL = os.environ.get("LLMGW_TEST_REDIS_URL", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(
        not DSN, reason="LLMGW_TEST_POSTGRES_DSN is not set: replicas sharing limits need a shared PostgreSQL"
    ),
    pytest.mark.skipif(
        not REDIS_URL, reason="LLMGW_TEST_REDIS_URL is not set: limits shared by replicas live in Redis"
    ),
    pytest.mark.skipif(
        not Path("/proc/net/tcp").exists(), reason="tells the workers' connections apart through Linux /proc"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

RPM = 60
HAMMER_SECONDS = 2.5
CONNECTIONS_PER_PROCESS = 4
PAUSE = 0.005  # between two requests on one connection
BUDGET_USD = 0.5
BUDGET_MICROS = 500_000
STREAMS = 200
RESET = re.compile(r"\d+(\.\d+)?s")


@dataclass
class Cluster:
    fake: FakeUpstream
    proxy: CutProxy
    redis: redis.Redis
    dsn: str
    replicas: dict[str, Replica]
    key_ids: list[str] = field(default_factory=list)

    async def key(self, session: aiohttp.ClientSession, name: str, **limits: Any) -> tuple[str, str]:
        key_id, key = await create_key(session, self.replicas["a"], name, **limits)
        self.key_ids.append(key_id)
        return key_id, key


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def schema_dsn() -> AsyncIterator[str]:
    """LLMGW_TEST_POSTGRES_DSN on a fresh schema for this module, dropped afterwards (the server is shared)."""
    import asyncpg

    schema = f"llmgw_limits_{os.urandom(4).hex()}"
    connection = await asyncpg.connect(DSN)
    await connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{DSN}{'&' if '?' in DSN else '?'}search_path={schema}"
    finally:
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
        await connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory, schema_dsn: str) -> AsyncIterator[Cluster]:
    real = urlsplit(REDIS_URL)
    root = tmp_path_factory.mktemp("limits")
    client = redis.from_url(REDIS_URL)
    async with (
        FakeUpstream("openai") as fake,
        CutProxy(real.hostname or "127.0.0.1", real.port or 6379) as proxy,
    ):
        config = write_config(root / "configs", fake.base_url)
        shared = replica_env(config, schema_dsn, REDIS_URL)
        cut = replica_env(config, schema_dsn, proxy.url_via(REDIS_URL))
        envs = {
            "a": {**shared, "LLMGW_SERVER__WORKERS": "2"},
            "b": shared,
            "closed": {**cut, "LLMGW_LIMITS__ON_STORE_ERROR": '"closed"'},
            "open": {**cut, "LLMGW_LIMITS__ON_STORE_ERROR": '"open"'},
        }
        started = time.monotonic()
        async with replicas(root, envs) as running:
            log.info("4 replicas (5 serving processes) ready in %.1f s", time.monotonic() - started)
            cluster = Cluster(fake, proxy, client, schema_dsn, running)
            try:
                yield cluster
            finally:
                await forget_keys(client, cluster.key_ids)
                await client.aclose()


# Rate limits: one 60 RPM key through three processes


@dataclass
class Answer:
    process: str
    status: int
    headers: dict[str, str]
    body: Any


async def _pinned_sessions(
    replica: Replica, key: str, per_worker: int
) -> dict[int, list[aiohttp.ClientSession]]:
    """`per_worker` keep-alive connections (a session of one connection each) to every worker of `replica`,
    told apart through /proc: the kernel picks a worker per connection."""
    async with asyncio.timeout(15):
        while len(workers := worker_pids(replica.process.proc.pid)) < 2:
            await asyncio.sleep(0.05)
    port = replica.process.http
    pinned: dict[int, list[aiohttp.ClientSession]] = {pid: [] for pid in workers}
    async with asyncio.timeout(20):
        while any(len(sessions) < per_worker for sessions in pinned.values()):
            before = my_connections_to(port)
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            async with session.get(f"{replica.url}/v1/models", headers=bearer(key)) as response:
                assert response.status == 200, await response.text()
                await response.read()
            (opened,) = my_connections_to(port) - before
            worker = worker_serving(opened, port, workers)
            if len(pinned[worker]) < per_worker:
                pinned[worker].append(session)
            else:
                await session.close()
    return pinned


@dataclass(frozen=True)
class Connection:
    """A keep-alive connection to a known process."""

    session: aiohttp.ClientSession
    replica: Replica
    process: str


async def _hammer(connection: Connection, key: str, until: float, answers: list[Answer]) -> None:
    session, replica, process = connection.session, connection.replica, connection.process
    while time.monotonic() < until:
        async with session.post(
            f"{replica.url}/v1/chat/completions", json=chat_body(), headers=bearer(key)
        ) as response:
            body = await response.json(content_type=None)
            answers.append(Answer(process, response.status, dict(response.headers), body))
        await asyncio.sleep(PAUSE)


def _assert_limit_headers(answer: Answer) -> None:
    headers = answer.headers
    assert headers.get("x-ratelimit-limit-requests") == str(RPM), headers
    assert headers.get("x-ratelimit-remaining-requests", "").isdigit(), headers
    assert RESET.fullmatch(headers.get("x-ratelimit-reset-requests", "")), headers


def _assert_rate_refusal(answer: Answer) -> None:
    assert answer.status == 429, (answer.status, answer.body)
    assert answer.body["error"]["code"] == "rate_limit_exceeded", answer.body
    retry_after = answer.headers.get("Retry-After", "")
    # One request a second frees after the burst: the next slot is at most a second away.
    assert retry_after in {"0", "1"}, answer.headers
    _assert_limit_headers(answer)
    assert answer.headers["x-ratelimit-remaining-requests"] == "0", answer.headers


async def test_a_60_rpm_key_hammered_through_two_workers_and_another_replica_gets_60_then_one_a_second(
    cluster: Cluster,
) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    async with aiohttp.ClientSession() as admin:
        _, key = await cluster.key(admin, "hammered", rpm=RPM)
    pinned = await _pinned_sessions(a, key, CONNECTIONS_PER_PROCESS)
    others = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(4)]
    upstream_before = len(cluster.fake.requests)
    answers: list[Answer] = []
    try:
        first, second = sorted(pinned)
        loops = [Connection(session, a, "a/worker-1") for session in pinned[first]]
        loops += [Connection(session, a, "a/worker-2") for session in pinned[second]]
        loops += [Connection(session, b, "b") for session in others]
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for connection in loops:
                group.create_task(_hammer(connection, key, started + HAMMER_SECONDS, answers))
        elapsed = time.monotonic() - started
    finally:
        for session in [*others, *(s for sessions in pinned.values() for s in sessions)]:
            await session.close()

    accepted = [answer for answer in answers if answer.status == 200]
    refused = [answer for answer in answers if answer.status != 200]
    by_process = Counter(answer.process for answer in accepted)
    answered_by = Counter(answer.process for answer in answers)
    log.info(
        "60 RPM key: %d requests in %.2f s, %d accepted (%s), %d refused; answered by %s",
        len(answers),
        elapsed,
        len(accepted),
        dict(by_process),
        len(refused),
        dict(answered_by),
    )
    # GCRA over a 60 s window: a burst of 60, then one more each second the hammering lasts.
    expected = RPM + math.floor(elapsed)
    assert expected - 1 <= len(accepted) <= expected + 1, (len(accepted), elapsed)
    assert set(answered_by) == {"a/worker-1", "a/worker-2", "b"}, answered_by
    assert set(by_process) == {"a/worker-1", "a/worker-2", "b"}, f"a process admitted nothing: {by_process}"
    for answer in accepted:
        _assert_limit_headers(answer)
    for answer in refused:
        _assert_rate_refusal(answer)
    # A refused request never reached the upstream.
    assert len(cluster.fake.requests) - upstream_before == len(accepted)


# Budgets: 200 concurrent streams against $0.50


@dataclass
class Streamed:
    replica: Replica
    status: int
    headers: dict[str, str]
    payload: bytes


async def _stream(session: aiohttp.ClientSession, replica: Replica, key: str) -> Streamed:
    async with session.post(
        f"{replica.url}/v1/chat/completions", json=chat_body(stream=True), headers=bearer(key)
    ) as response:
        return Streamed(replica, response.status, dict(response.headers), await response.read())


def _stream_usage(payload: bytes) -> dict[str, Any]:
    assert payload.endswith(b"data: [DONE]\n\n"), payload[-200:]
    events = [json.loads(e[6:]) for e in payload.split(b"\n\n") if e.startswith(b"data: {")]
    usage: dict[str, Any] = next(event["usage"] for event in events if event.get("usage"))
    return usage


def _assert_budget_refusal(answer: Streamed) -> None:
    body = json.loads(answer.payload)
    assert answer.status == 429, (answer.status, body)
    assert body["error"]["code"] == "budget_exceeded", body
    assert "$0.00 left" in body["error"]["message"], body
    retry_after = int(answer.headers["Retry-After"])
    assert 0 < retry_after <= 86_400, answer.headers  # the day's end, UTC
    assert answer.headers["x-llmgw-budget-remaining-usd"] == "0.000000", answer.headers


async def test_200_concurrent_streams_spend_a_half_dollar_budget_exactly_and_never_more(
    cluster: Cluster,
) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    affordable = BUDGET_MICROS // COST_MICROS
    # Each admitted stream lasts ~0.1 s upstream, so most of the 200 arrive while others are in flight.
    cluster.fake.script(*(Script(chunk_delay=0.05) for _ in range(affordable)))
    upstream_before = len(cluster.fake.requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        key_id, key = await cluster.key(session, "budgeted", budget_usd=BUDGET_USD, budget_period="day")
        started = time.monotonic()
        answers = await asyncio.gather(*(_stream(session, (a, b)[i % 2], key) for i in range(STREAMS)))
        elapsed = time.monotonic() - started
        accepted = [answer for answer in answers if answer.status == 200]
        refused = [answer for answer in answers if answer.status != 200]
        for answer in accepted:
            usage = _stream_usage(answer.payload)
            assert (usage["prompt_tokens"], usage["completion_tokens"]) == (10, 3), usage
        records = [
            await generation_cost_micros(session, (b, a)[i % 2], key, answer.headers["x-generation-id"])
            for i, answer in enumerate(accepted)
        ]
        counters = await settled_budget(cluster.redis, key_id)
        reported = await usage_budget(session, b, key_id)

    import asyncpg

    connection = await asyncpg.connect(cluster.dsn)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS n, sum(round((cost_usd * 1000000)::numeric))::bigint AS micros, "
            "count(*) FILTER (WHERE status <> 'completed') AS unfinished FROM generations WHERE key_id = $1",
            key_id,
        )
    finally:
        await connection.close()
    assert row is not None

    spent = sum(records)
    log.info(
        "$0.50 budget, %d concurrent streams in %.2f s: %d accepted, %d refused; records $%.6f, Redis spent "
        "$%.6f, store: %s records, $%.6f; usage API: %s",
        STREAMS,
        elapsed,
        len(accepted),
        len(refused),
        spent / 1e6,
        counters.spent / 1e6,
        row["n"],
        (row["micros"] or 0) / 1e6,
        reported,
    )
    # The reservation here equals the real cost (see limits_setup), so requests in flight when the budget
    # ran out add nothing: at most the budget is spent, and all of it is.
    assert all(cost == COST_MICROS for cost in records), Counter(records)
    assert spent <= BUDGET_MICROS
    assert len(accepted) == affordable, (len(accepted), [(r.status, r.payload[:200]) for r in refused[:3]])
    for answer in refused:
        _assert_budget_refusal(answer)
    assert counters.spent == spent, counters
    assert reported == Budget(spent=spent, reserved=0), reported
    assert (row["n"], row["micros"], row["unfinished"]) == (len(accepted), spent, 0)
    assert len(cluster.fake.requests) - upstream_before == len(accepted)


# Redis unreachable: both modes, and /readyz


async def _chat(session: aiohttp.ClientSession, replica: Replica, key: str) -> tuple[int, Any]:
    """The status and body of a chat; the budget header, when the answer has one, joins the body."""
    async with session.post(
        f"{replica.url}/v1/chat/completions", json=chat_body(), headers=bearer(key)
    ) as response:
        body = await response.json(content_type=None)
        if "x-llmgw-budget-remaining-usd" in response.headers:
            body["budget_remaining_usd"] = response.headers["x-llmgw-budget-remaining-usd"]
        return response.status, body


async def _limits_state(session: aiohttp.ClientSession, replica: Replica) -> str:
    status, body = await readyz(session, replica)
    assert status == 200, body  # an unreachable limit store does not take the replica out of rotation
    state: str = body["limits"]["state"]
    return state


async def _until_limits(session: aiohttp.ClientSession, replica: Replica, state: str) -> float:
    started = time.monotonic()
    async with asyncio.timeout(5):
        while await _limits_state(session, replica) != state:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_with_redis_cut_closed_refuses_a_budgeted_key_open_lets_it_through_uncounted_and_readyz_says_so(
    cluster: Cluster,
) -> None:
    closed, opened, proxy = cluster.replicas["closed"], cluster.replicas["open"], cluster.proxy
    async with aiohttp.ClientSession() as session:
        budget_id, budgeted = await cluster.key(session, "budget-cut", budget_usd=BUDGET_USD)
        _, rated = await cluster.key(session, "rate-cut", rpm=1000)
        for replica in (closed, opened):
            status, body = await _chat(session, replica, budgeted)
            assert status == 200, f"{body}\n{replica.tail()}"
            assert await _limits_state(session, replica) == "up"
        before = await settled_budget(cluster.redis, budget_id)

        await proxy.cut()
        try:
            down = {
                replica.name: await _until_limits(session, replica, "down") for replica in (closed, opened)
            }
            refused = await _chat(session, closed, budgeted)
            rate_only = await _chat(session, closed, rated)
            let_through = await _chat(session, opened, budgeted)
            during = await budget_counters(cluster.redis, budget_id)
        finally:
            await proxy.restore()
        up = {replica.name: await _until_limits(session, replica, "up") for replica in (closed, opened)}
        again = await _chat(session, closed, budgeted)
        after = await settled_budget(cluster.redis, budget_id)
        again_cost = await generation_cost_micros(session, closed, budgeted, again[1]["id"])

    log.info(
        "Redis cut: limits down after %s s, up again %s s after restoring; budget spent %d -> %d -> %d micros",
        down,
        up,
        before.spent,
        during.spent,
        after.spent,
    )
    status, body = refused
    assert status == 503, body
    assert body["error"]["code"] == "limits_unavailable", body
    # Rates fail open by default (`on_store_error_rates`), even where budgets fail closed.
    assert rate_only[0] == 200, rate_only
    assert let_through[0] == 200, let_through
    assert "budget_remaining_usd" not in let_through[1], let_through  # no counter answered for it
    assert before.spent == 2 * COST_MICROS
    assert during.spent == before.spent
    # The request let through while Redis was cut was never counted; the one after the restore was.
    assert again[0] == 200, again
    assert again_cost == COST_MICROS
    assert after == Budget(spent=before.spent + COST_MICROS, reserved=0), after
