"""The Postgres store (`postgresql://…`): generation records, their usage rollups, API keys, teams and
the admin audit trail in one database shared by several gateway replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import asyncpg

from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey, AuditEntry, Team
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

# One background writer plus the occasional GetGeneration read; every replica holds its own pool.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
# Seconds a connect or any one command may take (`storage.timeout`); pruning alone may take longer.
TIMEOUT_S = 2.0
PRUNE_TIMEOUT_S = 60.0
#: Summing a period's records for the gateway's own budget reads them all.
SPEND_TIMEOUT_S = 60.0
#: A usage report sums a period's rollups (a row per hour, key, team, model and provider).
USAGE_TIMEOUT_S = 30.0

# Any fixed key works as long as every replica uses the same one ("llmgw" in ASCII).
MIGRATION_LOCK_KEY = 0x6C6C6D6777

# Migration n is MIGRATIONS[n - 1], a list of statements run in one transaction. Append only, never edit
# a released one; add columns with defaults so a replica one version behind can still insert.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {TABLE} (
            "id" TEXT PRIMARY KEY,
            "request_id" TEXT NOT NULL,
            "kind" TEXT NOT NULL,
            "model" TEXT NOT NULL,
            "provider" TEXT NOT NULL,
            "upstream_model" TEXT NOT NULL,
            "created_at" DOUBLE PRECISION NOT NULL,
            "streamed" BOOLEAN NOT NULL,
            "status" TEXT NOT NULL,
            "upstream_id" TEXT NOT NULL,
            "finish_reason" TEXT NOT NULL,
            "prompt_tokens" BIGINT NOT NULL,
            "completion_tokens" BIGINT NOT NULL,
            "total_tokens" BIGINT NOT NULL,
            "cached_tokens" BIGINT NOT NULL,
            "reasoning_tokens" BIGINT NOT NULL,
            "cost_usd" DOUBLE PRECISION,
            "latency_ms" DOUBLE PRECISION,
            "time_to_first_token_ms" DOUBLE PRECISION,
            "error_code" TEXT NOT NULL,
            "error_message" TEXT NOT NULL,
            "user" TEXT NOT NULL
        )""",
        f"CREATE INDEX {TABLE}_created_at ON {TABLE} (created_at)",
    ),
    # 2: every upstream attempt of the request, a JSON array (issue 12).
    (f"""ALTER TABLE {TABLE} ADD COLUMN "attempts" TEXT NOT NULL DEFAULT '[]'""",),
    # 3: API keys, teams and the admin audit trail; each record names its key and team. The ids collate
    # as bytes ("C"), so listings page in the same order as in SQLite whatever the database's locale.
    (
        f"""ALTER TABLE {TABLE} ADD COLUMN "key_id" TEXT NOT NULL DEFAULT ''""",
        f"""ALTER TABLE {TABLE} ADD COLUMN "team_id" TEXT NOT NULL DEFAULT ''""",
        f"""CREATE TABLE {KEYS_TABLE} (
            "public_id" TEXT COLLATE "C" PRIMARY KEY,
            "name" TEXT NOT NULL,
            "secret_hash" BYTEA NOT NULL,
            "scopes" TEXT NOT NULL,
            "models" TEXT NOT NULL,
            "team_id" TEXT NOT NULL DEFAULT '',
            "expires_at" DOUBLE PRECISION,
            "disabled" BOOLEAN NOT NULL,
            "metadata" TEXT NOT NULL,
            "created_at" DOUBLE PRECISION NOT NULL,
            "last_used_at" DOUBLE PRECISION,
            "previous_hash" BYTEA,
            "previous_valid_until" DOUBLE PRECISION
        )""",
        f"CREATE INDEX {KEYS_TABLE}_team_id ON {KEYS_TABLE} (team_id, public_id)",
        f"""CREATE TABLE {TEAMS_TABLE} (
            "id" TEXT COLLATE "C" PRIMARY KEY,
            "name" TEXT NOT NULL,
            "metadata" TEXT NOT NULL,
            "created_at" DOUBLE PRECISION NOT NULL
        )""",
        # Audit ids sort by time, so the primary key orders the trail.
        f"""CREATE TABLE {AUDIT_TABLE} (
            "id" TEXT COLLATE "C" PRIMARY KEY,
            "at" DOUBLE PRECISION NOT NULL,
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
            ("rpm", "BIGINT"),
            ("tpm", "BIGINT"),
            ("max_parallel", "BIGINT"),
            ("budget_usd", "DOUBLE PRECISION"),
            ("budget_period", "TEXT"),
            ("soft_budget_usd", "DOUBLE PRECISION"),
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
    # here once from the records already stored (costs rounded as `spend` rounds them); the generations
    # listing's indexes, newest first by id (byte-wise, as the ids sort) within each filter and overall.
    (
        f"""ALTER TABLE {TABLE} ADD COLUMN "trace_id" TEXT NOT NULL DEFAULT ''""",
        rollup_table('TEXT COLLATE "C"', "BIGINT"),
        backfill("round(cost_usd::text::numeric * 1000000)", "(floor(created_at / 3600) * 3600)::bigint"),
        f'CREATE INDEX {TABLE}_id_c ON {TABLE} (id COLLATE "C")',
        *(
            f'CREATE INDEX {TABLE}_{column}_id ON {TABLE} ("{column}", id COLLATE "C")'
            for column in LISTING_INDEXED
        ),
    ),
)

# S608 is silenced below because the SQL is built from module constants only, never from input.
# A column's type, for the arrays a batch is sent in (text unless listed).
_TYPES = {
    "created_at": "float8",
    "streamed": "bool",
    "prompt_tokens": "int8",
    "completion_tokens": "int8",
    "total_tokens": "int8",
    "cached_tokens": "int8",
    "reasoning_tokens": "int8",
    "cost_usd": "float8",
    "latency_ms": "float8",
    "time_to_first_token_ms": "float8",
}
_ARRAYS = ", ".join(
    f"${position}::{_TYPES.get(name, 'text')}[]" for position, name in enumerate(COLUMNS, start=1)
)
_UPDATES = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in COLUMNS if name != "id")
# A batch in one statement, its columns as arrays; `xmax = 0` tells a row this statement inserted from
# one it updated (a record written again: it must not count twice in the rollups). Unlike a look-up
# before the write, it holds when a write that timed out is still running on the server as it is retried.
_UPSERT = (
    f"INSERT INTO {TABLE} ({COLUMN_LIST}) SELECT * FROM unnest({_ARRAYS}) "  # noqa: S608
    f"ON CONFLICT (id) DO UPDATE SET {_UPDATES} RETURNING id, xmax = 0 AS inserted"
)
_ADD_TO_ROLLUPS = add_to_rollups(lambda position: f"${position}")
_SELECT = f"SELECT {COLUMN_LIST} FROM {TABLE} WHERE id = $1"  # noqa: S608
_PRUNE = f"DELETE FROM {TABLE} WHERE created_at < $1"  # noqa: S608
# `spend` rounds each cost in the server as `usd_to_micros` does, so the sum agrees with the budget counters
# to the micro-dollar without shipping every cost here: a float8 as text is its shortest round-trip decimal
# (PostgreSQL 12+ with extra_float_digits > 0, which the pool sets), the very digits of Python's repr;
# numeric holds them exactly, and its round() takes halves away from zero, as ROUND_HALF_UP does.
_SPEND = (
    f"SELECT coalesce(sum(round(cost_usd::text::numeric * 1000000)), 0)::bigint FROM {TABLE} "  # noqa: S608
    "WHERE created_at >= $1 AND created_at < $2 AND cost_usd IS NOT NULL"
)
_APPLIED = f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}"  # noqa: S608
_RECORD_VERSION = f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES ($1, $2)"  # noqa: S608


def _insert(table: str, columns: Sequence[str]) -> str:
    placeholders = ", ".join(f"${position}" for position in range(1, len(columns) + 1))
    return f"INSERT INTO {table} ({column_list(columns)}) VALUES ({placeholders})"  # noqa: S608


def _upsert(table: str, columns: Sequence[str], key: str) -> str:
    """Insert a row, or replace every column of the one with its `key`."""
    updates = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in columns if name != key)
    return f'{_insert(table, columns)} ON CONFLICT ("{key}") DO UPDATE SET {updates}'


_KEY_COLUMN_LIST = column_list(KEY_COLUMNS)
_PUT_KEY = _upsert(KEYS_TABLE, KEY_COLUMNS, "public_id")
_GET_KEY = f"SELECT {_KEY_COLUMN_LIST} FROM {KEYS_TABLE} WHERE public_id = $1"  # noqa: S608
_DELETE_KEY = f"DELETE FROM {KEYS_TABLE} WHERE public_id = $1"  # noqa: S608
_LIST_KEYS = (
    f"SELECT {_KEY_COLUMN_LIST} FROM {KEYS_TABLE} "  # noqa: S608
    "WHERE public_id > $1 ORDER BY public_id LIMIT $2"
)
_LIST_TEAM_KEYS = (
    f"SELECT {_KEY_COLUMN_LIST} FROM {KEYS_TABLE} "  # noqa: S608
    "WHERE team_id = $1 AND public_id > $2 ORDER BY public_id LIMIT $3"
)
_TOUCH_KEY = (
    f"UPDATE {KEYS_TABLE} SET last_used_at = $2 "  # noqa: S608
    "WHERE public_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
)
_TEAM_COLUMN_LIST = column_list(TEAM_COLUMNS)
_PUT_TEAM = _upsert(TEAMS_TABLE, TEAM_COLUMNS, "id")
_GET_TEAM = f"SELECT {_TEAM_COLUMN_LIST} FROM {TEAMS_TABLE} WHERE id = $1"  # noqa: S608
_DELETE_TEAM = f"DELETE FROM {TEAMS_TABLE} WHERE id = $1"  # noqa: S608
_LIST_TEAMS = f"SELECT {_TEAM_COLUMN_LIST} FROM {TEAMS_TABLE} WHERE id > $1 ORDER BY id LIMIT $2"  # noqa: S608
_AUDIT_COLUMN_LIST = column_list(AUDIT_COLUMNS)
_ADD_AUDIT = _insert(AUDIT_TABLE, AUDIT_COLUMNS)
_LIST_AUDIT = f"SELECT {_AUDIT_COLUMN_LIST} FROM {AUDIT_TABLE} ORDER BY id DESC LIMIT $1"  # noqa: S608
_LIST_AUDIT_BEFORE = (
    f"SELECT {_AUDIT_COLUMN_LIST} FROM {AUDIT_TABLE} "  # noqa: S608
    "WHERE id < $1 ORDER BY id DESC LIMIT $2"
)


class PostgresStore:
    """Generation records, API keys, teams and the audit trail in Postgres through a small asyncpg pool.

    `schema` (default: the server's search_path, normally `public`) names an existing schema to keep the
    tables in; the DSN's own `?search_path=` query parameter does the same. `timeout` bounds each
    connect and command (asyncpg's own `timeout` and `command_timeout`) and `close`: a server that
    accepts and then hangs fails calls instead of holding them.
    """

    def __init__(self, url: str, *, schema: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self._url = url
        self._schema = schema
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        # extra_float_digits: `spend` reads costs as their shortest decimals (the server's default, pinned).
        settings = {"extra_float_digits": "1"}
        if self._schema is not None:
            settings["search_path"] = self._schema
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                server_settings=settings,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        try:
            async with pool.acquire() as connection:
                await _migrate(connection)
        except BaseException as exc:
            pool.terminate()  # a graceful close would wait on the server that just failed us
            if isinstance(exc, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the pool gracefully within `timeout`; past it, or when cancelled, drop the connections."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()  # the server ends the sessions itself once their sockets close
        except asyncio.CancelledError:
            pool.terminate()
            raise

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        """Records and their rollups in one transaction. The batch's rollup deltas are summed here, one
        per rollup row, and added in key order, so replicas writing at once never deadlock."""
        if not records:
            return
        batch = list({record.id: record for record in records}.values())
        columns = [list(column) for column in zip(*(to_row(record) for record in batch), strict=True)]
        async with self._connected().acquire() as connection, connection.transaction():
            written = await connection.fetch(_UPSERT, *columns)
            inserted = {row["id"] for row in written if row["inserted"]}
            deltas = rollup_rows([record for record in batch if record.id in inserted])
            if deltas:
                await connection.executemany(_ADD_TO_ROLLUPS, deltas)

    async def get(self, generation_id: str) -> GenerationRecord | None:
        row = await self._connected().fetchrow(_SELECT, generation_id)
        return None if row is None else from_row(row)

    async def prune(self, older_than: float) -> int:
        return _changed(await self._connected().execute(_PRUNE, older_than, timeout=PRUNE_TIMEOUT_S))

    async def spend(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        filters = spend_filters(key_id, team_id, model)
        query = _SPEND + "".join(
            f' AND "{column}" = ${at}' for at, (column, _) in enumerate(filters, start=3)
        )
        values = (value for _, value in filters)
        total = await self._connected().fetchval(query, since, until, *values, timeout=SPEND_TIMEOUT_S)
        return int(total)

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        sql, parameters = usage_query(query, lambda position: f"${position}", "sum({})::bigint")
        rows = await self._connected().fetch(sql, *parameters, timeout=USAGE_TIMEOUT_S)
        return usage_rows(query, rows)

    async def list_generations(self, query: GenerationQuery) -> list[GenerationRecord]:
        sql, parameters = listing_query(query, lambda position: f"${position}", 'id COLLATE "C"')
        return [from_row(row) for row in await self._connected().fetch(sql, *parameters)]

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._pool.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return bool(answer == 1)

    async def get_key(self, public_id: str) -> ApiKey | None:
        row = await self._connected().fetchrow(_GET_KEY, public_id)
        return None if row is None else key_from_row(row)

    async def put_key(self, key: ApiKey) -> None:
        await self._connected().execute(_PUT_KEY, *key_to_row(key))

    async def delete_key(self, public_id: str) -> bool:
        return _changed(await self._connected().execute(_DELETE_KEY, public_id)) > 0

    async def list_keys(
        self, *, after: str = "", limit: int = 100, team_id: str | None = None
    ) -> list[ApiKey]:
        if team_id is None:
            rows = await self._connected().fetch(_LIST_KEYS, after, limit)
        else:
            rows = await self._connected().fetch(_LIST_TEAM_KEYS, team_id, after, limit)
        return [key_from_row(row) for row in rows]

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        if used:
            await self._connected().executemany(_TOUCH_KEY, list(used.items()))

    async def get_team(self, team_id: str) -> Team | None:
        row = await self._connected().fetchrow(_GET_TEAM, team_id)
        return None if row is None else team_from_row(row)

    async def put_team(self, team: Team) -> None:
        await self._connected().execute(_PUT_TEAM, *team_to_row(team))

    async def delete_team(self, team_id: str) -> bool:
        return _changed(await self._connected().execute(_DELETE_TEAM, team_id)) > 0

    async def list_teams(self, *, after: str = "", limit: int = 100) -> list[Team]:
        return [team_from_row(row) for row in await self._connected().fetch(_LIST_TEAMS, after, limit)]

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._connected().execute(_ADD_AUDIT, *audit_to_row(entry))

    async def list_audit(self, *, before: str = "", limit: int = 100) -> list[AuditEntry]:
        if before:
            rows = await self._connected().fetch(_LIST_AUDIT_BEFORE, before, limit)
        else:
            rows = await self._connected().fetch(_LIST_AUDIT, limit)
        return [audit_from_row(row) for row in rows]

    def _connected(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the Postgres generation store is not open")
        return self._pool


def _changed(status: str) -> int:
    """The rows a command changed, from its command tag ("DELETE <count>", "UPDATE <count>")."""
    return int(status.rsplit(" ", 1)[-1])


async def _migrate(connection: asyncpg.Connection) -> None:
    """Run the migrations this database has not seen, each recorded with its version and time."""
    async with connection.transaction():
        # Held until commit: replicas starting together take turns, and the later ones find the
        # migrations already applied instead of racing to create the same tables.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied: int = await connection.fetchval(_APPLIED)
        for version, statements in enumerate(MIGRATIONS[applied:], start=applied + 1):
            for statement in statements:
                await connection.execute(statement)
            await connection.execute(_RECORD_VERSION, version, time.time())
