"""API keys across real `llmgw serve` processes: what one replica changes, the others honour.

Two replicas (A and B) share one PostgreSQL schema. With `cache.redis_url` a key disabled or rotated
through A is refused by B within a second although `auth.cache_ttl` is long (only the broadcast can
explain it); without Redis B refuses within the TTL while A refuses at once. Last, the README's flow in
one process with the shipped configs: a pepper, a key made with `llmgw keys create`, the `openai` SDK.

Observed delays are logged (`--log-cli-level=INFO` shows them).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.replicas import Replica, replicas, serving
from tests.e2e.test_serve_process import REPO
from tests.fakes.upstream import FakeUpstream
from tests.fakes.upstream_wire import expected_content

log = logging.getLogger(__name__)

DSN = os.environ.get("LLMGW_TEST_POSTGRES_DSN", "")
REDIS_URL = os.environ.get("LLMGW_TEST_REDIS_URL", "")
needs_postgres = pytest.mark.skipif(
    not DSN, reason="LLMGW_TEST_POSTGRES_DSN is not set: two replicas need a shared PostgreSQL"
)
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="LLMGW_TEST_REDIS_URL is not set: the revocation broadcast needs Redis"
)

PEPPER = "pepper-" + secrets.token_hex(24)
ADMIN_KEY = "sk-admin-" + secrets.token_hex(24)  # auth.admin_key: any secret of 32+ characters
MODEL = "dashscope/qwen-turbo"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
POLL = 0.05  # seconds between two requests while waiting for a refusal
BROADCAST_BOUND = 1.0  # a revocation through A reaches B over Redis within this
TTL = 2.0  # auth.cache_ttl without Redis
TTL_BOUND = 3.5  # ... and B's refusal within TTL plus a margin


def _replica_env(
    fake: FakeUpstream, store_url: str, *, cache_ttl: str, redis_url: str = ""
) -> dict[str, str]:
    env = {
        "LLMGW_LLM__PROVIDERS__DASHSCOPE__BASE_URL": fake.base_url,
        "DASHSCOPE_API_KEY": "sk-test",
        "LLMGW_AUTH__ENABLED": "true",
        "LLMGW_AUTH__PEPPER": f'"{PEPPER}"',
        "LLMGW_AUTH__ADMIN_KEY": f'"{ADMIN_KEY}"',
        "LLMGW_AUTH__CACHE_TTL": f'"{cache_ttl}"',
        "LLMGW_STORAGE__URL": f'"{store_url}"',
    }
    if redis_url:
        env["LLMGW_CACHE__REDIS_URL"] = f'"{redis_url}"'
    return env


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _admin(
    session: aiohttp.ClientSession, replica: Replica, path: str, body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """POST an admin call with the operator's `auth.admin_key`; its JSON answer."""
    url = f"{replica.url}/admin/v1/keys{path}"
    async with session.post(
        url, json=body if body is not None else {}, headers=_bearer(ADMIN_KEY)
    ) as response:
        assert response.status == 200, f"{path}: {response.status} {await response.text()}\n{replica.tail()}"
        answer: dict[str, Any] = await response.json()
        return answer


async def _create_key(session: aiohttp.ClientSession, replica: Replica, name: str) -> tuple[str, str]:
    created = await _admin(session, replica, "", {"name": name, "scopes": ["inference"]})
    assert created["key"].startswith(f"sk-llmgw-{created['id']}-"), created
    return created["id"], created["key"]


async def _models(session: aiohttp.ClientSession, replica: Replica, key: str) -> tuple[int, Any]:
    async with session.get(f"{replica.url}/v1/models", headers=_bearer(key)) as response:
        return response.status, await response.json(content_type=None)


async def _chat(session: aiohttp.ClientSession, replica: Replica, key: str) -> tuple[int, Any]:
    async with session.post(
        f"{replica.url}/v1/chat/completions", json=CHAT, headers=_bearer(key)
    ) as response:
        return response.status, await response.json(content_type=None)


async def _accepted(session: aiohttp.ClientSession, replica: Replica, key: str) -> None:
    """The key works on `replica` for a chat and a listing (which also puts it in that replica's cache)."""
    status, body = await _chat(session, replica, key)
    assert status == 200, f"chat: {status} {body}\n{replica.tail()}"
    assert body["choices"][0]["message"]["content"] == expected_content(3)
    status, body = await _models(session, replica, key)
    assert status == 200, f"models: {status} {body}\n{replica.tail()}"


def _assert_invalid_key(body: Any) -> None:
    """OpenAI's shape of a refused key."""
    assert body["error"]["type"] == "authentication_error", body
    assert body["error"]["code"] == "invalid_api_key", body
    assert body["error"]["message"], body


async def _until_refused(
    session: aiohttp.ClientSession, replica: Replica, key: str, since: float, bound: float
) -> float:
    """Seconds from `since` (a monotonic time) to the first 401 for `key` on `replica`, asking every
    `POLL` s; fails once `bound` plus a second has passed with the key still accepted."""
    while True:
        status, body = await _models(session, replica, key)
        elapsed = time.monotonic() - since
        if status == 401:
            _assert_invalid_key(body)
            return elapsed
        assert status == 200, f"{status} {body}\n{replica.tail()}"
        if elapsed > bound + 1.0:
            pytest.fail(
                f"the key was still accepted {elapsed:.2f} s later (bound {bound} s)\n{replica.tail()}"
            )
        await asyncio.sleep(POLL)


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("dashscope") as upstream:
        yield upstream


# Two replicas sharing one PostgreSQL schema


@pytest.mark.postgres
@pytest.mark.redis
@needs_postgres
@needs_redis
async def test_a_key_disabled_through_one_replica_is_refused_by_the_other_within_a_second_over_redis(
    tmp_path: Path, fake: FakeUpstream, postgres_schema_dsn: str
) -> None:
    # A TTL far beyond the bound: B may only refuse the cached key because the broadcast told it to.
    env = _replica_env(fake, postgres_schema_dsn, cache_ttl="30s", redis_url=REDIS_URL)
    async with replicas(tmp_path, {"a": env, "b": env}) as started, aiohttp.ClientSession() as session:
        a, b = started.values()
        public_id, key = await _create_key(session, a, "disabled-across")
        await _accepted(session, b, key)  # works on B, and is now in B's cache
        await _admin(session, a, f"/{public_id}:disable")
        disabled = time.monotonic()
        delay = await _until_refused(session, b, key, disabled, BROADCAST_BOUND)
        status, body = await _models(session, a, key)

    log.info("disable through A -> first 401 on B: %.3f s (cache_ttl 30s, Redis)", delay)
    assert delay <= BROADCAST_BOUND, f"B refused the disabled key only after {delay:.3f} s"
    assert status == 401
    _assert_invalid_key(body)


@pytest.mark.postgres
@needs_postgres
async def test_without_redis_the_replica_that_disabled_a_key_refuses_it_at_once_and_the_other_within_the_ttl(
    tmp_path: Path, fake: FakeUpstream, postgres_schema_dsn: str
) -> None:
    env = _replica_env(fake, postgres_schema_dsn, cache_ttl=f"{TTL:g}s")
    async with replicas(tmp_path, {"a": env, "b": env}) as started, aiohttp.ClientSession() as session:
        a, b = started.values()
        public_id, key = await _create_key(session, a, "disabled-by-ttl")
        await _accepted(session, a, key)
        await _accepted(session, b, key)  # cached on both
        await _admin(session, a, f"/{public_id}:disable")
        disabled = time.monotonic()
        status_a, body_a = await _models(session, a, key)
        delay = await _until_refused(session, b, key, disabled, TTL_BOUND)

    log.info("disable through A -> first 401 on B: %.3f s (cache_ttl %g s, no Redis)", delay, TTL)
    assert status_a == 401, f"A still accepted the key it had just disabled: {body_a}"
    _assert_invalid_key(body_a)
    assert delay <= TTL_BOUND, f"B refused the disabled key only after {delay:.3f} s"


@pytest.mark.postgres
@pytest.mark.redis
@needs_postgres
@needs_redis
async def test_a_key_rotated_through_one_replica_without_grace_changes_on_the_other_within_a_second(
    tmp_path: Path, fake: FakeUpstream, postgres_schema_dsn: str
) -> None:
    env = _replica_env(fake, postgres_schema_dsn, cache_ttl="30s", redis_url=REDIS_URL)
    async with replicas(tmp_path, {"a": env, "b": env}) as started, aiohttp.ClientSession() as session:
        a, b = started.values()
        public_id, old = await _create_key(session, a, "rotated-across")
        await _accepted(session, b, old)
        rotated = await _admin(session, a, f"/{public_id}:rotate", {"grace_seconds": 0})
        answered = time.monotonic()
        new = rotated["key"]
        delay = await _until_refused(session, b, old, answered, BROADCAST_BOUND)
        await _accepted(session, b, new)
        status, body = await _models(session, a, old)

    log.info("rotate (grace 0) through A -> old key's first 401 on B: %.3f s (cache_ttl 30s, Redis)", delay)
    assert rotated["id"] == public_id
    assert new != old
    assert new.startswith(f"sk-llmgw-{public_id}-")
    assert rotated["previous_secret_valid_until"] is None
    assert delay <= BROADCAST_BOUND, f"B refused the rotated-out key only after {delay:.3f} s"
    assert status == 401
    _assert_invalid_key(body)


# The README's flow: one process, the shipped configs, SQLite


def _operator_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """What an operator's shell holds: no LLMGW_ variable but those given, the shipped configs."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("LLMGW_")}
    env["CONFIG_PATH"] = str(REPO / "configs")
    env["LLMGW_STORAGE__URL"] = f"sqlite:///{tmp_path / 'llmgw.db'}"
    env.update(overrides)
    return env


async def _run_cli(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode if proc.returncode is not None else -1, stdout.decode(), stderr.decode()


async def test_the_readme_flow_refuses_a_call_without_a_key_then_a_cli_made_key_works_with_the_openai_sdk(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    # As the README says: LLMGW_AUTH__PEPPER=$(openssl rand -base64 48), nothing else about keys.
    pepper = base64.b64encode(secrets.token_bytes(48)).decode()
    serve_env = {
        "LLMGW_LLM__PROVIDERS__DASHSCOPE__BASE_URL": fake.base_url,
        "DASHSCOPE_API_KEY": "sk-test",
        "LLMGW_AUTH__ENABLED": "true",  # the shipped default; the harness turns it off unless told
        "LLMGW_AUTH__PEPPER": pepper,
    }
    async with serving(tmp_path, serve_env) as replica, aiohttp.ClientSession() as session:
        async with session.post(f"{replica.url}/v1/chat/completions", json=CHAT) as response:
            status, refused = response.status, await response.json(content_type=None)
        assert status == 401, refused
        _assert_invalid_key(refused)

        # The CLI against the same store and pepper, while the server runs.
        code, stdout, stderr = await _run_cli(
            _operator_env(tmp_path, LLMGW_AUTH__PEPPER=pepper), "keys", "create", "--name", "me"
        )
        assert code == 0, f"llmgw keys create exited {code}:\n{stderr}"
        key = stdout.splitlines()[0].strip()
        assert key.startswith("sk-llmgw-"), stdout

        async with openai.AsyncOpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0) as client:
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
            with pytest.raises(openai.AuthenticationError) as wrong:
                await client.with_options(api_key=key + "x").models.list()

    assert completion.choices[0].message.content == expected_content(3)
    assert completion.model == MODEL
    assert wrong.value.status_code == 401
    assert wrong.value.code == "invalid_api_key"
    assert [r.json["model"] for r in fake.requests] == ["qwen-turbo"]


async def test_serve_with_auth_on_and_no_pepper_exits_at_once_naming_auth_pepper(tmp_path: Path) -> None:
    env = _operator_env(
        tmp_path, **{f"LLMGW_{n}__LISTEN": '"127.0.0.1:0"' for n in ("HTTP", "GRPC", "HEALTH")}
    )
    started = time.monotonic()
    code, stdout, stderr = await _run_cli(env, "serve")
    took = time.monotonic() - started

    assert code != 0, stdout + stderr
    assert "auth.pepper" in stderr, stderr
    assert "ready" not in stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert took < 8.0, f"took {took:.1f} s to give up"  # Python's own start-up included
