"""Limits as top-level fields of keys and teams through a real gateway: set and changed over the REST and the
gRPC admin API, each front showing what the other wrote, kept in SQLite and PostgreSQL across a restart,
on a database that an older llmgw made (migration 4 adds the limit columns beside the keys it has)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from grpclib import GRPCError, Status

from llmgw.domain.keys import ApiKey, Scope, Team
from llmgw.infrastructure.config.settings import AuthSettings
from llmgw.infrastructure.grpc.messages import admin_v1
from llmgw.infrastructure.storage import postgres, sqlite
from llmgw.infrastructure.storage.key_rows import (
    KEY_COLUMNS,
    LIMIT_COLUMNS,
    TEAM_COLUMNS,
    column_list,
    key_to_row,
    team_to_row,
)
from tests.auth_setup import bearer, call
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for
from tests.stores import fresh_postgres_schema

ADMIN_KEY = "a" * 40
AUTH = AuthSettings(enabled=True, pepper="p" * 32, admin_key=ADMIN_KEY)
NO_LIMITS_JSON = dict.fromkeys(LIMIT_COLUMNS)
# A key and a team written by llmgw before limits existed (schema version 3).
OLD_TEAM = Team(id="team-old000000000", name="old team", created_at=1_700_000_000.0)
OLD_KEY = ApiKey(
    public_id="old000000000",
    name="old key",
    secret_hash=b"\x01" * 32,
    scopes=frozenset({Scope.INFERENCE}),
    team_id=OLD_TEAM.id,
    created_at=1_700_000_000.0,
)
_OLD_KEY_COLUMNS = KEY_COLUMNS[: -len(LIMIT_COLUMNS)]
_OLD_TEAM_COLUMNS = TEAM_COLUMNS[: -len(LIMIT_COLUMNS)]


def _insert(table: str, columns: tuple[str, ...], placeholders: list[str]) -> str:
    return f"INSERT INTO {table} ({column_list(columns)}) VALUES ({', '.join(placeholders)})"  # noqa: S608


async def _old_sqlite(path: Path) -> str:
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in (statement for migration in sqlite.MIGRATIONS[:3] for statement in migration):
            await db.execute(statement)
        await db.execute("INSERT INTO llmgw_schema_version VALUES (1, 0), (2, 0), (3, 0)")
        await db.execute(
            _insert("api_keys", _OLD_KEY_COLUMNS, ["?"] * len(_OLD_KEY_COLUMNS)),
            key_to_row(OLD_KEY)[: len(_OLD_KEY_COLUMNS)],
        )
        await db.execute(
            _insert("teams", _OLD_TEAM_COLUMNS, ["?"] * len(_OLD_TEAM_COLUMNS)),
            team_to_row(OLD_TEAM)[: len(_OLD_TEAM_COLUMNS)],
        )
        await db.commit()
    return f"sqlite:///{path}"


async def _old_postgres(dsn: str, schema: str) -> str:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with connection.transaction():
            await connection.execute(
                "CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            for statement in (statement for migration in postgres.MIGRATIONS[:3] for statement in migration):
                await connection.execute(statement)
            await connection.execute("INSERT INTO llmgw_schema_version VALUES (1, 0), (2, 0), (3, 0)")
            places = [f"${n}" for n in range(1, len(_OLD_KEY_COLUMNS) + 1)]
            await connection.execute(
                _insert("api_keys", _OLD_KEY_COLUMNS, places), *key_to_row(OLD_KEY)[: len(_OLD_KEY_COLUMNS)]
            )
            places = [f"${n}" for n in range(1, len(_OLD_TEAM_COLUMNS) + 1)]
            await connection.execute(
                _insert("teams", _OLD_TEAM_COLUMNS, places), *team_to_row(OLD_TEAM)[: len(_OLD_TEAM_COLUMNS)]
            )
    finally:
        await connection.close()
    return f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store at schema version 3 holding OLD_KEY and OLD_TEAM, as an older llmgw left it."""
    if request.param == "sqlite":
        yield await _old_sqlite(tmp_path / "llmgw.db")
    else:
        async with fresh_postgres_schema() as (dsn, schema):
            yield await _old_postgres(dsn, schema)


@asynccontextmanager
async def gateway(fakes: dict[str, FakeUpstream], storage_url: str) -> AsyncIterator[Running]:
    async with running_gateway(settings_for(fakes, storage_url=storage_url, auth=AUTH)) as running:
        yield running


async def rest(gw: Running, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    return await call(gw, method, path, headers=bearer(ADMIN_KEY), json=body)


async def ok(gw: Running, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    status, answer = await rest(gw, method, path, body)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


def limits_of(shown: dict[str, Any]) -> dict[str, Any]:
    return {name: shown[name] for name in LIMIT_COLUMNS}


def grpc_admin(gw: Running) -> admin_v1.AdminServiceStub:
    return admin_v1.AdminServiceStub(gw.channel, metadata={"authorization": f"Bearer {ADMIN_KEY}"})


def grpc_limits(message: admin_v1.ApiKey | admin_v1.Team) -> dict[str, Any]:
    """A key's or team's `Limits` as the REST API's six fields."""
    limits = message.limits
    assert limits is not None  # always set in answers
    return {name: getattr(limits, name) for name in LIMIT_COLUMNS}


async def test_limits_set_over_rest_show_on_keys_and_teams_and_outlive_a_restart(
    fakes: dict[str, FakeUpstream], storage_url: str
) -> None:
    async with gateway(fakes, storage_url) as gw:
        old_key = await ok(gw, "GET", f"/admin/v1/keys/{OLD_KEY.public_id}")
        old_team = await ok(gw, "GET", f"/admin/v1/teams/{OLD_TEAM.id}")
        assert (old_key["name"], limits_of(old_key)) == ("old key", NO_LIMITS_JSON)
        assert (old_team["name"], limits_of(old_team)) == ("old team", NO_LIMITS_JSON)

        created = await ok(
            gw, "POST", "/admin/v1/keys", {"name": "ci", "rpm": 60, "budget_usd": 5, "budget_period": "day"}
        )
        assert limits_of(created) == {**NO_LIMITS_JSON, "rpm": 60, "budget_usd": 5.0, "budget_period": "day"}
        key_path = f"/admin/v1/keys/{created['id']}"

        changed = await ok(gw, "PATCH", key_path, {"tpm": 20_000, "soft_budget_usd": 4})
        assert limits_of(changed) == {
            **NO_LIMITS_JSON,
            "rpm": 60,
            "tpm": 20_000,
            "budget_usd": 5.0,
            "budget_period": "day",
            "soft_budget_usd": 4.0,
        }
        cleared = await ok(gw, "PATCH", key_path, {"rpm": None, "name": "ci-2"})
        assert (cleared["name"], cleared["rpm"], cleared["tpm"]) == ("ci-2", None, 20_000)

        old_key = await ok(gw, "PATCH", f"/admin/v1/keys/{OLD_KEY.public_id}", {"max_parallel": 3})
        team = await ok(
            gw, "PATCH", f"/admin/v1/teams/{OLD_TEAM.id}", {"budget_usd": 100, "budget_period": "month"}
        )
        new_team = await ok(gw, "POST", "/admin/v1/teams", {"name": "search", "rpm": 600})
        assert limits_of(team) == {**NO_LIMITS_JSON, "budget_usd": 100.0, "budget_period": "month"}
        assert limits_of(new_team) == {**NO_LIMITS_JSON, "rpm": 600}

        status, refused = await rest(gw, "PATCH", key_path, {"budget_period": "year"})
        assert status == 400
        assert refused["error"]["param"] == "budget_period"
        listed = await ok(gw, "GET", "/admin/v1/keys")

    async with gateway(fakes, storage_url) as gw:
        assert await ok(gw, "GET", key_path) == cleared
        assert await ok(gw, "GET", f"/admin/v1/keys/{OLD_KEY.public_id}") == old_key
        assert await ok(gw, "GET", f"/admin/v1/teams/{OLD_TEAM.id}") == team
        assert await ok(gw, "GET", f"/admin/v1/teams/{new_team['id']}") == new_team
        assert await ok(gw, "GET", "/admin/v1/keys") == listed


async def test_limits_set_over_grpc_read_the_same_over_rest_and_an_update_replaces_them_whole(
    fakes: dict[str, FakeUpstream], storage_url: str
) -> None:
    async with gateway(fakes, storage_url) as gw:
        stub = grpc_admin(gw)
        created = await stub.create_key(
            admin_v1.CreateKeyRequest(
                name="ci", limits=admin_v1.Limits(rpm=60, budget_usd=5.0, budget_period="day")
            )
        )
        info = created.key_info
        assert info is not None
        assert grpc_limits(info) == {**NO_LIMITS_JSON, "rpm": 60, "budget_usd": 5.0, "budget_period": "day"}
        assert limits_of(await ok(gw, "GET", f"/admin/v1/keys/{info.id}")) == grpc_limits(info)

        renamed = await stub.update_key(admin_v1.UpdateKeyRequest(id=info.id, name="ci-2"))
        assert grpc_limits(renamed) == grpc_limits(info)  # no Limits in the update: left as they were

        replaced = await stub.update_key(
            admin_v1.UpdateKeyRequest(id=info.id, limits=admin_v1.Limits(tpm=1000, soft_budget_usd=2.5))
        )
        assert grpc_limits(replaced) == {**NO_LIMITS_JSON, "tpm": 1000, "soft_budget_usd": 2.5}
        assert limits_of(await ok(gw, "GET", f"/admin/v1/keys/{info.id}")) == grpc_limits(replaced)

        old = await stub.get_key(admin_v1.GetKeyRequest(id=OLD_KEY.public_id))
        assert grpc_limits(old) == NO_LIMITS_JSON

        team = await stub.create_team(
            admin_v1.CreateTeamRequest(name="search", limits=admin_v1.Limits(max_parallel=10))
        )
        assert grpc_limits(team) == {**NO_LIMITS_JSON, "max_parallel": 10}
        team = await stub.update_team(
            admin_v1.UpdateTeamRequest(
                id=team.id, limits=admin_v1.Limits(budget_usd=50.0, budget_period="week")
            )
        )
        assert grpc_limits(team) == {**NO_LIMITS_JSON, "budget_usd": 50.0, "budget_period": "week"}
        assert limits_of(await ok(gw, "GET", f"/admin/v1/teams/{team.id}")) == grpc_limits(team)

        with pytest.raises(GRPCError) as refused:
            await stub.update_key(admin_v1.UpdateKeyRequest(id=info.id, limits=admin_v1.Limits(rpm=0)))
        assert refused.value.status is Status.INVALID_ARGUMENT
        assert "rpm" in (refused.value.message or "")

    async with gateway(fakes, storage_url) as gw:
        stub = grpc_admin(gw)
        again = await stub.get_key(admin_v1.GetKeyRequest(id=info.id))
        assert grpc_limits(again) == grpc_limits(replaced)
        cleared = await stub.update_key(admin_v1.UpdateKeyRequest(id=info.id, limits=admin_v1.Limits()))
        assert grpc_limits(cleared) == NO_LIMITS_JSON
        assert (await stub.get_team(admin_v1.GetTeamRequest(id=team.id))).limits == team.limits


async def test_an_older_llmgw_key_row_without_limit_columns_reads_back_with_none(storage_url: str) -> None:
    """The store alone: the old rows read with no limits, and a key's limits round-trip exactly."""
    from llmgw.domain.limits import Limits, Period
    from llmgw.infrastructure.storage.factory import create_store
    from tests.stores import opened

    store: Any = create_store(storage_url)
    async with opened(store):
        assert await store.get_key(OLD_KEY.public_id) == OLD_KEY
        assert await store.get_team(OLD_TEAM.id) == OLD_TEAM
        limits = Limits(
            rpm=2**53 - 1,
            tpm=1,
            max_parallel=7,
            budget_usd=0.000001,
            budget_period=Period.WEEK,
            soft_budget_usd=1e9,
        )
        await store.put_key(dataclasses.replace(OLD_KEY, limits=limits))
        await store.put_team(dataclasses.replace(OLD_TEAM, limits=limits))
        key = await store.get_key(OLD_KEY.public_id)
        team = await store.get_team(OLD_TEAM.id)
        assert key is not None
        assert team is not None
        assert key.limits == team.limits == limits
        assert type(key.limits.rpm) is int
        assert key.limits.budget_period is Period.WEEK
