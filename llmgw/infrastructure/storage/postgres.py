"""The Postgres generation store (`postgresql://…`): one database shared by several gateway replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg

from llmgw.domain.generation import GenerationRecord
from llmgw.infrastructure.storage.errors import StoreUnavailable
from llmgw.infrastructure.storage.rows import COLUMN_LIST, COLUMNS, TABLE, VERSION_TABLE, from_row, to_row

# One background writer plus the occasional GetGeneration read; every replica holds its own pool.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
# Seconds a connect or any one command may take (`storage.timeout`); pruning alone may take longer.
TIMEOUT_S = 2.0
PRUNE_TIMEOUT_S = 60.0

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
)

# S608 is silenced below because the SQL is built from module constants only, never from input.
_PLACEHOLDERS = ", ".join(f"${position}" for position in range(1, len(COLUMNS) + 1))
_UPDATES = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in COLUMNS if name != "id")
_UPSERT = (
    f"INSERT INTO {TABLE} ({COLUMN_LIST}) VALUES ({_PLACEHOLDERS}) "  # noqa: S608
    f"ON CONFLICT (id) DO UPDATE SET {_UPDATES}"
)
_SELECT = f"SELECT {COLUMN_LIST} FROM {TABLE} WHERE id = $1"  # noqa: S608
_PRUNE = f"DELETE FROM {TABLE} WHERE created_at < $1"  # noqa: S608
_APPLIED = f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}"  # noqa: S608
_RECORD_VERSION = f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES ($1, $2)"  # noqa: S608


class PostgresStore:
    """Generation records in Postgres through a small asyncpg pool.

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
        settings = None if self._schema is None else {"search_path": self._schema}
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
        if records:
            # Atomic on its own since asyncpg 0.22: a failed batch writes nothing.
            await self._connected().executemany(_UPSERT, [to_row(record) for record in records])

    async def get(self, generation_id: str) -> GenerationRecord | None:
        row = await self._connected().fetchrow(_SELECT, generation_id)
        return None if row is None else from_row(row)

    async def prune(self, older_than: float) -> int:
        status: str = await self._connected().execute(_PRUNE, older_than, timeout=PRUNE_TIMEOUT_S)
        return int(status.rsplit(" ", 1)[-1])  # the command tag, "DELETE <count>"

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._pool.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return bool(answer == 1)

    def _connected(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the Postgres generation store is not open")
        return self._pool


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
