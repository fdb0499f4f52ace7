"""The limits of keys and teams through the admin use cases: set on creation, changed one field at a time,
cleared with null, and refused, naming the field, when a value cannot be a limit."""

from __future__ import annotations

import math
from typing import Any

import pytest

from llmgw.application.admin import Admin
from llmgw.application.auth import Authenticator
from llmgw.domain.errors import InvalidRequest
from llmgw.domain.limits import NO_LIMITS, Limits, Period
from llmgw.infrastructure.storage.memory import MemoryStore

PEPPER = b"p" * 32
EVERY_LIMIT: dict[str, Any] = {
    "rpm": 60,
    "tpm": 100_000,
    "max_parallel": 4,
    "budget_usd": 5,
    "budget_period": "day",
    "soft_budget_usd": 4.5,
}
EVERY_LIMIT_STORED = Limits(
    rpm=60, tpm=100_000, max_parallel=4, budget_usd=5.0, budget_period=Period.DAY, soft_budget_usd=4.5
)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


class Clock:
    """Wall time that moves a millisecond each time it is read (audit rows sort by their time)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def admin(store: MemoryStore) -> Admin:
    clock = Clock()
    return Admin(store, Authenticator(store, pepper=PEPPER, cache_ttl=0.0, wall=clock), wall=clock)


async def _key_id(admin: Admin, **limits: Any) -> str:
    return (await admin.create_key("cli", {"name": "ci", **limits})).key.public_id


async def test_a_key_is_created_with_the_limits_given_and_stored_with_them(
    admin: Admin, store: MemoryStore
) -> None:
    issued = await admin.create_key("cli", {"name": "ci", **EVERY_LIMIT})

    assert issued.key.limits == EVERY_LIMIT_STORED
    stored = await store.get_key(issued.key.public_id)
    assert stored is not None
    assert stored.limits == EVERY_LIMIT_STORED
    assert type(stored.limits.budget_usd) is float


async def test_keys_and_teams_created_without_limits_have_none(admin: Admin) -> None:
    key_id = await _key_id(admin)
    team = await admin.create_team("cli", {"name": "search"})

    assert (await admin.get_key("cli", key_id)).limits == NO_LIMITS
    assert team.limits == NO_LIMITS


async def test_a_team_is_created_with_the_limits_given(admin: Admin, store: MemoryStore) -> None:
    team = await admin.create_team("cli", {"name": "search", "rpm": 600, "budget_usd": 100})

    assert team.limits == Limits(rpm=600, budget_usd=100.0)
    assert await store.get_team(team.id) == team


async def test_an_update_of_one_limit_keeps_the_others(admin: Admin) -> None:
    key_id = await _key_id(admin, **EVERY_LIMIT)

    key = await admin.update_key("cli", key_id, {"rpm": 120})

    assert key.limits == Limits(
        rpm=120, tpm=100_000, max_parallel=4, budget_usd=5.0, budget_period=Period.DAY, soft_budget_usd=4.5
    )
    assert (await admin.get_key("cli", key_id)).limits == key.limits


async def test_an_update_of_other_fields_keeps_the_limits(admin: Admin) -> None:
    key_id = await _key_id(admin, **EVERY_LIMIT)

    key = await admin.update_key("cli", key_id, {"name": "renamed"})

    assert key.limits == EVERY_LIMIT_STORED


async def test_null_clears_one_limit(admin: Admin) -> None:
    key_id = await _key_id(admin, **EVERY_LIMIT)

    key = await admin.update_key("cli", key_id, {"tpm": None, "budget_period": None})

    assert key.limits == Limits(rpm=60, max_parallel=4, budget_usd=5.0, soft_budget_usd=4.5)


async def test_clearing_the_last_budget_clears_its_period_too(admin: Admin) -> None:
    key_id = await _key_id(admin, rpm=60, budget_usd=5, budget_period="week")

    key = await admin.update_key("cli", key_id, {"budget_usd": None})

    assert key.limits == Limits(rpm=60)


async def test_a_soft_budget_alone_may_have_a_period(admin: Admin) -> None:
    key_id = await _key_id(admin, soft_budget_usd=2, budget_period="month")

    assert (await admin.get_key("cli", key_id)).limits == Limits(
        soft_budget_usd=2.0, budget_period=Period.MONTH
    )


async def test_a_team_update_of_one_limit_keeps_the_others_and_null_clears(admin: Admin) -> None:
    team = await admin.create_team("cli", {"name": "search", **EVERY_LIMIT})

    team = await admin.update_team("cli", team.id, {"max_parallel": 8, "soft_budget_usd": None})

    assert team.limits == Limits(
        rpm=60, tpm=100_000, max_parallel=8, budget_usd=5.0, budget_period=Period.DAY
    )
    assert team.name == "search"


async def test_the_audit_row_of_a_change_records_the_limit_fields_given(
    admin: Admin, store: MemoryStore
) -> None:
    key_id = await _key_id(admin)

    await admin.update_key("cli", key_id, {"rpm": 30, "budget_usd": None})

    (entry,) = await store.list_audit(limit=1)
    assert (entry.action, entry.target) == ("key.update", key_id)
    assert entry.details == {"rpm": 30, "budget_usd": None}


async def test_a_refused_limit_is_audited_by_field_name_and_changes_nothing(
    admin: Admin, store: MemoryStore
) -> None:
    key_id = await _key_id(admin, rpm=60)

    with pytest.raises(InvalidRequest):
        await admin.update_key("cli", key_id, {"rpm": 0, "name": "x"})

    (entry,) = await store.list_audit(limit=1)
    assert entry.details == {"fields": ["name", "rpm"], "error": "invalid_request"}
    key = await admin.get_key("cli", key_id)
    assert (key.name, key.limits) == ("ci", Limits(rpm=60))


@pytest.mark.parametrize("name", ["rpm", "tpm", "max_parallel"])
@pytest.mark.parametrize("value", [0, -1, 1.5, 60.0, "60", True, 2**53, [60]])
async def test_a_count_limit_is_a_positive_whole_number(admin: Admin, name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await admin.create_key("cli", {"name": "ci", name: value})

    assert refused.value.param == name


@pytest.mark.parametrize("name", ["budget_usd", "soft_budget_usd"])
@pytest.mark.parametrize("value", [0, -5, 0.0000001, math.nan, math.inf, "5", False, 2e9])
async def test_a_budget_is_a_positive_number_of_dollars(admin: Admin, name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await admin.create_key("cli", {"name": "ci", name: value})

    assert refused.value.param == name


@pytest.mark.parametrize("value", ["year", "Day", "", 1, ["day"]])
async def test_a_budget_period_is_day_week_or_month(admin: Admin, value: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await admin.create_key("cli", {"name": "ci", "budget_usd": 5, "budget_period": value})

    assert refused.value.param == "budget_period"
    assert "day, week, month" in refused.value.message


async def test_a_budget_period_without_a_budget_is_refused(admin: Admin) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await admin.create_team("cli", {"name": "search", "rpm": 5, "budget_period": "day"})

    assert refused.value.param == "budget_period"


async def test_a_soft_budget_above_the_budget_is_refused_naming_the_field_that_made_it_so(
    admin: Admin,
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await admin.create_key("cli", {"name": "ci", "budget_usd": 5, "soft_budget_usd": 6})
    assert refused.value.param == "soft_budget_usd"

    key_id = await _key_id(admin, budget_usd=5, soft_budget_usd=4)
    with pytest.raises(InvalidRequest) as refused:
        await admin.update_key("cli", key_id, {"budget_usd": 3})
    assert refused.value.param == "budget_usd"


async def test_a_limit_on_a_team_is_checked_as_on_a_key(admin: Admin) -> None:
    team = await admin.create_team("cli", {"name": "search"})

    with pytest.raises(InvalidRequest) as refused:
        await admin.update_team("cli", team.id, {"tpm": -3})

    assert refused.value.param == "tpm"
    assert (await admin.get_team("cli", team.id)).limits == NO_LIMITS


async def test_the_largest_values_are_accepted(admin: Admin) -> None:
    key_id = await _key_id(admin, rpm=2**53 - 1, budget_usd=1e9, soft_budget_usd=0.000001)

    limits = (await admin.get_key("cli", key_id)).limits
    assert (limits.rpm, limits.budget_usd, limits.soft_budget_usd) == (2**53 - 1, 1e9, 0.000001)
