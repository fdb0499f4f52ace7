"""Every store keeps API keys, teams and the audit trail exactly as written, beside the generation records:
in memory, in a SQLite file, in Postgres."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import aiosqlite
import pytest

from llmgw.application.ports import GenerationStore, KeyStore
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.keys import ApiKey, AuditEntry, Scope, Team
from llmgw.infrastructure.storage import rows, sqlite
from llmgw.infrastructure.storage.memory import MemoryStore
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.stores import fresh_postgres_schema, opened


class Store(GenerationStore, KeyStore, Protocol):
    """What each adapter is: one object for records, keys, teams and audit."""


FULL_KEY = ApiKey(
    public_id="abcdefgh2345",
    name="naïve “billing” key 🚀",
    secret_hash=bytes(range(32)),
    scopes=frozenset({Scope.INFERENCE, Scope.USAGE_READ, Scope.ADMIN}),
    models=("gpt-4o*", "dashscope/*"),
    team_id="team-research",
    expires_at=1_800_000_000.25,
    disabled=True,
    metadata={"owner": "alice@example.com", "note": "漢字 and 'quotes'"},
    created_at=1_717_171_717.123456,
    last_used_at=1_717_171_800.5,
    previous_hash=b"\x00\xff" * 16,
    previous_valid_until=1_717_258_117.123456,
)
BARE_KEY = ApiKey(public_id="bare00000000", name="", secret_hash=b"\x00" * 32, scopes=frozenset())
RECORD = GenerationRecord(
    id="gen-keyed",
    request_id="req-1",
    kind=GenerationKind.CHAT,
    model="gpt-fast",
    provider="openai",
    upstream_model="gpt-4o-mini",
    created_at=1_700_000_000.0,
    streamed=False,
    status=GenerationStatus.COMPLETED,
    key_id="abcdefgh2345",
    team_id="team-research",
)


def key(public_id: str, team_id: str = "", last_used_at: float | None = None) -> ApiKey:
    return dataclasses.replace(BARE_KEY, public_id=public_id, team_id=team_id, last_used_at=last_used_at)


def audit(entry_id: str) -> AuditEntry:
    return AuditEntry(id=entry_id, at=1.5, actor="cli", action="key.create", target="abc", details={})


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        async with opened(MemoryStore()) as memory:
            yield memory
    elif request.param == "sqlite":
        async with opened(SQLiteStore(f"sqlite:///{tmp_path}/x.db")) as file:
            yield file
    else:
        async with fresh_postgres_schema() as (dsn, schema), opened(PostgresStore(dsn, schema=schema)) as pg:
            yield pg


@pytest.mark.parametrize("written", [FULL_KEY, BARE_KEY], ids=["every-field", "defaults"])
async def test_a_key_reads_back_exactly_as_written(store: Store, written: ApiKey) -> None:
    await store.put_key(written)

    read = await store.get_key(written.public_id)

    assert read == written
    assert read is not None
    # `==` alone takes SQLite's 1 for True, and a memoryview for bytes.
    assert type(read.disabled) is bool
    assert type(read.secret_hash) is bytes
    assert read.previous_hash is None or type(read.previous_hash) is bytes
    assert type(read.models) is tuple


async def test_an_unknown_key_reads_as_none(store: Store) -> None:
    assert await store.get_key("nosuchkey000") is None


async def test_putting_a_key_again_replaces_it(store: Store) -> None:
    await store.put_key(FULL_KEY)
    changed = dataclasses.replace(
        FULL_KEY, name="renamed", scopes=frozenset({Scope.INFERENCE}), expires_at=None, metadata={}
    )

    await store.put_key(changed)

    assert await store.get_key(FULL_KEY.public_id) == changed
    assert await store.list_keys() == [changed]


async def test_deleting_a_key_says_whether_there_was_one(store: Store) -> None:
    await store.put_key(FULL_KEY)

    assert await store.delete_key(FULL_KEY.public_id) is True
    assert await store.delete_key(FULL_KEY.public_id) is False
    assert await store.get_key(FULL_KEY.public_id) is None


async def test_keys_are_listed_by_id_a_page_at_a_time(store: Store) -> None:
    written = [key(f"key{index:09d}") for index in (4, 0, 3, 1, 2)]
    for each in written:
        await store.put_key(each)

    pages: list[list[ApiKey]] = []
    after = ""
    while page := await store.list_keys(after=after, limit=2):
        pages.append(page)
        after = page[-1].public_id

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [each for page in pages for each in page] == sorted(written, key=lambda each: each.public_id)


async def test_keys_are_listed_by_team(store: Store) -> None:
    for each in [key("a00000000000", "team-a"), key("b00000000000"), key("c00000000000", "team-a")]:
        await store.put_key(each)

    team_a = await store.list_keys(team_id="team-a")
    no_team = await store.list_keys(team_id="")
    everyone = await store.list_keys()
    second_of_team_a = await store.list_keys(team_id="team-a", after="a00000000000", limit=1)

    assert [each.public_id for each in team_a] == ["a00000000000", "c00000000000"]
    assert [each.public_id for each in no_team] == ["b00000000000"]
    assert [each.public_id for each in everyone] == ["a00000000000", "b00000000000", "c00000000000"]
    assert [each.public_id for each in second_of_team_a] == ["c00000000000"]
    assert await store.list_keys(team_id="team-none") == []


async def test_touching_keys_only_moves_last_used_forward(store: Store) -> None:
    await store.put_key(key("never0000000"))
    await store.put_key(key("earlier00000", last_used_at=100.0))
    await store.put_key(key("later0000000", last_used_at=300.0))

    await store.touch_keys(
        {"never0000000": 200.0, "earlier00000": 200.0, "later0000000": 200.0, "gone": 200.0}
    )
    await store.touch_keys({})

    assert [(each.public_id, each.last_used_at) for each in await store.list_keys()] == [
        ("earlier00000", 200.0),
        ("later0000000", 300.0),
        ("never0000000", 200.0),
    ]
    assert await store.get_key("gone") is None


async def test_teams_are_kept_replaced_deleted_and_listed_a_page_at_a_time(store: Store) -> None:
    team = Team(id="team-b", name="Research ✓", metadata={"cost_centre": "42"}, created_at=1_700_000_000.5)
    others = [Team(id=f"team-{letter}", name=letter) for letter in "eacd"]
    await store.put_team(team)
    for each in others:
        await store.put_team(each)
    renamed = dataclasses.replace(team, name="Research", metadata={})

    assert await store.get_team("team-b") == team
    await store.put_team(renamed)
    assert await store.get_team("team-b") == renamed
    first = await store.list_teams(limit=3)
    rest = await store.list_teams(after=first[-1].id, limit=3)
    assert [each.id for each in first + rest] == ["team-a", "team-b", "team-c", "team-d", "team-e"]
    assert await store.delete_team("team-b") is True
    assert await store.delete_team("team-b") is False
    assert await store.get_team("team-b") is None


async def test_the_audit_trail_is_listed_newest_first_a_page_at_a_time(store: Store) -> None:
    full = AuditEntry(
        id="aud-000000000005ffffffff",
        at=1_717_171_717.123,
        actor="abcdefgh2345",
        action="key.update",
        target="key000000001",
        details={"scopes": ["admin", "inference"], "expires_at": None, "disabled": True, "n": 3, "name": "é"},
    )
    older = [audit(f"aud-00000000000{index}00000000") for index in (2, 0, 4, 1, 3)]
    await store.add_audit(full)
    for each in older:
        await store.add_audit(each)

    first = await store.list_audit(limit=2)
    second = await store.list_audit(before=first[-1].id, limit=2)
    third = await store.list_audit(before=second[-1].id, limit=2)

    assert first[0] == full
    assert [each.id for each in first + second + third] == [
        "aud-000000000005ffffffff",
        "aud-000000000004" + "0" * 8,
        "aud-000000000003" + "0" * 8,
        "aud-000000000002" + "0" * 8,
        "aud-000000000001" + "0" * 8,
        "aud-000000000000" + "0" * 8,
    ]
    assert await store.list_audit(before=third[-1].id) == []


async def test_a_record_keeps_its_key_and_team(store: Store) -> None:
    await store.put_many([RECORD])

    assert await store.get(RECORD.id) == RECORD


async def test_a_sqlite_file_of_the_second_schema_gains_keys_and_reads_old_rows_with_no_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    old = dataclasses.replace(RECORD, key_id="", team_id="")
    old_columns = rows.COLUMNS[: rows.COLUMNS.index("attempts") + 1]
    column_list = ", ".join(f'"{name}"' for name in old_columns)
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "CREATE TABLE llmgw_schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in (statement for migration in sqlite.MIGRATIONS[:2] for statement in migration):
            await db.execute(statement)
        await db.execute("INSERT INTO llmgw_schema_version VALUES (1, 0), (2, 0)")
        await db.execute(
            f"INSERT INTO generations ({column_list}) VALUES ({', '.join('?' * len(old_columns))})",  # noqa: S608
            rows.to_row(old)[: len(old_columns)],
        )
        await db.commit()

    async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
        assert await store.get(old.id) == old
        await store.put_key(FULL_KEY)
        assert await store.get_key(FULL_KEY.public_id) == FULL_KEY
        await store.put_many([dataclasses.replace(RECORD, id="gen-new")])
        assert await store.get("gen-new") == dataclasses.replace(RECORD, id="gen-new")

    async with (
        aiosqlite.connect(path) as db,
        db.execute("SELECT max(version) FROM llmgw_schema_version") as cursor,
    ):
        assert await cursor.fetchone() == (len(sqlite.MIGRATIONS),)
