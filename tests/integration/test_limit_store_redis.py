"""What only the Redis limit store promises, beyond the shared rules (test_limit_stores.py): one command on
the wire per call, keys under its prefix that expire, exact money, the server's clock, the same decisions
as the memory store, and a fast `LimitStoreUnavailable` when Redis is away or silent."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis

from llmgw.domain.errors import LimitStoreUnavailable
from llmgw.domain.limits import Demand, LimitReason, Limits, Period, Scope, ScopeKind
from llmgw.infrastructure.limits.memory import MemoryLimitStore
from llmgw.infrastructure.limits.redis import RedisLimitStore

REDIS_URL_VARIABLE = "LLMGW_TEST_REDIS_URL"
REDIS_URL = os.environ.get(REDIS_URL_VARIABLE, "")
SMALL = Demand(tokens=100, micros=0, priced=False)


def key(public_id: str = "abcdefgh2345", **limits: Any) -> Scope:
    return Scope(ScopeKind.KEY, public_id, Limits(**limits))


def priced(micros: int, tokens: int = 100) -> Demand:
    return Demand(tokens=tokens, micros=micros, priced=True)


class Proxy:
    """A loopback TCP proxy in front of Redis that records every command its clients send; `silent`:
    one that accepts connections and never answers (a hung Redis)."""

    def __init__(self, target: str = "", *, silent: bool = False) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._silent = silent
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.commands: list[list[bytes]] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._silent:
                while await reader.read(65536):
                    pass
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
            try:
                await asyncio.gather(
                    self._pump(reader, upstream_writer, record=True), self._pump(upstream_reader, writer)
                )
            finally:
                upstream_writer.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool = False
    ) -> None:
        pending = bytearray()
        while data := await reader.read(65536):
            if record:
                pending += data
                self.commands += parse_commands(pending)
            writer.write(data)
            await writer.drain()
        writer.close()


def parse_commands(buffer: bytearray) -> list[list[bytes]]:
    """The complete RESP commands at the start of `buffer`, removed from it."""
    commands = []
    while (parsed := _command(buffer)) is not None:
        command, used = parsed
        del buffer[:used]
        commands.append(command)
    return commands


def _command(buffer: bytearray) -> tuple[list[bytes], int] | None:
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    assert buffer[:1] == b"*", bytes(buffer[:40])
    at, args = end + 2, []
    for _ in range(int(buffer[1:end])):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        start = end + 2
        length = int(buffer[at + 1 : end])
        if len(buffer) < start + length + 2:
            return None
        args.append(bytes(buffer[start : start + length]))
        at = start + length + 2
    return args, at


@pytest.fixture
def prefix() -> str:
    return f"llmgw:test:{secrets.token_hex(4)}:"


@pytest.fixture
async def client(prefix: str) -> AsyncIterator[redis.Redis]:
    """A plain client on the test Redis; deletes the test's keys afterwards."""
    if not REDIS_URL:
        pytest.skip(f"{REDIS_URL_VARIABLE} is not set: these tests need a Redis server")
    plain = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield plain
    finally:
        keys = [name async for name in plain.scan_iter(match=f"{prefix}*")]
        if keys:
            await plain.delete(*keys)
        await plain.aclose()


@pytest.fixture
async def store(prefix: str, client: redis.Redis) -> AsyncIterator[RedisLimitStore]:
    limits = RedisLimitStore(REDIS_URL, prefix=prefix, use_caller_clock=True, in_flight_ttl=120)
    try:
        yield limits
    finally:
        await limits.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    counting = Proxy(REDIS_URL)
    try:
        yield counting
    finally:
        await counting.close()


async def keys_under(client: redis.Redis, prefix: str) -> set[str]:
    return {name async for name in client.scan_iter(match=f"{prefix}*")}


@pytest.mark.redis
@pytest.mark.usefixtures("client")
async def test_every_admission_settlement_and_status_is_one_command_on_the_wire(
    prefix: str, proxy: Proxy
) -> None:
    port = await proxy.start()
    store = RedisLimitStore(urlsplit(REDIS_URL)._replace(netloc=f"127.0.0.1:{port}").geturl(), prefix=prefix)
    scopes = [key(rpm=2, tpm=10_000, max_parallel=5, budget_usd=1.0, budget_period=Period.DAY)]
    scopes += [
        Scope(ScopeKind.TEAM, "t", Limits(budget_usd=5.0)),
        Scope(ScopeKind.GLOBAL, "", Limits(rpm=1000)),
    ]
    try:
        assert await store.ping()  # the connection's handshake happens here, not in the calls counted
        assert (await store.status(scopes[0], time.time())).remaining_requests == 2  # loads the script
        proxy.commands.clear()
        now = time.time()
        admitted = [await store.admit(scopes, priced(1000), now) for _ in range(3)]
        await store.settle(scopes, priced(1000), priced(700), now, reached_upstream=True)
        await store.status(scopes[1], now)
    finally:
        await store.close()
    assert [admission.refusal is None for admission in admitted] == [True, True, False]
    assert [command[0].upper() for command in proxy.commands] == [b"EVALSHA"] * 5
    assert [int(command[2]) for command in proxy.commands] == [15, 15, 15, 15, 5]  # five keys per scope
    declared = {name.decode() for command in proxy.commands for name in command[3 : 3 + int(command[2])]}
    assert all(name.startswith(prefix) for name in declared)


@pytest.mark.redis
async def test_every_counter_expires_after_its_window_and_only_a_lifetime_budget_stays(
    prefix: str, client: redis.Redis, store: RedisLimitStore
) -> None:
    now = float(int(time.time()))
    own = key(rpm=60, tpm=1000, max_parallel=2, budget_usd=1.0, budget_period=Period.DAY)
    team = Scope(ScopeKind.TEAM, "research", Limits(budget_usd=10.0))
    assert (await store.admit([own, team], priced(1000), now)).refusal is None

    day_start, day_end = Period.DAY.bounds(now)
    base = f"{prefix}key:abcdefgh2345"
    assert 60_000 < await client.pttl(f"{base}:req") <= 61_000  # tat now + 1 s, kept 60 s past it
    assert 65_000 < await client.pttl(f"{base}:tok") <= 66_000  # 100 tokens of 1000 a minute: 6 s
    assert 119_000 < await client.pttl(f"{base}:par") <= 120_000  # in_flight_ttl
    budget_ttl = day_end - now + 86_400
    for counter in ("spent", "reserved"):
        assert budget_ttl - 2 <= await client.ttl(f"{base}:budget:{int(day_start)}:{counter}") <= budget_ttl
        assert await client.ttl(f"{prefix}team:research:budget:lifetime:{counter}") == -1

    await store.settle([own, team], priced(1000), priced(500), now + 1, reached_upstream=True)
    ttls = {name: await client.ttl(name) for name in await keys_under(client, prefix)}
    lifetime = {name for name in ttls if ":budget:lifetime:" in name}
    assert lifetime == {f"{prefix}team:research:budget:lifetime:{c}" for c in ("spent", "reserved")}
    assert all(ttl > 0 for name, ttl in ttls.items() if name not in lifetime), ttls
    assert f"{base}:par" not in ttls  # the last request in flight ended: no counter left behind


@pytest.mark.redis
async def test_it_writes_only_under_its_prefix_and_apart_from_another_prefix(
    prefix: str, client: redis.Redis, store: RedisLimitStore
) -> None:
    other_prefix = f"{prefix}other:"
    other = RedisLimitStore(REDIS_URL, prefix=other_prefix, use_caller_clock=True)
    now = time.time()
    scope = key(rpm=1, budget_usd=1.0)
    try:
        assert (await store.admit([scope], priced(10), now)).refusal is None
        assert (await other.admit([scope], priced(10), now)).refusal is None
    finally:
        await other.close()
    assert (await store.admit([scope], priced(10), now)).refusal is not None
    ours = await keys_under(client, prefix) - await keys_under(client, other_prefix)
    assert ours == {
        f"{prefix}key:abcdefgh2345:{name}"
        for name in ("req", "budget:lifetime:spent", "budget:lifetime:reserved")
    }


@pytest.mark.redis
async def test_money_stays_exact_to_the_micro_dollar_up_to_nine_billion_dollars(
    prefix: str, client: redis.Redis, store: RedisLimitStore
) -> None:
    scope = key(budget_usd=9_000_000_000.0)  # 9e15 micro-USD, just under 2**53
    estimate, used = priced(8_999_999_999_999_999), priced(8_999_999_999_999_997)
    now = time.time()
    assert (await store.admit([scope], estimate, now)).refusal is None
    await store.settle([scope], estimate, used, now, reached_upstream=True)
    status = await store.status(scope, now)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (
        8_999_999_999_999_997,
        0,
        3,
    )
    assert await client.get(f"{prefix}key:abcdefgh2345:budget:lifetime:spent") == "8999999999999997"
    refused = await store.admit([scope], priced(4), now)
    assert refused.refusal is not None
    assert refused.refusal.remaining_micros == 3


@pytest.mark.redis
async def test_by_default_the_server_clock_decides_not_a_wrong_caller_clock(
    prefix: str, client: redis.Redis
) -> None:
    store = RedisLimitStore(REDIS_URL, prefix=prefix)
    scope = key(rpm=60, budget_usd=1.0, budget_period=Period.DAY)
    three_days_ago = time.time() - 3 * 86_400
    try:
        admission = await store.admit([scope], priced(10), three_days_ago)
        status = await store.status(scope, three_days_ago)
    finally:
        await store.close()
    assert admission.refusal is None
    assert status.reset_requests == pytest.approx(
        1.0, abs=0.5
    )  # one request's interval, from the server's now
    assert status.reserved_micros == 10
    today = int(Period.DAY.bounds(time.time())[0])
    assert await client.get(f"{prefix}key:abcdefgh2345:budget:{today}:reserved") == "10"
    tat = float(await client.get(f"{prefix}key:abcdefgh2345:req") or 0)
    assert tat == pytest.approx(time.time() + 1.0, abs=0.5)


@pytest.mark.redis
async def test_redis_decides_exactly_as_the_memory_store_over_a_random_day(store: RedisLimitStore) -> None:
    """Every admission, refusal and status equal to the float: the Lua script mirrors the domain."""
    rng = random.Random(15)
    memory = MemoryLimitStore()
    scopes = [
        key(rpm=8, tpm=6000, max_parallel=4, budget_usd=0.4, budget_period=Period.DAY, soft_budget_usd=0.3),
        Scope(
            ScopeKind.TEAM,
            "research",
            Limits(rpm=11, tpm=12000, soft_budget_usd=0.02, budget_period=Period.WEEK),
        ),
        Scope(ScopeKind.MODEL, "gpt-fast", Limits(max_parallel=3, budget_usd=0.6)),
        Scope(ScopeKind.GLOBAL, "", Limits()),
    ]
    now = Period.DAY.bounds(time.time())[1] - 300.0  # crosses midnight
    in_flight: list[Demand] = []
    refused: set[tuple[ScopeKind, LimitReason, bool]] = set()
    for _step in range(600):
        now += rng.choice([0.0, 0.001, 0.37, 1.5, 4.0, 9.99])
        if in_flight and rng.random() < 0.5:
            demand = in_flight.pop(rng.randrange(len(in_flight)))
            actual = priced(
                rng.randrange(0, 3 * demand.micros + 1), tokens=rng.randrange(0, 3 * demand.tokens + 1)
            )
            reached = rng.random() < 0.8
            for limits_store in (memory, store):
                await limits_store.settle(scopes, demand, actual, now, reached_upstream=reached)
            continue
        demand = priced(
            rng.randrange(0, 6000), tokens=rng.randrange(1, 1500) if rng.random() < 0.97 else 7000
        )
        expected = await memory.admit(scopes, demand, now)
        assert await store.admit(scopes, demand, now) == expected
        if expected.refusal is None:
            in_flight.append(demand)
        else:
            refused.add(
                (expected.refusal.scope.kind, expected.refusal.reason, expected.refusal.exceeds_limit)
            )
        for scope in scopes:
            assert await store.status(scope, now) == await memory.status(scope, now)
    assert refused == {  # the walk meets every kind of refusal
        (ScopeKind.KEY, LimitReason.REQUESTS, False),
        (ScopeKind.KEY, LimitReason.TOKENS, False),
        (ScopeKind.KEY, LimitReason.TOKENS, True),
        (ScopeKind.MODEL, LimitReason.PARALLEL, False),
        (ScopeKind.KEY, LimitReason.BUDGET, False),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_redis_fails_fast_with_limit_store_unavailable_and_ping_says_false() -> None:
    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", prefix="llmgw:test:nowhere:")
    scope = key(rpm=60)
    started = time.monotonic()
    try:
        with pytest.raises(LimitStoreUnavailable) as raised:
            await store.admit([scope], SMALL, time.time())
        assert raised.value.code == "limits_unavailable"
        with pytest.raises(LimitStoreUnavailable):
            await store.settle([scope], SMALL, SMALL, time.time(), reached_upstream=True)
        with pytest.raises(LimitStoreUnavailable):
            await store.status(scope, time.time())
        assert not await store.ping()
    finally:
        await store.close()
    assert time.monotonic() - started < 1.0


async def test_a_redis_that_stops_answering_fails_within_the_timeout() -> None:
    silent = Proxy(silent=True)
    port = await silent.start()
    store = RedisLimitStore(f"redis://127.0.0.1:{port}/0", prefix="llmgw:test:silent:", timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(LimitStoreUnavailable):
            await store.admit([key(rpm=60)], SMALL, time.time())
        assert 0.15 < time.monotonic() - started < 0.6
        started = time.monotonic()
        assert not await store.ping()
        assert time.monotonic() - started < 0.6
    finally:
        await store.close()
        await silent.close()


@pytest.mark.redis
async def test_a_restore_is_one_command_writing_the_spent_counter_admission_reads_with_its_expiry(
    prefix: str, client: redis.Redis, store: RedisLimitStore, proxy: Proxy
) -> None:
    port = await proxy.start()
    wired = RedisLimitStore(
        urlsplit(REDIS_URL)._replace(netloc=f"127.0.0.1:{port}").geturl(),
        prefix=prefix,
        use_caller_clock=True,
    )
    now = float(int(time.time()))
    daily = key(budget_usd=1.0, budget_period=Period.DAY)
    team = Scope(ScopeKind.TEAM, "research", Limits(budget_usd=10.0))
    try:
        assert await wired.ping()
        await wired.restore(daily, now, 1)  # loads the script
        proxy.commands.clear()
        await wired.restore(daily, now, 250_000)
        await wired.restore(team, now, 3_000_000)
    finally:
        await wired.close()

    assert [command[0].upper() for command in proxy.commands] == [b"EVALSHA"] * 2
    day_start, day_end = Period.DAY.bounds(now)
    spent = f"{prefix}key:abcdefgh2345:budget:{int(day_start)}:spent"
    assert await client.get(spent) == "250000"
    budget_ttl = day_end - now + 86_400
    assert budget_ttl - 2 <= await client.ttl(spent) <= budget_ttl
    assert await client.get(f"{prefix}team:research:budget:lifetime:spent") == "3000000"
    assert await client.ttl(f"{prefix}team:research:budget:lifetime:spent") == -1
    # What admission reads: the restored money is spent, nothing reserved.
    status = await store.status(daily, now)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (250_000, 0, 750_000)


@pytest.mark.redis
async def test_a_restore_the_server_clock_places_in_another_window_writes_nothing(
    prefix: str, client: redis.Redis
) -> None:
    server_clock = RedisLimitStore(REDIS_URL, prefix=prefix)  # as in production: the server's clock
    try:
        await server_clock.restore(
            key(budget_usd=1.0, budget_period=Period.DAY), time.time() - 2 * 86_400, 500
        )
        await server_clock.restore(
            key("otherkey2345", budget_usd=1.0, budget_period=Period.DAY), time.time(), 7
        )
    finally:
        await server_clock.close()
    assert await keys_under(client, prefix) == {
        f"{prefix}key:otherkey2345:budget:{int(Period.DAY.bounds(time.time())[0])}:spent"
    }
