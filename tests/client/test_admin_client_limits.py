"""`client.admin` and limits: the six keyword arguments of keys and teams create and update, the six fields
of `ApiKey` and `Team` with `to_dict()` equal to the REST admin API's answer, and an update that changes
one limit keeping the others, as a REST PATCH does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from llmgw_client import BadRequestError, LLMGateway

from tests.auth_setup import ADMIN_KEY, authed_gateway, bearer, call
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running

NO_LIMITS = dict.fromkeys(("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "soft_budget_usd"))


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    async with authed_gateway(fakes) as authed:
        yield authed.gw


@pytest.fixture
async def admin(gw: Running) -> AsyncIterator[LLMGateway]:
    target = f"127.0.0.1:{gw.fronts.ports['grpc']}"
    async with LLMGateway(target, api_key=ADMIN_KEY, max_retries=0, timeout=10.0) as client:
        yield client


async def rest(gw: Running, path: str) -> Any:
    status, body = await call(gw, "GET", path, headers=bearer(ADMIN_KEY))
    assert status == 200, body
    return body


def limits(result: Any) -> dict[str, Any]:
    return {name: getattr(result, name) for name in NO_LIMITS}


async def test_a_key_created_with_limits_reads_as_the_rest_api_shows_it(
    gw: Running, admin: LLMGateway
) -> None:
    issued = await admin.admin.keys.create(name="ci", rpm=60, budget_usd=5, budget_period="day")

    assert limits(issued) == {**NO_LIMITS, "rpm": 60, "budget_usd": 5.0, "budget_period": "day"}
    retrieved = await admin.admin.keys.retrieve(issued.id)
    assert retrieved.to_dict() == await rest(gw, f"/admin/v1/keys/{issued.id}")
    plain = await admin.admin.keys.create(name="plain")
    assert limits(plain) == NO_LIMITS
    assert (await admin.admin.keys.retrieve(plain.id)).to_dict() == await rest(
        gw, f"/admin/v1/keys/{plain.id}"
    )


async def test_a_key_update_of_one_limit_keeps_the_others_and_none_clears_one(
    gw: Running, admin: LLMGateway
) -> None:
    issued = await admin.admin.keys.create(name="ci", rpm=60, tpm=10_000, budget_usd=5, budget_period="week")

    changed = await admin.admin.keys.update(issued.id, rpm=120, soft_budget_usd=4)
    assert limits(changed) == {
        **NO_LIMITS,
        "rpm": 120,
        "tpm": 10_000,
        "budget_usd": 5.0,
        "budget_period": "week",
        "soft_budget_usd": 4.0,
    }
    cleared = await admin.admin.keys.update(issued.id, tpm=None, name="renamed")
    assert (cleared.name, cleared.tpm, cleared.rpm) == ("renamed", None, 120)
    assert cleared.to_dict() == await rest(gw, f"/admin/v1/keys/{issued.id}")

    every = await admin.admin.keys.update(
        issued.id, rpm=1, tpm=2, max_parallel=3, budget_usd=4, budget_period=None, soft_budget_usd=None
    )
    assert limits(every) == {**NO_LIMITS, "rpm": 1, "tpm": 2, "max_parallel": 3, "budget_usd": 4.0}


async def test_a_team_has_limits_created_and_changed_as_a_key_has(gw: Running, admin: LLMGateway) -> None:
    team = await admin.admin.teams.create(
        name="search", max_parallel=10, budget_usd=100, budget_period="month"
    )
    assert limits(team) == {**NO_LIMITS, "max_parallel": 10, "budget_usd": 100.0, "budget_period": "month"}

    team = await admin.admin.teams.update(team.id, budget_usd=None)
    assert limits(team) == {**NO_LIMITS, "max_parallel": 10}  # the period went with the last budget
    assert team.to_dict() == await rest(gw, f"/admin/v1/teams/{team.id}")
    page = await admin.admin.teams.list()
    assert page.to_dict()["data"] == (await rest(gw, "/admin/v1/teams"))["data"]


async def test_a_limit_the_server_refuses_is_a_bad_request(admin: LLMGateway) -> None:
    with pytest.raises(BadRequestError) as refused:
        await admin.admin.keys.create(name="ci", rpm=0)

    assert "rpm" in str(refused.value)
