"""`client.admin` against a real llmgw with keys on: every admin call through the client, each result's
`to_dict()` equal to what the REST admin API answers for the same object, and the keys it manages
admitted or refused on the inference API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from llmgw_client import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    LLMGateway,
    NotFoundError,
    PermissionDeniedError,
)
from llmgw_client.admin import ApiKey, ApiKeyDeleted, IssuedKey, Page, Team, TeamDeleted

from tests.auth_setup import ADMIN_KEY, ALLOWED_MODEL, Authed, authed_gateway, bearer, call, unknown_key
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running

HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
async def authed(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Authed]:
    async with authed_gateway(fakes) as running:
        yield running


@pytest.fixture
async def gw(authed: Authed) -> Running:
    return authed.gw


def _client(gw: Running, key: str) -> LLMGateway:
    return LLMGateway(f"127.0.0.1:{gw.fronts.ports['grpc']}", api_key=key, max_retries=0, timeout=10.0)


@pytest.fixture
async def admin(gw: Running) -> AsyncIterator[LLMGateway]:
    """A client holding the operator's `auth.admin_key`."""
    async with _client(gw, ADMIN_KEY) as client:
        yield client


async def rest(gw: Running, method: str, path: str) -> Any:
    """What the REST admin API answers, with the admin key."""
    status, body = await call(gw, method, path, headers=bearer(ADMIN_KEY))
    assert status == 200, body
    return body


async def chat(gw: Running, key: str) -> None:
    """One chat call through the client with `key`; raises what the client raises."""
    async with _client(gw, key) as client:
        completion = await client.chat.completions.create(model=ALLOWED_MODEL, messages=HI)
    assert completion.choices


def secret_of(issued: IssuedKey) -> str:
    return issued.key.removeprefix(f"sk-llmgw-{issued.id}-")


async def test_a_created_key_is_shown_in_full_once_and_reads_as_the_rest_api_shows_it(
    gw: Running, admin: LLMGateway
) -> None:
    team = await admin.admin.teams.create(name="search")
    expires = time.time() + 3600
    issued = await admin.admin.keys.create(
        name="ci",
        team_id=team.id,
        scopes=["inference", "usage:read"],
        models=["local/*"],
        expires_at=expires,
        metadata={"owner": "ci"},
    )
    assert isinstance(issued, IssuedKey)
    assert issued.key.startswith(f"sk-llmgw-{issued.id}-")
    assert (issued.name, issued.team_id, issued.scopes, issued.models, issued.metadata) == (
        "ci",
        team.id,
        ["inference", "usage:read"],
        ["local/*"],
        {"owner": "ci"},
    )
    assert issued.expires_at == pytest.approx(expires)
    assert issued.request_id

    shown = await rest(gw, "GET", f"/admin/v1/keys/{issued.id}")
    assert issued.to_dict() == {**shown, "key": issued.key}

    fetched = await admin.admin.keys.retrieve(issued.id)
    assert type(fetched) is ApiKey
    assert fetched.to_dict() == shown
    assert fetched.request_id
    assert secret_of(issued) not in fetched.to_json()  # the secret is never shown again


async def test_a_key_made_with_defaults_has_no_team_inference_only_every_model_and_no_expiry(
    gw: Running, admin: LLMGateway
) -> None:
    issued = await admin.admin.keys.create(name="plain")
    assert (issued.team_id, issued.scopes, issued.models, issued.expires_at, issued.metadata) == (
        None,
        ["inference"],
        [],
        None,
        {},
    )
    assert (issued.last_used_at, issued.previous_secret_valid_until, issued.disabled) == (None, None, False)
    assert issued.to_dict() == {**await rest(gw, "GET", f"/admin/v1/keys/{issued.id}"), "key": issued.key}


async def test_an_expiry_may_be_an_aware_datetime_or_iso_text_as_over_rest(admin: LLMGateway) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    from_datetime = await admin.admin.keys.create(name="dt", expires_at=at)
    from_text = await admin.admin.keys.create(name="iso", expires_at=at.isoformat())
    assert from_datetime.expires_at == from_text.expires_at == at.timestamp()
    updated = await admin.admin.keys.update(from_text.id, expires_at=(at + timedelta(hours=1)).isoformat())
    assert updated.expires_at == at.timestamp() + 3600

    with pytest.raises(ValueError, match="time zone"):
        await admin.admin.keys.create(name="naive", expires_at=at.replace(tzinfo=None))


async def test_keys_are_listed_a_page_at_a_time_as_the_rest_api_lists_them(
    gw: Running, admin: LLMGateway
) -> None:
    team = await admin.admin.teams.create(name="t")
    member = await admin.admin.keys.create(name="member", team_id=team.id)
    others = [await admin.admin.keys.create(name=f"k{n}") for n in range(2)]
    ids = sorted([member.id, *(key.id for key in others)])

    first = await admin.admin.keys.list(limit=2)
    assert isinstance(first, Page)
    assert [key.id for key in first] == ids[:2]
    assert (first.has_more, first.next_cursor, len(first)) == (True, ids[1], 2)
    assert first.request_id
    assert first.to_dict() == await rest(gw, "GET", "/admin/v1/keys?limit=2")

    second = await admin.admin.keys.list(after=first.next_cursor, limit=2)
    assert [key.id for key in second.data] == ids[2:]
    assert (second.has_more, second.next_cursor) == (False, None)
    assert second.to_dict() == await rest(gw, "GET", f"/admin/v1/keys?after={first.next_cursor}&limit=2")

    in_team = await admin.admin.keys.list(team_id=team.id)
    assert [key.id for key in in_team] == [member.id]
    assert in_team.to_dict() == await rest(gw, "GET", f"/admin/v1/keys?team_id={team.id}")


async def test_an_update_changes_only_the_fields_it_gives(gw: Running, admin: LLMGateway) -> None:
    team = await admin.admin.teams.create(name="t")
    created = await admin.admin.keys.create(
        name="old", team_id=team.id, models=["local/*"], metadata={"a": "1"}
    )
    expires = time.time() + 7200

    updated = await admin.admin.keys.update(
        created.id, name="new", scopes=["inference", "usage:read"], expires_at=expires
    )
    assert (updated.name, updated.scopes, updated.models, updated.metadata, updated.team_id) == (
        "new",
        ["inference", "usage:read"],
        ["local/*"],
        {"a": "1"},
        team.id,
    )
    assert updated.expires_at == pytest.approx(expires)
    assert updated.to_dict() == await rest(gw, "GET", f"/admin/v1/keys/{created.id}")

    # Given empty or None: every model, no metadata, no team, never expires.
    cleared = await admin.admin.keys.update(created.id, models=[], metadata={}, team_id=None, expires_at=None)
    assert (cleared.name, cleared.models, cleared.metadata, cleared.team_id, cleared.expires_at) == (
        "new",
        [],
        {},
        None,
        None,
    )
    assert cleared.to_dict() == await rest(gw, "GET", f"/admin/v1/keys/{created.id}")


async def test_a_rotated_key_works_and_its_old_secret_too_within_the_grace(
    gw: Running, admin: LLMGateway
) -> None:
    created = await admin.admin.keys.create(name="rotating")

    rotated = await admin.admin.keys.rotate(created.id, grace_seconds=60)
    assert isinstance(rotated, IssuedKey)
    assert rotated.id == created.id
    assert rotated.key != created.key
    assert rotated.key.startswith(f"sk-llmgw-{created.id}-")
    assert rotated.previous_secret_valid_until == pytest.approx(time.time() + 60, abs=5)
    assert rotated.to_dict() == {**await rest(gw, "GET", f"/admin/v1/keys/{created.id}"), "key": rotated.key}
    await chat(gw, rotated.key)
    await chat(gw, created.key)

    again = await admin.admin.keys.rotate(created.id, grace_seconds=0)
    assert again.previous_secret_valid_until is None
    await chat(gw, again.key)
    with pytest.raises(AuthenticationError):
        await chat(gw, rotated.key)


async def test_a_disabled_key_is_refused_until_it_is_enabled_again(authed: Authed, admin: LLMGateway) -> None:
    gw = authed.gw
    created = await admin.admin.keys.create(name="pausable", models=["local/*"])
    await chat(gw, created.key)
    assert gw.gateway.auth is not None
    await gw.gateway.auth.flush_used()  # the last-used time is written every few seconds, else

    disabled = await admin.admin.keys.disable(created.id)
    assert disabled.disabled
    assert disabled.last_used_at is not None
    assert disabled.to_dict() == await rest(gw, "GET", f"/admin/v1/keys/{created.id}")
    with pytest.raises(AuthenticationError):
        await chat(gw, created.key)

    enabled = await admin.admin.keys.update(created.id, disabled=False)
    assert not enabled.disabled
    await chat(gw, created.key)


async def test_a_deleted_key_is_gone_and_refused(gw: Running, admin: LLMGateway) -> None:
    created = await admin.admin.keys.create(name="short-lived")
    other = await admin.admin.keys.create(name="deleted over rest")
    await chat(gw, created.key)

    deleted = await admin.admin.keys.delete(created.id)
    assert isinstance(deleted, ApiKeyDeleted)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    shown = await rest(gw, "DELETE", f"/admin/v1/keys/{other.id}")
    assert deleted.to_dict() == {**shown, "id": created.id}

    with pytest.raises(AuthenticationError):
        await chat(gw, created.key)
    with pytest.raises(NotFoundError) as caught:
        await admin.admin.keys.retrieve(created.id)
    assert caught.value.code == "key_not_found"
    with pytest.raises(NotFoundError):
        await admin.admin.keys.delete(created.id)


async def test_teams_are_created_listed_updated_and_deleted_once_empty(
    gw: Running, admin: LLMGateway
) -> None:
    team = await admin.admin.teams.create(name="search", metadata={"cc": "42"})
    assert isinstance(team, Team)
    assert team.id.startswith("team-")
    assert (team.name, team.metadata) == ("search", {"cc": "42"})
    assert team.request_id
    assert team.to_dict() == await rest(gw, "GET", f"/admin/v1/teams/{team.id}")
    assert (await admin.admin.teams.retrieve(team.id)).to_dict() == team.to_dict()

    others = [await admin.admin.teams.create(name=f"t{n}") for n in range(2)]
    ids = sorted([team.id, *(other.id for other in others)])
    first = await admin.admin.teams.list(limit=2)
    assert [t.id for t in first] == ids[:2]
    assert first.has_more
    assert first.to_dict() == await rest(gw, "GET", "/admin/v1/teams?limit=2")
    rest_of = await admin.admin.teams.list(after=first.next_cursor)
    assert [t.id for t in rest_of] == ids[2:]
    assert rest_of.to_dict() == await rest(gw, "GET", f"/admin/v1/teams?after={first.next_cursor}")

    renamed = await admin.admin.teams.update(team.id, name="search & ads")
    assert (renamed.name, renamed.metadata) == ("search & ads", {"cc": "42"})
    emptied = await admin.admin.teams.update(team.id, metadata={})
    assert (emptied.name, emptied.metadata) == ("search & ads", {})
    assert emptied.to_dict() == await rest(gw, "GET", f"/admin/v1/teams/{team.id}")

    member = await admin.admin.keys.create(name="member", team_id=team.id)
    with pytest.raises(BadRequestError) as caught:
        await admin.admin.teams.delete(team.id)
    assert caught.value.code == "team_not_empty"
    await admin.admin.keys.update(member.id, team_id=None)

    deleted = await admin.admin.teams.delete(team.id)
    assert isinstance(deleted, TeamDeleted)
    assert (deleted.id, deleted.deleted) == (team.id, True)
    shown = await rest(gw, "DELETE", f"/admin/v1/teams/{others[0].id}")
    assert deleted.to_dict() == {**shown, "id": team.id}
    with pytest.raises(NotFoundError) as missing:
        await admin.admin.teams.retrieve(team.id)
    assert missing.value.code == "team_not_found"


async def test_the_audit_trail_reads_as_the_rest_api_shows_it(gw: Running, admin: LLMGateway) -> None:
    created = await admin.admin.keys.create(name="audited", scopes=["inference"])
    await admin.admin.keys.update(created.id, name="audited twice")

    page = await admin.admin.audit.list(limit=3)
    assert [(e.action, e.actor, e.target) for e in page] == [
        ("audit.list", "config", None),
        ("key.update", "config", created.id),
        ("key.create", "config", created.id),
    ]
    assert page.data[1].details == {"name": "audited twice"}
    assert page.data[2].details == {"name": "audited", "scopes": ["inference"]}
    assert page.request_id

    # Entries before the newest: the REST listing's own row is newer, so both list the same ones.
    older = await admin.admin.audit.list(before=page.data[0].id, limit=1)
    assert [e.action for e in older] == ["key.update"]
    assert older.has_more
    assert older.next_cursor == older.data[0].id
    assert older.to_dict() == await rest(gw, "GET", f"/admin/v1/audit?before={page.data[0].id}&limit=1")
    oldest = await admin.admin.audit.list(before=older.next_cursor)
    assert [e.action for e in oldest] == ["key.create"]
    assert oldest.to_dict() == await rest(gw, "GET", f"/admin/v1/audit?before={older.next_cursor}")


async def test_only_a_key_with_the_admin_scope_may_use_client_admin(gw: Running, admin: LLMGateway) -> None:
    plain = await admin.admin.keys.create(name="inference only")
    async with _client(gw, plain.key) as client:
        calls: list[Callable[[], Awaitable[object]]] = [
            client.admin.keys.list,
            lambda: client.admin.keys.create(name="escalation"),
            lambda: client.admin.keys.retrieve(plain.id),
            client.admin.teams.list,
            client.admin.audit.list,
        ]
        for attempt in calls:
            with pytest.raises(PermissionDeniedError):
                await attempt()

    async with _client(gw, unknown_key()) as client:
        with pytest.raises(AuthenticationError):
            await client.admin.keys.list()

    second_admin = await admin.admin.keys.create(name="deputy", scopes=["admin"])
    async with _client(gw, second_admin.key) as client:
        page = await client.admin.keys.list()
    assert {plain.id, second_admin.id} <= {key.id for key in page}
    assert (await admin.admin.audit.list(limit=2)).data[1].actor == second_admin.id


async def test_a_missing_key_or_team_is_not_found(admin: LLMGateway) -> None:
    keys, teams = admin.admin.keys, admin.admin.teams
    missing_key, missing_team = "abcdefghijkl", "team-missing"
    calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
        (lambda: keys.retrieve(missing_key), "key_not_found"),
        (lambda: keys.update(missing_key, name="x"), "key_not_found"),
        (lambda: keys.rotate(missing_key), "key_not_found"),
        (lambda: keys.disable(missing_key), "key_not_found"),
        (lambda: keys.delete(missing_key), "key_not_found"),
        (lambda: teams.retrieve(missing_team), "team_not_found"),
        (lambda: teams.update(missing_team, name="x"), "team_not_found"),
        (lambda: teams.delete(missing_team), "team_not_found"),
    ]
    for attempt, code in calls:
        with pytest.raises(NotFoundError) as caught:
            await attempt()
        assert caught.value.code == code


async def test_bad_input_is_a_bad_request_naming_its_field(admin: LLMGateway) -> None:
    keys = admin.admin.keys
    calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
        (lambda: keys.create(name="x", scopes=["root"]), "scopes"),
        (lambda: keys.create(name=""), "name"),
        (lambda: keys.create(name="x", expires_at=1.0), "expires_at"),
        (lambda: keys.create(name="x", team_id="team-missing"), "team_id"),
        (lambda: keys.list(limit=5000), "limit"),
        (lambda: keys.rotate("whatever", grace_seconds=-1), "grace_seconds"),
        (lambda: admin.admin.teams.create(name=" "), "name"),
    ]
    for attempt, param in calls:
        with pytest.raises(BadRequestError) as caught:
            await attempt()
        assert caught.value.param == param


async def test_extra_headers_travel_with_the_call_and_timeout_is_its_deadline(admin: LLMGateway) -> None:
    page = await admin.admin.teams.list(extra_headers={"x-request-id": "admin-client-42"})
    assert page.request_id == "admin-client-42"
    team = await admin.admin.teams.create(name="t", extra_headers={"x-request-id": "admin-client-43"})
    assert team.request_id == "admin-client-43"

    with pytest.raises(APITimeoutError):
        await admin.admin.keys.list(timeout=1e-6)
