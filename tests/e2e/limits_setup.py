"""What the multi-process limit tests share: `llmgw serve` processes on one PostgreSQL schema and one Redis,
a priced model whose every request costs a known amount, keys made through the admin API, and the
budget counters read straight from Redis.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis

from tests.e2e.replicas import Replica
from tests.e2e.test_serve_process import REPO

PEPPER = "pepper-" + secrets.token_hex(24)
ADMIN_KEY = "sk-admin-" + secrets.token_hex(24)
PREFIX = "llmgw:limits:"  # RedisLimitStore's default prefix
MODEL = "local/priced"
# USD per million tokens: the fake upstream reports 10 prompt and (3 chunks) 3 completion tokens, so a
# request costs 10 * 200 + 3 * 1000 = 5000 micro-dollars, $0.005.
PROMPT_PRICE = 200
COMPLETION_PRICE = 1000
COST_MICROS = 5000
# 24 characters in one message: the gateway estimates ceil(24 / 4) + 4 = 10 prompt tokens, what the fake
# reports; with max_tokens 3 the reservation is exactly the real cost.
PROMPT = "x" * 24
MAX_TOKENS = 3


def chat_body(*, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_config(root: Path, upstream_base_url: str) -> Path:
    """A config directory: the shipped defaults plus a `limits` mode adding the fake as provider `local`
    and the priced model."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "default.toml").write_text((REPO / "configs" / "default.toml").read_text(encoding="utf-8"))
    (root / "limits.toml").write_text(
        f"""
[llm.providers.local]
kind = "openai"
base_url = {json.dumps(upstream_base_url)}

[[llm.models]]
id = "{MODEL}"
provider = "local"
upstream_model = "priced"
pricing = {{ prompt = {PROMPT_PRICE}, completion = {COMPLETION_PRICE} }}
""",
        encoding="utf-8",
    )
    return root


def replica_env(config: Path, store_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "CONFIG_PATH": str(config),
        "MODE": "limits",
        "LLMGW_AUTH__ENABLED": "true",
        "LLMGW_AUTH__PEPPER": json.dumps(PEPPER),
        "LLMGW_AUTH__ADMIN_KEY": json.dumps(ADMIN_KEY),
        "LLMGW_STORAGE__URL": json.dumps(store_url),
        "LLMGW_CACHE__REDIS_URL": json.dumps(redis_url),
        **extra,
    }


async def create_key(
    session: aiohttp.ClientSession, replica: Replica, name: str, **limits: Any
) -> tuple[str, str]:
    """A key made through the admin API with `limits` as top-level fields; (public id, secret key)."""
    body = {"name": name, "scopes": ["inference"], **limits}
    async with session.post(f"{replica.url}/admin/v1/keys", json=body, headers=bearer(ADMIN_KEY)) as response:
        created = await response.json(content_type=None)
        assert response.status == 200, f"{response.status} {created}\n{replica.tail()}"
    for limit, value in limits.items():
        assert created[limit] == value, created
    return created["id"], created["key"]


async def readyz(session: aiohttp.ClientSession, replica: Replica) -> tuple[int, dict[str, Any]]:
    async with session.get(replica.readyz_url, headers=bearer(ADMIN_KEY)) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body


async def generation_cost_micros(
    session: aiohttp.ClientSession, replica: Replica, key: str, generation_id: str
) -> int:
    """The record's cost, read through GET /v1/generation/{id} with the key that made it."""
    async with session.get(f"{replica.url}/v1/generation/{generation_id}", headers=bearer(key)) as response:
        body = await response.json(content_type=None)
        assert response.status == 200, f"{generation_id}: {response.status} {body}"
    cost = body["generation"]["cost_usd"]
    assert cost is not None, body
    return _micros(cost)


def _micros(usd: float) -> int:
    return int(Decimal(repr(usd)).scaleb(6).to_integral_value())


async def usage_budget(session: aiohttp.ClientSession, replica: Replica, key_id: str) -> Budget:
    """The key's budget as GET /admin/v1/keys/{id}/usage reports it."""
    url = f"{replica.url}/admin/v1/keys/{key_id}/usage"
    async with session.get(url, headers=bearer(ADMIN_KEY)) as response:
        body = await response.json(content_type=None)
        assert response.status == 200, f"{response.status} {body}"
    budget = body["budget"]
    return Budget(_micros(budget["spent_usd"]), _micros(budget["reserved_usd"]))


@dataclass(frozen=True)
class Budget:
    """A key's budget counters in Redis, micro-dollars, summed over its windows."""

    spent: int
    reserved: int


async def budget_counters(client: redis.Redis, key_id: str) -> Budget:
    """Read in one MGET: a settle between two reads would show the reservation gone and not yet spent."""
    # SCAN may name a key twice.
    names = sorted(
        {name async for name in client.scan_iter(match=f"{PREFIX}key:{key_id}:budget:*", count=1000)}
    )
    totals = {"spent": 0, "reserved": 0}
    for name, value in zip(names, await client.mget(names) if names else [], strict=True):
        totals[name.decode().rsplit(":", 1)[1]] += int(value or 0)
    return Budget(**totals)


async def settled_budget(client: redis.Redis, key_id: str) -> Budget:
    """The counters once nothing is reserved any more (reservations settle after each response ends)."""
    async with asyncio.timeout(5):
        while (budget := await budget_counters(client, key_id)).reserved:
            await asyncio.sleep(0.05)
    return budget


async def forget_keys(client: redis.Redis, key_ids: list[str]) -> None:
    """Delete the counters of these keys (the Redis is shared with other tests)."""
    for key_id in key_ids:
        names = {name async for name in client.scan_iter(match=f"{PREFIX}key:{key_id}:*", count=1000)}
        if names:
            await client.delete(*names)
