"""Visibility of limits through a real gateway: `GET /admin/v1/keys|teams/{id}/usage`, gRPC `GetKeyUsage` /
`GetTeamUsage`, the client's `admin.keys|teams.usage` and `llmgw keys|teams usage` show the same window,
in-flight count and budget money, which adds up to the generation records' costs; and each record names
the limit scopes it was admitted under, over REST and gRPC, in SQLite and PostgreSQL, on a database that
an older llmgw made (migration 5 adds the column beside the records it has)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from grpclib import GRPCError, Status
from llmgw_client import LLMGateway

from llmgw.application.limit_fields import LIMIT_FIELDS
from llmgw.cli import main
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.keys import parse_key
from llmgw.domain.limits import Limits, usd_to_micros
from llmgw.infrastructure.config.settings import CacheSettings, LimitsSettings, Settings
from llmgw.infrastructure.grpc.messages import admin_v1, v1
from llmgw.infrastructure.storage import postgres, sqlite
from llmgw.infrastructure.storage.rows import COLUMN_LIST, COLUMNS, to_row
from tests.auth_setup import ADMIN_KEY, PEPPER, auth_settings, bearer, call
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for
from tests.stores import fresh_postgres_schema

PRICED = "dashscope/qwen-turbo"
HI = [{"role": "user", "content": "Say hello."}]
REDIS_URL = os.environ.get("LLMGW_TEST_REDIS_URL", "")
BUDGET_FIELDS = (
    "period",
    "period_start",
    "period_end",
    "budget_usd",
    "soft_budget_usd",
    "spent_usd",
    "reserved_usd",
    "remaining_usd",
    "soft_exceeded",
    "priced_models_only",
)
# A record written by llmgw before records named their limits (schema version 4).
OLD_RECORD = GenerationRecord(
    id="gen-018bd07dfe81000000000000000000",
    request_id="req-old",
    kind=GenerationKind.CHAT,
    model=PRICED,
    provider="dashscope",
    upstream_model="qwen-turbo",
    created_at=time.time() - 60,
    streamed=False,
    status=GenerationStatus.COMPLETED,
)
_OLD_COLUMNS = COLUMNS[: COLUMNS.index("limits")]
_OLD_COLUMN_LIST = COLUMN_LIST.rsplit(', "limits"', 1)[0]


async def _old_sqlite(path: Path) -> str:
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in (statement for migration in sqlite.MIGRATIONS[:4] for statement in migration):
            await db.execute(statement)
        await db.execute("INSERT INTO llmgw_schema_version VALUES (1, 0), (2, 0), (3, 0), (4, 0)")
        places = ", ".join("?" * len(_OLD_COLUMNS))
        await db.execute(
            f"INSERT INTO generations ({_OLD_COLUMN_LIST}) VALUES ({places})",  # noqa: S608
            to_row(OLD_RECORD)[: len(_OLD_COLUMNS)],
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
            for statement in (statement for migration in postgres.MIGRATIONS[:4] for statement in migration):
                await connection.execute(statement)
            await connection.execute("INSERT INTO llmgw_schema_version VALUES (1, 0), (2, 0), (3, 0), (4, 0)")
            places = ", ".join(f"${n}" for n in range(1, len(_OLD_COLUMNS) + 1))
            await connection.execute(
                f"INSERT INTO generations ({_OLD_COLUMN_LIST}) VALUES ({places})",  # noqa: S608
                *to_row(OLD_RECORD)[: len(_OLD_COLUMNS)],
            )
    finally:
        await connection.close()
    return f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store at schema version 4 holding OLD_RECORD, as an older llmgw left it."""
    if request.param == "sqlite":
        yield await _old_sqlite(tmp_path / "llmgw.db")
    else:
        async with fresh_postgres_schema() as (dsn, schema):
            yield await _old_postgres(dsn, schema)


def limited_settings(fakes: dict[str, FakeUpstream], storage_url: str, *, redis_url: str = "") -> Settings:
    """Keys on; the priced model limited to 1M tokens a minute and the gateway to 10 000 requests a minute,
    so a request may count against all four kinds of scope."""
    base = settings_for(fakes, storage_url=storage_url, auth=auth_settings())
    models = tuple(replace(m, limits=Limits(tpm=1_000_000)) if m.id == PRICED else m for m in base.models)
    return replace(
        base,
        models=models,
        limits=LimitsSettings(gateway=Limits(rpm=10_000)),
        cache=CacheSettings(redis_url=redis_url),
    )


@asynccontextmanager
async def gateway(
    fakes: dict[str, FakeUpstream], storage_url: str = "memory://", *, redis_url: str = ""
) -> AsyncIterator[Running]:
    async with running_gateway(limited_settings(fakes, storage_url, redis_url=redis_url)) as running:
        yield running


async def ok(
    gw: Running, method: str, path: str, body: dict[str, Any] | None = None, key: str = ADMIN_KEY
) -> Any:
    status, answer = await call(gw, method, path, headers=bearer(key), json=body)
    assert status == 200, answer
    return answer


async def chat(gw: Running, key: str, model: str = PRICED) -> str:
    """One chat completion with `key`; its generation id."""
    answer = await ok(gw, "POST", "/v1/chat/completions", {"model": model, "messages": HI}, key=key)
    return str(answer["id"])


async def settled_usage(gw: Running, path: str, within: float = 5.0) -> dict[str, Any]:
    """The usage once every reservation settled (a request is charged a moment after its answer)."""
    deadline = time.monotonic() + within
    while True:
        usage: dict[str, Any] = await ok(gw, "GET", path)
        budget = usage["budget"]
        if budget is None or budget["reserved_usd"] == 0 or time.monotonic() > deadline:
            return usage
        await asyncio.sleep(0.02)


def steady(usage: dict[str, Any]) -> dict[str, Any]:
    """`usage` without what moves with the clock between two reads: `at`, the seconds to a reset, and the
    tokens left (they come back at tpm / 60 a second). The tests' rpm are low enough (a request back every
    6 s or more) for the requests left to hold still between reads."""
    out = {name: value for name, value in usage.items() if name != "at"}
    if out["requests"] is not None:
        out["requests"] = {"limit": out["requests"]["limit"], "remaining": out["requests"]["remaining"]}
    if out["tokens"] is not None:
        out["tokens"] = {"limit": out["tokens"]["limit"]}
    return out


def admin_stub(gw: Running, key: str = ADMIN_KEY) -> admin_v1.AdminServiceStub:
    return admin_v1.AdminServiceStub(gw.channel, metadata={"authorization": f"Bearer {key}"})


def grpc_usage(message: admin_v1.Usage, owner: str) -> dict[str, Any]:
    """A `Usage` message as the REST API's object."""
    limits = message.limits
    assert limits is not None  # always set
    shown: dict[str, Any] = {"object": "usage", owner: getattr(message, owner), "at": message.at}
    shown["limits"] = {name: getattr(limits, name) for name in LIMIT_FIELDS}
    for part in ("requests", "tokens"):
        rate = getattr(message, part)
        shown[part] = (
            None
            if rate is None
            else {"limit": rate.limit, "remaining": rate.remaining, "reset_seconds": rate.reset_seconds}
        )
    shown["in_flight"] = message.in_flight
    budget = message.budget
    shown["budget"] = None if budget is None else {name: getattr(budget, name) for name in BUDGET_FIELDS}
    return shown


async def micros_of(gw: Running, generation_ids: list[str], key: str) -> int:
    """What the records say the requests cost, in micro-dollars."""
    total = 0
    for generation_id in generation_ids:
        record = (await ok(gw, "GET", f"/v1/generation/{generation_id}", key=key))["generation"]
        total += usd_to_micros(record["cost_usd"])
    return total


async def test_key_usage_shows_the_same_window_and_money_on_every_front_and_the_money_is_the_records(
    fakes: dict[str, FakeUpstream], storage_url: str
) -> None:
    async with gateway(fakes, storage_url) as gw:
        team = await ok(gw, "POST", "/admin/v1/teams", {"name": "search", "budget_usd": 100})
        issued = await ok(
            gw,
            "POST",
            "/admin/v1/keys",
            {
                "name": "ci",
                "team_id": team["id"],
                "rpm": 6,
                "tpm": 100_000,
                "max_parallel": 4,
                "budget_usd": 5,
                "budget_period": "day",
            },
        )
        generation_ids = [await chat(gw, issued["key"]) for _ in range(3)]

        usage = await settled_usage(gw, f"/admin/v1/keys/{issued['id']}/usage")

        day_start = time.time() // 86_400 * 86_400
        spent = await micros_of(gw, generation_ids, issued["key"])
        assert spent > 0
        assert steady(usage) == {
            "object": "usage",
            "key_id": issued["id"],
            "limits": {
                "rpm": 6,
                "tpm": 100_000,
                "max_parallel": 4,
                "budget_usd": 5.0,
                "budget_period": "day",
                "soft_budget_usd": None,
            },
            # One request back every 10 s: three used, three left.
            "requests": {"limit": 6, "remaining": 3},
            "tokens": {"limit": 100_000},
            "in_flight": 0,
            "budget": {
                "period": "day",
                "period_start": day_start,
                "period_end": day_start + 86_400,
                "budget_usd": 5.0,
                "soft_budget_usd": None,
                "spent_usd": spent / 1_000_000,
                "reserved_usd": 0.0,
                "remaining_usd": (5_000_000 - spent) / 1_000_000,
                "soft_exceeded": False,
                "priced_models_only": True,
            },
        }
        assert 20 < usage["requests"]["reset_seconds"] <= 30
        assert 99_000 < usage["tokens"]["remaining"] <= 100_000
        assert abs(usage["at"] - time.time()) < 5

        message = await admin_stub(gw).get_key_usage(admin_v1.GetKeyUsageRequest(id=issued["id"]))
        assert steady(grpc_usage(message, "key_id")) == steady(usage)
        async with LLMGateway(
            f"127.0.0.1:{gw.fronts.ports['grpc']}", api_key=ADMIN_KEY, max_retries=0
        ) as client:
            from_client = await client.admin.keys.usage(issued["id"])
        assert steady(from_client.to_dict()) == steady(usage)
        assert from_client.budget is not None
        assert from_client.budget.spent_usd == spent / 1_000_000


async def test_team_usage_counts_what_all_its_keys_used_on_every_front(
    fakes: dict[str, FakeUpstream], storage_url: str
) -> None:
    async with gateway(fakes, storage_url) as gw:
        team = await ok(gw, "POST", "/admin/v1/teams", {"name": "search", "rpm": 10, "budget_usd": 10})
        first = await ok(gw, "POST", "/admin/v1/keys", {"name": "a", "team_id": team["id"]})
        second = await ok(gw, "POST", "/admin/v1/keys", {"name": "b", "team_id": team["id"]})
        ids = [await chat(gw, first["key"]), await chat(gw, second["key"]), await chat(gw, second["key"])]

        usage = await settled_usage(gw, f"/admin/v1/teams/{team['id']}/usage")
        own = await ok(gw, "GET", f"/admin/v1/keys/{first['id']}/usage")

        spent = await micros_of(gw, ids[:1], first["key"]) + await micros_of(gw, ids[1:], second["key"])
        assert (usage["object"], usage["team_id"], "key_id" in usage) == ("usage", team["id"], False)
        assert usage["requests"]["remaining"] == 7  # one back every 6 s
        assert usage["budget"]["spent_usd"] == spent / 1_000_000
        assert (usage["budget"]["period"], usage["budget"]["period_start"]) == (None, None)
        # The key's own limits: it has none, whatever its team's.
        assert (own["requests"], own["tokens"], own["in_flight"], own["budget"]) == (None, None, None, None)

        message = await admin_stub(gw).get_team_usage(admin_v1.GetTeamUsageRequest(id=team["id"]))
        assert steady(grpc_usage(message, "team_id")) == steady(usage)
        async with LLMGateway(
            f"127.0.0.1:{gw.fronts.ports['grpc']}", api_key=ADMIN_KEY, max_retries=0
        ) as client:
            assert steady((await client.admin.teams.usage(team["id"])).to_dict()) == steady(usage)


async def test_usage_of_an_unknown_key_or_team_is_404_and_needs_the_admin_scope_and_is_audited(
    fakes: dict[str, FakeUpstream],
) -> None:
    async with gateway(fakes) as gw:
        status, answer = await call(gw, "GET", "/admin/v1/keys/nosuchkey234/usage", headers=bearer(ADMIN_KEY))
        assert (status, answer["error"]["code"]) == (404, "key_not_found")
        status, answer = await call(gw, "GET", "/admin/v1/teams/team-nosuch/usage", headers=bearer(ADMIN_KEY))
        assert (status, answer["error"]["code"]) == (404, "team_not_found")
        with pytest.raises(GRPCError) as missing:
            await admin_stub(gw).get_key_usage(admin_v1.GetKeyUsageRequest(id="nosuchkey234"))
        assert missing.value.status is Status.NOT_FOUND

        user = await ok(gw, "POST", "/admin/v1/keys", {"name": "user"})
        status, answer = await call(
            gw, "GET", f"/admin/v1/keys/{user['id']}/usage", headers=bearer(user["key"])
        )
        assert status == 403
        with pytest.raises(GRPCError) as refused:
            await admin_stub(gw, user["key"]).get_team_usage(admin_v1.GetTeamUsageRequest(id="team-x"))
        assert refused.value.status is Status.PERMISSION_DENIED

        await ok(gw, "GET", f"/admin/v1/keys/{user['id']}/usage")
        audit = (await ok(gw, "GET", "/admin/v1/audit?limit=10"))["data"]
        rows = [(row["action"], row["target"], row["details"].get("error")) for row in audit]
        # Refused at the edge (no admin scope), the user's two calls reached no use case.
        assert sorted(row for row in rows if row[0] != "audit.list") == sorted(
            [
                ("key.create", user["id"], None),
                ("key.usage", "nosuchkey234", "key_not_found"),
                ("key.usage", "nosuchkey234", "key_not_found"),
                ("key.usage", user["id"], None),
                ("team.usage", "team-nosuch", "team_not_found"),
            ]
        )


async def test_each_record_names_the_limits_it_was_admitted_under_over_rest_and_grpc_and_keeps_them(
    fakes: dict[str, FakeUpstream], storage_url: str
) -> None:
    async with gateway(fakes, storage_url) as gw:
        team = await ok(gw, "POST", "/admin/v1/teams", {"name": "search", "rpm": 100})
        limited = await ok(gw, "POST", "/admin/v1/keys", {"name": "a", "team_id": team["id"], "rpm": 10})
        plain = await ok(gw, "POST", "/admin/v1/keys", {"name": "b"})
        every = await chat(gw, limited["key"])
        unpriced = await chat(gw, plain["key"], model="local/no-price")

        expected = [f"key:{limited['id']}", f"team:{team['id']}", f"model:{PRICED}", "global"]
        shown = (await ok(gw, "GET", f"/v1/generation/{every}", key=limited["key"]))["generation"]
        assert shown["limits"] == expected
        shown = (await ok(gw, "GET", f"/v1/generation/{unpriced}", key=plain["key"]))["generation"]
        assert shown["limits"] == ["global"]
        answer = await gw.grpc.get_generation(
            v1.GetGenerationRequest(id=every), metadata={"authorization": f"Bearer {limited['key']}"}
        )
        assert answer.generation is not None
        assert answer.generation.limits == expected
        old = (await ok(gw, "GET", f"/v1/generation/{OLD_RECORD.id}"))["generation"]
        assert (old["request_id"], old["limits"]) == ("req-old", [])

    async with gateway(fakes, storage_url) as gw:
        shown = (await ok(gw, "GET", f"/v1/generation/{every}"))["generation"]
        assert shown["limits"] == expected
        answer = await gw.grpc.get_generation(
            v1.GetGenerationRequest(id=OLD_RECORD.id), metadata={"authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert answer.generation is not None
        assert answer.generation.limits == []


def llmgw(config: Path, *argv: str) -> tuple[int, str, str]:
    """`llmgw … --config-path config` in this process; exit status, stdout, stderr (captured by hand: the
    command runs in a thread while the gateway serves on the test's loop)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([*argv, "--config-path", str(config)])
    return status, out.getvalue(), err.getvalue()


def cli_config(tmp_path: Path, storage_url: str, redis_url: str) -> Path:
    config = tmp_path / "configs"
    config.mkdir()
    redis = f'[cache]\nredis_url = "{redis_url}"\n' if redis_url else ""
    (config / "default.toml").write_text(
        f'[storage]\nurl = "{storage_url}"\n[auth]\nenabled = true\npepper = "{PEPPER}"\n{redis}'
    )
    return config


@pytest.mark.redis
async def test_the_cli_reads_the_counters_the_gateways_share_in_redis(
    fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    if not REDIS_URL:
        pytest.skip("LLMGW_TEST_REDIS_URL is not set: the CLI reads the counters gateways share in Redis")
    storage_url = f"sqlite:///{tmp_path}/llmgw.db"
    config = cli_config(tmp_path, storage_url, REDIS_URL)
    async with gateway(fakes, storage_url, redis_url=REDIS_URL) as gw:
        team = await ok(gw, "POST", "/admin/v1/teams", {"name": "search", "rpm": 10})
        issued = await ok(
            gw, "POST", "/admin/v1/keys", {"name": "ci", "team_id": team["id"], "rpm": 6, "budget_usd": 1}
        )
        await chat(gw, issued["key"])
        await chat(gw, issued["key"])
        rest_key = await settled_usage(gw, f"/admin/v1/keys/{issued['id']}/usage")
        rest_team = await ok(gw, "GET", f"/admin/v1/teams/{team['id']}/usage")

        status, out, err = await asyncio.to_thread(llmgw, config, "keys", "usage", issued["id"])
        assert status == 0, err
        assert steady(json.loads(out)) == steady(rest_key)
        assert rest_key["requests"]["remaining"] == 4
        status, out, err = await asyncio.to_thread(llmgw, config, "teams", "usage", team["id"])
        assert status == 0, err
        assert steady(json.loads(out)) == steady(rest_team)
        assert rest_team["requests"]["remaining"] == 8

        status, out, err = await asyncio.to_thread(llmgw, config, "keys", "usage", "nosuchkey234")
        assert (status, out) == (1, "")
        assert "not found" in err
        audit = (await ok(gw, "GET", "/admin/v1/audit?limit=10"))["data"]
        assert ("cli", "team.usage", team["id"]) in [
            (row["actor"], row["action"], row["target"]) for row in audit
        ]


async def test_the_cli_without_redis_says_it_cannot_read_counters_kept_in_each_gateway_process(
    tmp_path: Path,
) -> None:
    config = cli_config(tmp_path, f"sqlite:///{tmp_path}/llmgw.db", "")
    status, out, _ = await asyncio.to_thread(llmgw, config, "keys", "create", "--name", "ci", "--rpm", "5")
    assert status == 0
    presented = parse_key(out.splitlines()[0])
    assert presented is not None

    status, out, err = await asyncio.to_thread(llmgw, config, "keys", "usage", presented.public_id)

    assert (status, out) == (1, "")
    assert "cache.redis_url" in err
    assert "GET /admin/v1/keys/ID/usage" in err
