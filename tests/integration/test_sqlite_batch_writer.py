"""The SQLite store's batch writer runs on the event loop thread, so it must never block the loop:
not while another worker holds the write lock, and not for checkpoints. What it commits, another
worker's store reads at once."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.storage.sqlite import SQLiteStore

RECORD = GenerationRecord(
    id="gen-batch",
    request_id="req-1",
    kind=GenerationKind.CHAT,
    model="m",
    provider="p",
    upstream_model="m",
    created_at=1_700_000_000.0,
    streamed=False,
    status=GenerationStatus.COMPLETED,
)


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, sqlite3.Connection]]:
    """An open store, and another connection to its file standing for another worker."""
    path = tmp_path / "shared.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        yield store, other
    finally:
        other.close()
        await store.close()


async def test_a_batch_waits_for_another_workers_write_lock_without_blocking_the_loop(
    shared: tuple[SQLiteStore, sqlite3.Connection],
) -> None:
    store, other = shared
    other.execute("BEGIN IMMEDIATE")  # another worker is writing
    put = asyncio.create_task(store.put_many([RECORD]))
    started = time.monotonic()
    for _ in range(20):  # the loop keeps turning while the batch waits for the lock
        await asyncio.sleep(0.005)
    # A writer waiting inside SQLite (busy_timeout) would have held the loop for seconds here.
    assert time.monotonic() - started < 1.0
    assert not put.done()
    other.execute("COMMIT")
    await asyncio.wait_for(put, 2)
    assert await store.get(RECORD.id) == RECORD


async def test_a_batch_fails_once_the_lock_stays_taken_past_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = SQLiteStore(f"sqlite:///{path}", busy_timeout=0.05)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await _fails_while_locked_then_works(store, other)
    finally:
        other.close()
        await store.close()


async def _fails_while_locked_then_works(store: SQLiteStore, other: sqlite3.Connection) -> None:
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await store.put_many([RECORD])
    other.execute("COMMIT")
    await store.put_many([RECORD])  # and works again once the lock is free
    assert await store.get(RECORD.id) == RECORD


async def test_the_writer_checkpoints_the_wal_into_the_file_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "grow.db"
    store = SQLiteStore(f"sqlite:///{path}", checkpoint_rows=100)
    await store.open()
    try:
        size_before = path.stat().st_size
        await store.put_many([dataclasses.replace(RECORD, id=f"gen-{i:05d}") for i in range(99)])
        assert path.stat().st_size == size_before  # appended to the WAL only
        await store.put_many([dataclasses.replace(RECORD, id="gen-99999")])
        assert path.stat().st_size > size_before  # the checkpoint copied the pages into the file
    finally:
        await store.close()


@pytest.mark.parametrize("checkpoint_rows", [10_000, 1], ids=["in-the-wal", "checkpointed"])
async def test_a_batch_one_worker_commits_is_read_at_once_by_another_workers_store(
    tmp_path: Path, checkpoint_rows: int
) -> None:
    """What the recorder's lookups on other workers rely on: no snapshot or cache between commit and read."""
    path = tmp_path / "workers.db"
    writer = SQLiteStore(f"sqlite:///{path}", checkpoint_rows=checkpoint_rows)
    reader = SQLiteStore(f"sqlite:///{path}")
    await writer.open()
    await reader.open()
    try:
        for n in range(3):
            record = dataclasses.replace(RECORD, id=f"gen-{n:05d}")
            assert await reader.get(record.id) is None
            await writer.put_many([record])
            assert await reader.get(record.id) == record
    finally:
        await writer.close()
        await reader.close()
