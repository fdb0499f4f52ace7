"""The SQLite store (`sqlite:///path`): generation records, their usage rollups, API keys, teams and the
admin audit trail in one file in WAL mode, the embedded default, that several worker processes may share."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.domain.limits import usd_to_micros
from llmgw.domain.usage_report import GenerationQuery, UsageQuery, UsageRow
from llmgw.infrastructure.storage.errors import StoreUnavailable
from llmgw.infrastructure.storage.key_rows import (
    AUDIT_COLUMNS,
    AUDIT_TABLE,
    KEY_COLUMNS,
    KEYS_TABLE,
    TEAM_COLUMNS,
    TEAMS_TABLE,
    audit_from_row,
    audit_to_row,
    column_list,
    key_from_row,
    key_to_row,
    team_from_row,
    team_to_row,
)
from llmgw.infrastructure.storage.rows import (
    COLUMN_LIST,
    COLUMNS,
    TABLE,
    VERSION_TABLE,
    from_row,
    spend_filters,
    to_row,
)
from llmgw.infrastructure.storage.usage_rows import (
    LISTING_INDEXED,
    add_to_rollups,
    backfill,
    listing_query,
    rollup_rows,
    rollup_table,
    usage_query,
    usage_rows,
)

MEMORY = ":memory:"

# Workers sharing the file take turns writing; one waits this long for the lock before failing.
BUSY_TIMEOUT_S = 5.0
_WAL_RETRY_S = 0.01
# The batch writer, on the event loop thread, never waits on the lock inside SQLite: it tries, and
# sleeps this long (asynchronously) between tries while another worker writes.
_LOCK_RETRY_S = 0.005
# Rows the batch writer appends to the WAL before a checkpoint moves them into the file (~4 MB of WAL,
# SQLite's own default of 1000 pages).
CHECKPOINT_ROWS = 10_000

# Migration n is MIGRATIONS[n - 1], a list of statements run in one transaction. Append only, never edit
# a released one; add columns with defaults so a replica one version behind can still insert.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {TABLE} (
            "id" TEXT PRIMARY KEY NOT NULL,
            "request_id" TEXT NOT NULL,
            "kind" TEXT NOT NULL,
            "model" TEXT NOT NULL,
            "provider" TEXT NOT NULL,
            "upstream_model" TEXT NOT NULL,
            "created_at" REAL NOT NULL,
            "streamed" INTEGER NOT NULL,
            "status" TEXT NOT NULL,
            "upstream_id" TEXT NOT NULL,
            "finish_reason" TEXT NOT NULL,
            "prompt_tokens" INTEGER NOT NULL,
            "completion_tokens" INTEGER NOT NULL,
            "total_tokens" INTEGER NOT NULL,
            "cached_tokens" INTEGER NOT NULL,
            "reasoning_tokens" INTEGER NOT NULL,
            "cost_usd" REAL,
            "latency_ms" REAL,
            "time_to_first_token_ms" REAL,
            "error_code" TEXT NOT NULL,
            "error_message" TEXT NOT NULL,
            "user" TEXT NOT NULL
        )""",
        f"CREATE INDEX {TABLE}_created_at ON {TABLE} (created_at)",
    ),
    # 2: every upstream attempt of the request, a JSON array (issue 12).
    (f"""ALTER TABLE {TABLE} ADD COLUMN "attempts" TEXT NOT NULL DEFAULT '[]'""",),
    # 3: API keys, teams and the admin audit trail; each record names its key and team.
    (
        f"""ALTER TABLE {TABLE} ADD COLUMN "key_id" TEXT NOT NULL DEFAULT ''""",
        f"""ALTER TABLE {TABLE} ADD COLUMN "team_id" TEXT NOT NULL DEFAULT ''""",
        f"""CREATE TABLE {KEYS_TABLE} (
            "public_id" TEXT PRIMARY KEY NOT NULL,
            "name" TEXT NOT NULL,
            "secret_hash" BLOB NOT NULL,
            "scopes" TEXT NOT NULL,
            "models" TEXT NOT NULL,
            "team_id" TEXT NOT NULL DEFAULT '',
            "expires_at" REAL,
            "disabled" INTEGER NOT NULL,
            "metadata" TEXT NOT NULL,
            "created_at" REAL NOT NULL,
            "last_used_at" REAL,
            "previous_hash" BLOB,
            "previous_valid_until" REAL
        )""",
        f"CREATE INDEX {KEYS_TABLE}_team_id ON {KEYS_TABLE} (team_id, public_id)",
        f"""CREATE TABLE {TEAMS_TABLE} (
            "id" TEXT PRIMARY KEY NOT NULL,
            "name" TEXT NOT NULL,
            "metadata" TEXT NOT NULL,
            "created_at" REAL NOT NULL
        )""",
        # Audit ids sort by time, so the primary key orders the trail.
        f"""CREATE TABLE {AUDIT_TABLE} (
            "id" TEXT PRIMARY KEY NOT NULL,
            "at" REAL NOT NULL,
            "actor" TEXT NOT NULL,
            "action" TEXT NOT NULL,
            "target" TEXT NOT NULL,
            "details" TEXT NOT NULL
        )""",
    ),
    # 4: the rate limits and budget of keys and teams (issue 15), a nullable column each: null, as in every
    # row written before, is no limit.
    tuple(
        f'ALTER TABLE {table} ADD COLUMN "{column}" {kind}'
        for table in (KEYS_TABLE, TEAMS_TABLE)
        for column, kind in (
            ("rpm", "INTEGER"),
            ("tpm", "INTEGER"),
            ("max_parallel", "INTEGER"),
            ("budget_usd", "REAL"),
            ("budget_period", "TEXT"),
            ("soft_budget_usd", "REAL"),
        )
    ),
    # 5: the limit scopes each request was admitted under (issue 15), a JSON array of their names; rows
    # written before name none.
    (f"""ALTER TABLE {TABLE} ADD COLUMN "limits" TEXT NOT NULL DEFAULT '[]'""",),
    # 6: the records of one key or one team in a time range, summed when budget counters are rebuilt from
    # them (issue 15, `GenerationStore.spend`) instead of scanning every record of the period.
    (
        f"CREATE INDEX {TABLE}_key_id ON {TABLE} (key_id, created_at)",
        f"CREATE INDEX {TABLE}_team_id ON {TABLE} (team_id, created_at)",
    ),
    # 7 (issue 16): each record's trace id; the usage rollups, kept as records are written and summed
    # here once from the records already stored; the generations listing's indexes, newest first by id
    # within each filter.
    (
        f"""ALTER TABLE {TABLE} ADD COLUMN "trace_id" TEXT NOT NULL DEFAULT ''""",
        rollup_table("TEXT", "INTEGER"),
        backfill("llmgw_micros(cost_usd)", "CAST(created_at / 3600 AS INTEGER) * 3600"),
        *(f'CREATE INDEX {TABLE}_{column}_id ON {TABLE} ("{column}", id)' for column in LISTING_INDEXED),
    ),
)

# S608 is silenced below because the SQL is built from module constants only, never from input.
_PLACEHOLDERS = ", ".join("?" * len(COLUMNS))
_INSERT = f"INSERT OR REPLACE INTO {TABLE} ({COLUMN_LIST}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
_SELECT = f"SELECT {COLUMN_LIST} FROM {TABLE} WHERE id = ?"  # noqa: S608
_PRUNE = f"DELETE FROM {TABLE} WHERE created_at < ?"  # noqa: S608
# `spend` rounds each cost with the very function settling uses (registered on the connection), so the
# sum agrees with the budget counters to the micro-dollar; SQLite sums integers exactly.
_MICROS = "llmgw_micros"
_SPEND = (
    f"SELECT coalesce(sum({_MICROS}(cost_usd)), 0) FROM {TABLE} "  # noqa: S608
    "WHERE created_at >= ? AND created_at < ? AND cost_usd IS NOT NULL"
)
_APPLIED = f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}"  # noqa: S608
_ADD_TO_ROLLUPS = add_to_rollups(lambda _: "?")
# Ids looked up at a time (SQLite allows 32,766 parameters), to tell new records from rewritten ones.
_LOOKUP_CHUNK = 500

_KEY_COLUMN_LIST = column_list(KEY_COLUMNS)
_PUT_KEY = (
    f"INSERT OR REPLACE INTO {KEYS_TABLE} ({_KEY_COLUMN_LIST}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(KEY_COLUMNS))})"
)
_GET_KEY = f"SELECT {_KEY_COLUMN_LIST} FROM {KEYS_TABLE} WHERE public_id = ?"  # noqa: S608
_DELETE_KEY = f"DELETE FROM {KEYS_TABLE} WHERE public_id = ?"  # noqa: S608
_LIST_KEYS = (
    f"SELECT {_KEY_COLUMN_LIST} FROM {KEYS_TABLE} "  # noqa: S608
    "WHERE public_id > ? ORDER BY public_id LIMIT ?"
)
_LIST_TEAM_KEYS = (
    f"SELECT {_KEY_COLUMN_LIST} FROM {KEYS_TABLE} "  # noqa: S608
    "WHERE team_id = ? AND public_id > ? ORDER BY public_id LIMIT ?"
)
_TOUCH_KEY = (
    f"UPDATE {KEYS_TABLE} SET last_used_at = ?2 "  # noqa: S608
    "WHERE public_id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)"
)
_TEAM_COLUMN_LIST = column_list(TEAM_COLUMNS)
_PUT_TEAM = (
    f"INSERT OR REPLACE INTO {TEAMS_TABLE} ({_TEAM_COLUMN_LIST}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(TEAM_COLUMNS))})"
)
_GET_TEAM = f"SELECT {_TEAM_COLUMN_LIST} FROM {TEAMS_TABLE} WHERE id = ?"  # noqa: S608
_DELETE_TEAM = f"DELETE FROM {TEAMS_TABLE} WHERE id = ?"  # noqa: S608
_LIST_TEAMS = f"SELECT {_TEAM_COLUMN_LIST} FROM {TEAMS_TABLE} WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608
_AUDIT_COLUMN_LIST = column_list(AUDIT_COLUMNS)
_ADD_AUDIT = (
    f"INSERT INTO {AUDIT_TABLE} ({_AUDIT_COLUMN_LIST}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})"
)
_LIST_AUDIT = f"SELECT {_AUDIT_COLUMN_LIST} FROM {AUDIT_TABLE} ORDER BY id DESC LIMIT ?"  # noqa: S608
_LIST_AUDIT_BEFORE = (
    f"SELECT {_AUDIT_COLUMN_LIST} FROM {AUDIT_TABLE} "  # noqa: S608
    "WHERE id < ? ORDER BY id DESC LIMIT ?"
)


def database_path(url: str) -> str:
    """The file a URL names: `sqlite:///./var/llmgw.db` is relative, `sqlite:////srv/llmgw.db` absolute."""
    prefix = "sqlite:///"
    path = url.removeprefix(prefix)
    if not url.startswith(prefix) or not path:
        raise ValueError(f"a SQLite storage.url looks like sqlite:///./var/llmgw.db, not {url!r}")
    return path


class SQLiteStore:
    """Generation records, API keys, teams and the audit trail in one SQLite file.

    Batches are written by a plain `sqlite3` connection on the event loop thread: appending a few hundred
    rows to the WAL takes about a millisecond of CPU, while handing them to a thread costs several times
    that under load (Python's sqlite3 releases and retakes the GIL around every row, and each retake
    waits on the busy loop thread; measured by `benchmarks/`). That connection never blocks: it neither
    waits for the write lock inside SQLite nor checkpoints. Everything that may wait (migrations,
    lookups, pruning, checkpoints, and every read and write of keys, teams and audit entries) goes
    through an aiosqlite connection and its thread.
    """

    def __init__(
        self, url: str, *, busy_timeout: float = BUSY_TIMEOUT_S, checkpoint_rows: int = CHECKPOINT_ROWS
    ) -> None:
        self._path = database_path(url)
        self._busy_timeout = busy_timeout
        self._checkpoint_rows = checkpoint_rows
        self._db: aiosqlite.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._unchecked_rows = 0
        # Coroutines share the aiosqlite connection, and SQLite refuses a BEGIN inside another's transaction
        # (an admin write while the recorder prunes): its write transactions take turns.
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            await self._open()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _open(self) -> None:
        if self._path != MEMORY:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # No implicit transactions: every write below opens its own, so the lock is taken up front.
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            if self._path != MEMORY:
                await _enable_wal(db)
            # Under WAL, NORMAL can lose the last commits on power loss but never corrupts; records are
            # telemetry, not ledger entries.
            await db.execute("PRAGMA synchronous = NORMAL")
            # Registered first: the migration that creates the rollups sums the stored costs with it.
            await db.create_function(_MICROS, 1, usd_to_micros, deterministic=True)
            await _migrate(db)
            self._writer = None if self._path == MEMORY else _open_writer(self._path)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        """Records and their rollups in one transaction; the records whose id the file already holds
        (a batch written again after a write that timed out) replace theirs and add nothing to the
        rollups. The per-batch work is one id lookup, one executemany each."""
        if not records:
            return
        batch = list({record.id: record for record in records}.values())
        db = self._connection()
        if self._writer is None:  # `:memory:` is one database per connection: the aiosqlite one
            async with self._transaction():
                stored: set[str] = set()
                for query, ids in _lookups(batch):
                    async with db.execute(query, ids) as cursor:
                        stored.update(row[0] for row in await cursor.fetchall())
                await db.executemany(_INSERT, [to_row(record) for record in batch])
                await db.executemany(_ADD_TO_ROLLUPS, _new_rollup_rows(batch, stored))
            return
        await _append(self._writer, batch, self._busy_timeout)
        self._unchecked_rows += len(batch)
        if self._unchecked_rows >= self._checkpoint_rows:
            self._unchecked_rows = 0
            # PASSIVE: copies what no reader still needs, never waits for readers or writers.
            await db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def get(self, generation_id: str) -> GenerationRecord | None:
        async with self._connection().execute(_SELECT, (generation_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else from_row(row)

    async def prune(self, older_than: float) -> int:
        db = self._connection()
        async with self._transaction(), db.execute(_PRUNE, (older_than,)) as cursor:
            return cursor.rowcount

    async def spend(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        filters = spend_filters(key_id, team_id, model)
        query = _SPEND + "".join(f' AND "{column}" = ?' for column, _ in filters)
        row = await self._fetchone(query, (since, until, *(value for _, value in filters)))
        return 0 if row is None else int(row[0])

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        sql, parameters = usage_query(query, lambda _: "?")
        return usage_rows(query, await self._fetchall(sql, tuple(parameters)))

    async def list_generations(self, query: GenerationQuery) -> list[GenerationRecord]:
        sql, parameters = listing_query(query, lambda _: "?")
        return [from_row(row) for row in await self._fetchall(sql, tuple(parameters))]

    async def ping(self) -> bool:
        if self._db is None:
            return False
        try:
            async with self._db.execute("SELECT 1") as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError):  # aiosqlite raises ValueError once the connection is gone
            return False
        return row is not None and row[0] == 1

    async def get_key(self, public_id: str) -> ApiKey | None:
        row = await self._fetchone(_GET_KEY, (public_id,))
        return None if row is None else key_from_row(row)

    async def put_key(self, key: ApiKey) -> None:
        await self._write(_PUT_KEY, key_to_row(key))

    async def delete_key(self, public_id: str) -> bool:
        return await self._write(_DELETE_KEY, (public_id,)) > 0

    async def list_keys(
        self, *, after: str = "", limit: int = 100, team_id: str | None = None
    ) -> list[ApiKey]:
        if team_id is None:
            rows = await self._fetchall(_LIST_KEYS, (after, limit))
        else:
            rows = await self._fetchall(_LIST_TEAM_KEYS, (team_id, after, limit))
        return [key_from_row(row) for row in rows]

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        db = self._connection()
        async with self._transaction():
            await db.executemany(_TOUCH_KEY, list(used.items()))

    async def get_team(self, team_id: str) -> Team | None:
        row = await self._fetchone(_GET_TEAM, (team_id,))
        return None if row is None else team_from_row(row)

    async def put_team(self, team: Team) -> None:
        await self._write(_PUT_TEAM, team_to_row(team))

    async def delete_team(self, team_id: str) -> bool:
        return await self._write(_DELETE_TEAM, (team_id,)) > 0

    async def list_teams(self, *, after: str = "", limit: int = 100) -> list[Team]:
        return [team_from_row(row) for row in await self._fetchall(_LIST_TEAMS, (after, limit))]

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._write(_ADD_AUDIT, audit_to_row(entry))

    async def list_audit(self, *, before: str = "", limit: int = 100) -> list[AuditEntry]:
        if before:
            rows = await self._fetchall(_LIST_AUDIT_BEFORE, (before, limit))
        else:
            rows = await self._fetchall(_LIST_AUDIT, (limit,))
        return [audit_from_row(row) for row in rows]

    async def _fetchone(self, query: str, parameters: tuple[object, ...]) -> sqlite3.Row | None:
        async with self._connection().execute(query, parameters) as cursor:
            return await cursor.fetchone()

    async def _fetchall(self, query: str, parameters: tuple[object, ...]) -> list[sqlite3.Row]:
        async with self._connection().execute(query, parameters) as cursor:
            return list(await cursor.fetchall())

    async def _write(self, statement: str, parameters: tuple[object, ...]) -> int:
        """Run one statement in its own write transaction; the number of rows it changed."""
        db = self._connection()
        async with self._transaction(), db.execute(statement, parameters) as cursor:
            return cursor.rowcount

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """A write transaction on the aiosqlite connection, once no other coroutine's is open."""
        async with self._write_lock, _write_transaction(self._connection()):
            yield

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite generation store is not open")
        return self._db


def _open_writer(path: str) -> sqlite3.Connection:
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA busy_timeout = 0")
    writer.execute("PRAGMA synchronous = NORMAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run on the aiosqlite thread
    return writer


def _lookups(batch: list[GenerationRecord]) -> list[tuple[str, list[str]]]:
    """The SELECTs (and their ids) that find which of the batch's ids are stored already."""
    ids = [record.id for record in batch]
    chunks = [ids[at : at + _LOOKUP_CHUNK] for at in range(0, len(ids), _LOOKUP_CHUNK)]
    return [
        (f"SELECT id FROM {TABLE} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)  # noqa: S608
        for chunk in chunks
    ]


def _new_rollup_rows(batch: list[GenerationRecord], stored: set[str]) -> list[tuple[object, ...]]:
    return rollup_rows([record for record in batch if record.id not in stored])


async def _append(writer: sqlite3.Connection, batch: list[GenerationRecord], busy_timeout: float) -> None:
    """One transaction on the loop thread; while another worker holds the lock, retry asynchronously."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            writer.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(_LOCK_RETRY_S)
    try:
        stored = {row[0] for query, ids in _lookups(batch) for row in writer.execute(query, ids)}
        writer.executemany(_INSERT, [to_row(record) for record in batch])
        writer.executemany(_ADD_TO_ROLLUPS, _new_rollup_rows(batch, stored))
        writer.execute("COMMIT")
    except BaseException:
        writer.rollback()
        raise


@asynccontextmanager
async def _write_transaction(db: aiosqlite.Connection) -> AsyncIterator[None]:
    # IMMEDIATE takes the write lock before reading: a deferred transaction that upgrades to a write
    # after another worker committed fails with SQLITE_BUSY at once instead of waiting busy_timeout.
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        await db.rollback()
        raise
    await db.commit()


async def _enable_wal(db: aiosqlite.Connection) -> None:
    """Switch the file to WAL, retrying while another worker opening it at the same moment holds the lock."""
    # Switching needs an exclusive lock, and SQLite answers "database is locked" at once, without waiting
    # out busy_timeout, when two connections try together; the mode persists, so this is a first-start race.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            async with db.execute("PRAGMA journal_mode = WAL") as cursor:
                row = await cursor.fetchone()
            if row is not None and row[0] == "wal":
                return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError(
                "could not switch the SQLite file to WAL mode (locked or unsupported)"
            )
        await asyncio.sleep(_WAL_RETRY_S)


async def _migrate(db: aiosqlite.Connection) -> None:
    """Run the migrations this file has not seen, each recorded with its version and time."""
    # One write transaction around read-version-then-migrate: a second worker opening the same file waits
    # for the lock, then finds the migrations already applied.
    async with _write_transaction(db):
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version INTEGER PRIMARY KEY NOT NULL, applied_at REAL NOT NULL)"
        )
        async with db.execute(_APPLIED) as cursor:
            row = await cursor.fetchone()
        applied = 0 if row is None else int(row[0])
        for version, statements in enumerate(MIGRATIONS[applied:], start=applied + 1):
            for statement in statements:
                await db.execute(statement)
            await db.execute(
                f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (?, ?)",  # noqa: S608
                (version, time.time()),
            )
