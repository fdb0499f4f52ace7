"""Shared by the auth tests of both fronts: a gateway with keys on over an in-memory store the test can
write to, keys made through the admin REST API, the kinds of bad key a client may present, and a count of
what reached the upstreams."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from llmgw.domain.keys import PREFIX, ApiKey, Scope, hash_secret, mint_key, parse_key
from llmgw.infrastructure.config.settings import AuthSettings, Settings
from llmgw.infrastructure.storage.memory import MemoryStore
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

PEPPER = "p" * 32
#: The operator's `auth.admin_key`.
ADMIN_KEY = "a" * 40
#: A catalog model the restricted keys may use, one they may not, and the restriction.
ALLOWED_MODEL = "local/llama"
DISALLOWED_MODEL = "dashscope/qwen-turbo"
LOCAL_ONLY = ["local/*"]
LOCAL_MODELS = {"local/llama", "local/embed", "local/no-price"}

_SECRET_ALPHABET = string.ascii_letters + string.digits + "-_"


def auth_settings(*, cache_ttl: float = 5.0, enabled: bool = True) -> AuthSettings:
    return AuthSettings(enabled=enabled, pepper=PEPPER, admin_key=ADMIN_KEY, cache_ttl=cache_ttl)


@dataclass
class Authed:
    """A running gateway with keys on, and the store its keys live in."""

    gw: Running
    store: MemoryStore
    fakes: Mapping[str, FakeUpstream]

    def sent_upstream(self) -> int:
        """How many requests every fake upstream received, in all."""
        return sum(len(fake.requests) for fake in self.fakes.values())

    async def put_key(self, **fields: Any) -> str:
        """A key written straight into the store (e.g. already expired); its full text."""
        text, presented = mint_key()
        values: dict[str, Any] = {"name": "direct", **fields}
        await self.store.put_key(
            ApiKey(
                public_id=presented.public_id,
                secret_hash=hash_secret(presented.secret, PEPPER.encode()),
                **values,
            )
        )
        return text


@asynccontextmanager
async def authed_gateway(
    fakes: Mapping[str, FakeUpstream],
    *,
    cache_ttl: float = 5.0,
    enabled: bool = True,
    settings: Settings | None = None,
) -> AsyncIterator[Authed]:
    store = MemoryStore()
    base = settings if settings is not None else settings_for(fakes)
    configured = replace(base, auth=auth_settings(cache_ttl=cache_ttl, enabled=enabled))
    async with running_gateway(configured, store=store) as gw:
        yield Authed(gw, store, fakes)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    gw: Running,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    base: str | None = None,
) -> tuple[int, Any]:
    """One raw HTTP call to the REST port (or `base`): status and JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base or gw.rest_url}{path}", headers=headers, json=json) as response,
    ):
        return response.status, await response.json(content_type=None)


@dataclass(frozen=True)
class Issued:
    text: str
    id: str
    body: dict[str, Any]


async def admin_post(gw: Running, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    status, answer = await call(gw, "POST", path, headers=bearer(ADMIN_KEY), json=dict(body or {}))
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


async def new_key(gw: Running, **fields: Any) -> Issued:
    """A key made with the operator's admin key over `POST /admin/v1/keys`."""
    answer = await admin_post(gw, "/admin/v1/keys", {"name": "test", **fields})
    assert parse_key(answer["key"]) is not None
    return Issued(answer["key"], answer["id"], answer)


async def new_team(gw: Running, name: str = "team") -> str:
    answer = await admin_post(gw, "/admin/v1/teams", {"name": name})
    team_id = answer["id"]
    assert isinstance(team_id, str)
    return team_id


async def rotate(gw: Running, key_id: str, grace_seconds: float) -> Issued:
    answer = await admin_post(gw, f"/admin/v1/keys/{key_id}:rotate", {"grace_seconds": grace_seconds})
    return Issued(answer["key"], answer["id"], answer)


async def disable(gw: Running, key_id: str) -> None:
    answer = await admin_post(gw, f"/admin/v1/keys/{key_id}:disable")
    assert answer["disabled"] is True


def _secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(43))


def malformed_keys() -> dict[str, str]:
    """Keys that are not ours by their shape."""
    public_id = "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))
    return {
        "random_text": "hello-this-is-not-a-key",
        "wrong_prefix": f"sk-other-{public_id}-{_secret()}",
        "upper_case_public_id": f"{PREFIX}{public_id.upper()}-{_secret()}",
        "bad_secret_chars": f"{PREFIX}{public_id}-{'!' * 43}",
        "wrong_separator": f"{PREFIX}{public_id}_{_secret()}",
        "one_char_short": f"{PREFIX}{public_id}-{_secret()[:-1]}",
    }


def unknown_key() -> str:
    """Well formed, but in no store."""
    return mint_key()[0]


def with_wrong_secret(text: str) -> str:
    """The same public id with another (well-formed) secret."""
    presented = parse_key(text)
    assert presented is not None
    other = _secret()
    while other == presented.secret:  # pragma: no cover - 1 in 64**43
        other = _secret()
    return f"{PREFIX}{presented.public_id}-{other}"


def in_a_moment(seconds: float) -> float:
    return time.time() + seconds


INFERENCE = [Scope.INFERENCE.value]
USAGE_READ = [Scope.USAGE_READ.value]
ADMIN = [Scope.ADMIN.value]
