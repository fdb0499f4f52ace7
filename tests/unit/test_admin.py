"""The admin use cases on an in-memory store: what a field may hold, cursor paging, rotation, and an audit
row for every call, refused ones included."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw.application.admin import Admin
from llmgw.application.auth import Authenticator
from llmgw.domain.errors import InvalidRequest, NotFound, Unauthenticated
from llmgw.domain.keys import Scope, parse_key
from llmgw.infrastructure.storage.memory import MemoryStore

PEPPER = b"p" * 32
NOW = 1_800_000_000.0


class Clock:
    """Wall time that moves a millisecond each time it is read (audit rows sort by their time)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def auth(store: MemoryStore, clock: Clock) -> Authenticator:
    return Authenticator(store, pepper=PEPPER, cache_ttl=0.0, wall=clock)


@pytest.fixture
def admin(store: MemoryStore, auth: Authenticator, clock: Clock) -> Admin:
    return Admin(store, auth, rotation_grace=3600.0, wall=clock)


async def test_a_created_key_is_shown_once_and_stored_only_as_a_hash(
    admin: Admin, store: MemoryStore
) -> None:
    issued = await admin.create_key("config", {"name": "ci", "scopes": ["inference", "usage:read"]})

    presented = parse_key(issued.text)
    assert presented is not None
    assert presented.public_id == issued.key.public_id
    stored = await store.get_key(issued.key.public_id)
    assert stored is not None
    assert presented.secret.encode() not in stored.secret_hash
    assert presented.secret not in repr(stored)
    assert stored.scopes == frozenset({Scope.INFERENCE, Scope.USAGE_READ})
    assert NOW < stored.created_at < NOW + 1


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "ci", "scopes": []}, "scopes"),
        ({"name": "ci", "scopes": ["root"]}, "scopes"),
        ({"name": "ci", "models": "gpt-4o"}, "models"),
        ({"name": "ci", "expires_at": NOW - 1}, "expires_at"),
        ({"name": "ci", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ci", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no offset: ambiguous
        ({"name": "ci", "metadata": {"a": 1}}, "metadata"),
        ({"name": "ci", "team_id": "team-nope"}, "team_id"),
        ({"name": "ci", "disabled": True}, "disabled"),
        ({"name": "ci", "secret_hash": "x"}, "secret_hash"),
    ],
)
async def test_bad_fields_are_refused_naming_the_field(
    admin: Admin, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await admin.create_key("config", fields)

    assert refused.value.param == param


@pytest.mark.parametrize("name", [None, "", "   "])
async def test_an_update_cannot_empty_a_name(admin: Admin, name: str | None) -> None:
    issued = await admin.create_key("config", {"name": "ci"})
    team = await admin.create_team("config", {"name": "research"})

    with pytest.raises(InvalidRequest) as refused:
        await admin.update_key("config", issued.key.public_id, {"name": name})
    with pytest.raises(InvalidRequest):
        await admin.update_team("config", team.id, {"name": name})

    assert refused.value.param == "name"
    assert (await admin.get_key("config", issued.key.public_id)).name == "ci"


async def test_expiry_reads_unix_seconds_or_iso_8601_with_an_offset(admin: Admin) -> None:
    by_number = await admin.create_key("config", {"name": "a", "expires_at": NOW + 60})
    by_text = await admin.create_key("config", {"name": "b", "expires_at": "2030-01-01T00:00:00Z"})

    assert by_number.key.expires_at == NOW + 60
    assert by_text.key.expires_at == 1_893_456_000.0


async def test_listing_pages_by_cursor_over_every_key_once(admin: Admin) -> None:
    made = {(await admin.create_key("config", {"name": f"k{i}"})).key.public_id for i in range(5)}

    seen: list[str] = []
    cursor = ""
    while True:
        page = await admin.list_keys("config", after=cursor, limit=2)
        seen += [key.public_id for key in page.items]
        if not page.next_cursor:
            break
        cursor = page.next_cursor

    assert seen == sorted(made)


async def test_rotation_keeps_the_public_id_and_the_old_secret_for_the_grace(
    admin: Admin, auth: Authenticator, clock: Clock
) -> None:
    old = await admin.create_key("config", {"name": "ci"})
    new = await admin.rotate_key("config", old.key.public_id, grace=60.0)

    assert parse_key(new.text).public_id == old.key.public_id  # type: ignore[union-attr]
    assert new.key.previous_valid_until == pytest.approx(NOW + 60.0, abs=1)
    assert (await auth.authenticate(new.text)).public_id == old.key.public_id
    assert (await auth.authenticate(old.text)).public_id == old.key.public_id
    clock.now += 61
    with pytest.raises(Unauthenticated):
        await auth.authenticate(old.text)
    assert (await auth.authenticate(new.text)).public_id == old.key.public_id


async def test_rotation_without_grace_ends_the_old_secret_at_once(admin: Admin, auth: Authenticator) -> None:
    old = await admin.create_key("config", {"name": "ci"})
    await admin.rotate_key("config", old.key.public_id, grace=0.0)

    with pytest.raises(Unauthenticated):
        await auth.authenticate(old.text)


async def test_a_team_with_keys_is_not_deleted(admin: Admin) -> None:
    team = await admin.create_team("config", {"name": "search"})
    key = await admin.create_key("config", {"name": "ci", "team_id": team.id})

    with pytest.raises(InvalidRequest, match="still has keys"):
        await admin.delete_team("config", team.id)
    await admin.delete_key("config", key.key.public_id)
    await admin.delete_team("config", team.id)
    with pytest.raises(NotFound):
        await admin.get_team("config", team.id)


async def test_every_call_is_audited_refused_ones_with_their_error_and_field_names_only(admin: Admin) -> None:
    issued = await admin.create_key("config", {"name": "ci"})
    await admin.disable_key("abcdefgh2345", issued.key.public_id)
    with pytest.raises(InvalidRequest):
        await admin.create_key("config", {"name": "x", "scopes": ["root" * 100]})
    with pytest.raises(NotFound):
        await admin.get_key("cli", "nosuchkey123")

    entries = (await admin.audit("config")).items

    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("config", "audit.list", ""),
        ("cli", "key.get", "nosuchkey123"),
        ("config", "key.create", ""),
        ("abcdefgh2345", "key.disable", issued.key.public_id),
        ("config", "key.create", issued.key.public_id),
    ]
    assert entries[1].details == {"fields": [], "error": "key_not_found"}
    assert entries[2].details == {"fields": ["name", "scopes"], "error": "invalid_request"}
    assert "root" not in str(entries[2].details)
    assert entries[4].details == {"name": "ci"}
