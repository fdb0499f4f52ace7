"""The usage view of a key's or a team's limits, with an injected clock: what the admin API shows of the
current window (requests and tokens left, when they reset), the requests in flight and the budget period's
spent, reserved and remaining money, nulls where no limit is set; who may ask and what is audited; and the
limit scopes a generation record notes it was admitted under, through its row, REST JSON and message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from llmgw.application.admin import Admin
from llmgw.application.auth import Authenticator
from llmgw.application.limits import Admitted, Limiter
from llmgw.application.tracking import RequestContext, Tracker
from llmgw.domain.errors import LimitStoreUnavailable, NotFound, ServiceUnavailable
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.limits import NOTHING, Admission, Demand, Limits, Period, Scope, ScopeKind, ScopeStatus
from llmgw.infrastructure.admin_json import usage_json
from llmgw.infrastructure.grpc.generation import generation_to_proto
from llmgw.infrastructure.limits.memory import MemoryLimitStore
from llmgw.infrastructure.rest.generations import record_json
from llmgw.infrastructure.storage.memory import MemoryStore
from llmgw.infrastructure.storage.rows import COLUMNS, from_row, to_row

PEPPER = b"p" * 32
T0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC, a Wednesday
NOW = T0 + 3600.0
DAY = 86_400.0
ASK = Demand(tokens=1000, micros=20_000, priced=True)  # $0.02 reserved a request
COST = Demand(tokens=500, micros=10_000, priced=True)  # $0.01 charged once it ended
NO_LIMITS_JSON = dict.fromkeys(
    ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "soft_budget_usd")
)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def key_scope(**limits: Any) -> Scope:
    return Scope(ScopeKind.KEY, "abcdefgh2345", Limits(**limits))


async def used(store: MemoryLimitStore, scope: Scope, *, ended: int, running: int, at: float = NOW) -> None:
    """`ended` requests admitted and charged COST, then `running` admitted and still in flight."""
    for _ in range(ended):
        admission = await store.admit([scope], ASK, at)
        assert admission.refusal is None
        await store.settle([scope], ASK, COST, at, reached_upstream=True)
    for _ in range(running):
        assert (await store.admit([scope], ASK, at)).refusal is None


async def test_a_key_with_every_limit_shows_its_window_in_flight_and_budget_period() -> None:
    store, clock = MemoryLimitStore(), Clock()
    scope = key_scope(
        rpm=60, tpm=10_000, max_parallel=4, budget_usd=5, budget_period=Period.DAY, soft_budget_usd=4.5
    )
    await used(store, scope, ended=2, running=1)

    shown = usage_json(await Limiter(store, clock=clock).usage(scope))

    assert shown == {
        "object": "usage",
        "key_id": "abcdefgh2345",
        "at": NOW,
        "limits": {
            "rpm": 60,
            "tpm": 10_000,
            "max_parallel": 4,
            "budget_usd": 5.0,
            "budget_period": "day",
            "soft_budget_usd": 4.5,
        },
        # Three requests of a 60 rpm GCRA: one a second, the window whole again in 3 s.
        "requests": {"limit": 60, "remaining": 57, "reset_seconds": 3.0},
        # 3 x 1000 tokens reserved, two of them settled at 500: 2000 tokens, 12 s of a 10 000 tpm window.
        "tokens": {"limit": 10_000, "remaining": 8000, "reset_seconds": 12.0},
        "in_flight": 1,
        "budget": {
            "period": "day",
            "period_start": T0,
            "period_end": T0 + DAY,
            "budget_usd": 5.0,
            "soft_budget_usd": 4.5,
            "spent_usd": 0.02,
            "reserved_usd": 0.02,
            "remaining_usd": 4.96,
            "soft_exceeded": False,
            "priced_models_only": True,
        },
    }


async def test_the_window_reads_whole_again_once_it_has_passed_and_the_request_in_flight_still_counts() -> (
    None
):
    store, clock = MemoryLimitStore(), Clock()
    scope = key_scope(rpm=60, max_parallel=4)
    await used(store, scope, ended=2, running=1)
    clock.now = NOW + 30

    shown = usage_json(await Limiter(store, clock=clock).usage(scope))

    assert shown["requests"] == {"limit": 60, "remaining": 60, "reset_seconds": 0.0}
    assert shown["in_flight"] == 1
    assert (shown["at"], shown["tokens"], shown["budget"]) == (NOW + 30, None, None)


async def test_a_key_without_limits_shows_a_null_for_every_part() -> None:
    shown = usage_json(await Limiter(MemoryLimitStore(), clock=Clock()).usage(key_scope()))

    assert shown == {
        "object": "usage",
        "key_id": "abcdefgh2345",
        "at": NOW,
        "limits": NO_LIMITS_JSON,
        "requests": None,
        "tokens": None,
        "in_flight": None,
        "budget": None,
    }


async def test_a_lifetime_budget_has_no_period_bounds() -> None:
    store = MemoryLimitStore()
    scope = key_scope(budget_usd=1)
    await used(store, scope, ended=1, running=0, at=NOW - 10 * DAY)

    budget = usage_json(await Limiter(store, clock=Clock()).usage(scope))["budget"]

    assert budget is not None
    assert (budget["period"], budget["period_start"], budget["period_end"]) == (None, None, None)
    assert (budget["spent_usd"], budget["reserved_usd"], budget["remaining_usd"]) == (0.01, 0.0, 0.99)


async def test_a_soft_budget_alone_has_nothing_remaining_to_show_and_says_when_it_is_passed() -> None:
    store = MemoryLimitStore()
    scope = key_scope(soft_budget_usd=0.025, budget_period=Period.WEEK)
    await used(store, scope, ended=1, running=1)

    budget = usage_json(await Limiter(store, clock=Clock()).usage(scope))["budget"]

    assert budget is not None
    assert budget["budget_usd"] is None
    assert budget["remaining_usd"] is None
    assert budget["soft_exceeded"] is True  # $0.01 spent + $0.02 reserved > $0.025
    # 2023-11-15 is a Wednesday: the week began on Monday the 13th.
    assert (budget["period_start"], budget["period_end"]) == (utc(2023, 11, 13), utc(2023, 11, 20))


async def test_a_monthly_budget_period_runs_from_the_first_to_the_next_first() -> None:
    scope = key_scope(budget_usd=10, budget_period=Period.MONTH)
    limiter = Limiter(MemoryLimitStore(), clock=Clock(utc(2024, 2, 29, 23)))

    budget = usage_json(await limiter.usage(scope))["budget"]

    assert budget is not None
    assert (budget["period_start"], budget["period_end"]) == (utc(2024, 2, 1), utc(2024, 3, 1))
    assert (budget["spent_usd"], budget["reserved_usd"], budget["remaining_usd"]) == (0.0, 0.0, 10.0)


class DownStore(MemoryLimitStore):
    """A limit store that cannot be reached."""

    async def status(self, scope: Scope, now: float) -> ScopeStatus:
        raise LimitStoreUnavailable("Redis is away.")

    async def admit(self, scopes: Sequence[Scope], demand: Demand, now: float) -> Admission:
        raise LimitStoreUnavailable("Redis is away.")


async def test_an_unreachable_store_is_an_error_not_a_usage_of_nothing() -> None:
    # (/readyz pings the store itself: tests/integration/test_limits_store_errors.py shows it down.)
    limiter = Limiter(DownStore(), clock=Clock())

    with pytest.raises(LimitStoreUnavailable):
        await limiter.usage(key_scope(rpm=60))


@pytest.fixture
def keys() -> MemoryStore:
    return MemoryStore()


class Wall:
    """Wall time that moves 10 ms each time it is read: audit rows sort by their millisecond (one step of
    a single one can round to the same millisecond, near 1.7e9 s)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


@pytest.fixture
def admin(keys: MemoryStore) -> Admin:
    wall = Wall()
    return Admin(keys, Authenticator(keys, pepper=PEPPER, cache_ttl=0.0, wall=wall), wall=wall)


async def test_key_usage_shows_the_keys_own_limits_counted_where_the_gateway_counts_them(
    admin: Admin, keys: MemoryStore
) -> None:
    store = MemoryLimitStore()
    key = (await admin.create_key("cli", {"name": "ci", "rpm": 10})).key
    await used(store, Scope(ScopeKind.KEY, key.public_id, key.limits), ended=3, running=0)

    usage = await admin.key_usage("actor-1", key.public_id, Limiter(store, clock=Clock()))

    assert usage.scope == Scope(ScopeKind.KEY, key.public_id, Limits(rpm=10))
    assert usage_json(usage)["requests"] == {"limit": 10, "remaining": 7, "reset_seconds": 18.0}
    newest = (await keys.list_audit(limit=1))[0]
    assert (newest.actor, newest.action, newest.target) == ("actor-1", "key.usage", key.public_id)


async def test_team_usage_counts_every_key_of_the_team_and_a_keys_usage_shows_only_its_own_limits(
    admin: Admin, keys: MemoryStore
) -> None:
    store = MemoryLimitStore()
    team = await admin.create_team("cli", {"name": "search", "rpm": 10})
    first = (await admin.create_key("cli", {"name": "a", "team_id": team.id})).key
    await admin.create_key("cli", {"name": "b", "team_id": team.id})
    team_scope = Scope(ScopeKind.TEAM, team.id, team.limits)
    await used(store, team_scope, ended=2, running=0)
    limiter = Limiter(store, clock=Clock())

    shown = usage_json(await admin.team_usage("cli", team.id, limiter))
    own = usage_json(await admin.key_usage("cli", first.public_id, limiter))

    assert (shown["object"], shown["team_id"], "key_id" in shown) == ("usage", team.id, False)
    assert shown["requests"] == {"limit": 10, "remaining": 8, "reset_seconds": 12.0}
    assert (own["limits"], own["requests"]) == (NO_LIMITS_JSON, None)
    newest = (await keys.list_audit(limit=2))[1]
    assert (newest.action, newest.target) == ("team.usage", team.id)


async def test_an_unknown_key_or_team_is_not_found_and_the_refused_call_is_audited(
    admin: Admin, keys: MemoryStore
) -> None:
    limiter = Limiter(MemoryLimitStore(), clock=Clock())

    with pytest.raises(NotFound) as key_error:
        await admin.key_usage("cli", "nosuchkey234", limiter)
    with pytest.raises(NotFound) as team_error:
        await admin.team_usage("cli", "team-nosuch", limiter)

    assert (key_error.value.code, team_error.value.code) == ("key_not_found", "team_not_found")
    team_row, key_row = await keys.list_audit(limit=2)
    assert (key_row.action, key_row.target, key_row.details["error"]) == (
        "key.usage",
        "nosuchkey234",
        "key_not_found",
    )
    assert (team_row.action, team_row.details["error"]) == ("team.usage", "team_not_found")


async def test_a_gateway_that_counts_no_limits_says_so_rather_than_showing_nothing_used(admin: Admin) -> None:
    key = (await admin.create_key("cli", {"name": "ci", "rpm": 10})).key

    with pytest.raises(ServiceUnavailable) as error:
        await admin.key_usage("cli", key.public_id, None)

    assert error.value.code == "limits_unavailable"


def tracked(limits: Admitted | None) -> GenerationRecord:
    ctx = RequestContext(request_id="req-1", limits=limits)
    return Tracker("gen-1", "fake/chat", ctx, streamed=False, user="").record(GenerationKind.CHAT, None)


def admitted(*scopes: Scope) -> Admitted:
    return Admitted(scopes, NOTHING, ())


def test_the_record_names_the_scopes_the_request_was_admitted_under_in_order() -> None:
    scopes = (
        key_scope(rpm=1),
        Scope(ScopeKind.TEAM, "team-1", Limits(rpm=2)),
        Scope(ScopeKind.MODEL, "dashscope/qwen-turbo", Limits(tpm=3)),
        Scope(ScopeKind.GLOBAL, "", Limits(max_parallel=4)),
    )

    record = tracked(admitted(*scopes))

    assert record.limits == ("key:abcdefgh2345", "team:team-1", "model:dashscope/qwen-turbo", "global")


def test_a_request_no_limit_applied_to_has_a_record_naming_none() -> None:
    assert tracked(None).limits == ()


def record(limits: tuple[str, ...]) -> GenerationRecord:
    return GenerationRecord(
        id="gen-1",
        request_id="req-1",
        kind=GenerationKind.CHAT,
        model="dashscope/qwen-turbo",
        provider="dashscope",
        upstream_model="qwen-turbo",
        created_at=NOW,
        streamed=False,
        status=GenerationStatus.COMPLETED,
        limits=limits,
    )


@pytest.mark.parametrize("limits", [(), ("key:abc", "model:local/x:y", "global")])
def test_the_limits_column_holds_a_json_array_of_the_scope_names_and_reads_back_the_same(
    limits: tuple[str, ...],
) -> None:
    row = to_row(record(limits))

    assert row[COLUMNS.index("limits")] == ("[]" if not limits else '["key:abc","model:local/x:y","global"]')
    assert from_row(row) == record(limits)


def test_rest_json_and_the_grpc_message_list_the_scope_names() -> None:
    names = ("key:abc", "team:team-1", "global")

    assert record_json(record(names))["limits"] == list(names)
    assert record_json(record(()))["limits"] == []
    assert generation_to_proto(record(names)).limits == list(names)
    assert generation_to_proto(record(())).limits == []
