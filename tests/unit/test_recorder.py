"""The generation recorder: records readable at once, written in batches, never lost silently or blocking."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import pytest

from llmgw.application.recording import GenerationRecorder
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus

RECORDER_LOG = "llmgw.application.recording"


class FakeStore:
    """A `GenerationStore` in memory that can be told to fail or to hang."""

    def __init__(self) -> None:
        self.records: dict[str, GenerationRecord] = {}
        self.batches: list[list[str]] = []
        self.prunes: list[float] = []
        self.fail = False
        self.fail_prune = False
        self.hang = False

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        if self.fail:
            raise ConnectionError("store is down")
        self.batches.append([record.id for record in records])
        self.records.update((record.id, record) for record in records)

    async def get(self, generation_id: str) -> GenerationRecord | None:
        if self.fail:
            raise ConnectionError("store is down")
        return self.records.get(generation_id)

    async def prune(self, older_than: float) -> int:
        self.prunes.append(older_than)
        if self.fail_prune:
            raise ConnectionError("store is down")
        return 0

    async def ping(self) -> bool:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise ConnectionError("store is down")
        return True


def generation(n: int) -> GenerationRecord:
    return GenerationRecord(
        id=f"gen-{n:04d}",
        request_id=f"req-{n}",
        kind=GenerationKind.CHAT,
        model="openrouter/openai/gpt-4o",
        provider="openrouter",
        upstream_model="openai/gpt-4o",
        created_at=1_700_000_000.0 + n,
        streamed=False,
        status=GenerationStatus.COMPLETED,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
    )


async def eventually(condition: Callable[[], bool], within: float = 1.0) -> float:
    """Wait until `condition` holds; return how long that took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def stored(store: FakeStore, generation_id: str) -> Callable[[], bool]:
    return lambda: generation_id in store.records


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


async def test_a_record_is_readable_before_it_is_written(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    record = generation(1)

    recorder.record(record)

    assert store.records == {}
    assert await recorder.get("gen-0001") == record


async def test_a_written_record_is_read_from_the_store(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    recorder.record(generation(1))

    assert await recorder.flush() is True

    assert recorder.pending == 0
    assert "gen-0001" in store.records
    assert await recorder.get("gen-0001") == generation(1)


async def test_an_unknown_generation_is_not_found(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    recorder.record(generation(1))

    assert await recorder.get("gen-9999") is None


async def test_flush_writes_in_batches_of_batch_size_oldest_first(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, batch_size=3)
    for n in range(7):
        recorder.record(generation(n))

    assert await recorder.flush() is True

    assert store.batches == [
        ["gen-0000", "gen-0001", "gen-0002"],
        ["gen-0003", "gen-0004", "gen-0005"],
        ["gen-0006"],
    ]
    assert recorder.pending == 0


async def test_the_writer_lets_other_tasks_run_between_batches(store: FakeStore) -> None:
    """A store may write on the loop's thread without awaiting (SQLite does): requests must not wait for
    a whole backlog, only for one batch."""
    recorder = GenerationRecorder(store, batch_size=2)
    for n in range(6):
        recorder.record(generation(n))
    batches_seen: list[int] = []

    async def a_request() -> None:
        for _ in range(3):
            batches_seen.append(len(store.batches))
            await asyncio.sleep(0)

    request = asyncio.create_task(a_request())
    await asyncio.sleep(0)  # the request runs first and yields

    assert await recorder.flush() is True
    await request

    assert len(store.batches) == 3
    assert batches_seen == [0, 1, 2]  # it ran between batches, not after all of them


async def test_batches_are_small_by_default(store: FakeStore) -> None:
    """One batch holds the loop while a store writes it there; 100 SQLite rows take ~0.7 ms."""
    recorder = GenerationRecorder(store, flush_interval=60.0)
    recorder.start()
    try:
        for n in range(250):
            recorder.record(generation(n))
        await eventually(lambda: len(store.records) >= 200)
    finally:
        await recorder.stop()

    assert [len(batch) for batch in store.batches][:2] == [100, 100]


async def test_a_failing_store_keeps_records_waiting_and_readable(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    store.fail = True

    for n in range(3):
        recorder.record(generation(n))  # a request hands its record over without error
    assert await recorder.flush() is False

    assert recorder.pending == 3
    assert recorder.store_healthy is False
    assert await recorder.get("gen-0002") == generation(2)


async def test_records_kept_while_the_store_was_down_are_written_once_it_is_back(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, batch_size=2)
    store.fail = True
    for n in range(3):
        recorder.record(generation(n))
    await recorder.flush()

    store.fail = False
    recorder.record(generation(3))

    assert await recorder.flush() is True
    assert sorted(store.records) == ["gen-0000", "gen-0001", "gen-0002", "gen-0003"]
    assert recorder.pending == 0
    assert recorder.store_healthy is True


async def test_a_store_failure_is_logged_with_its_traceback_once_not_on_every_retry(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store)
    store.fail = True
    recorder.record(generation(1))

    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        for _ in range(3):
            await recorder.flush()

    failures = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None


async def test_a_full_buffer_drops_new_records_counts_them_and_logs_an_error(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, max_pending=3)
    store.fail = True

    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        for n in range(5):
            recorder.record(generation(n))

    assert recorder.pending == 3
    assert recorder.dropped == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == RECORDER_LOG]
    assert len(errors) == 2
    assert "gen-0003" in errors[0].getMessage()
    assert "gen-0004" in errors[1].getMessage()
    assert await recorder.get("gen-0000") == generation(0)


async def test_a_buffer_freed_by_a_flush_accepts_records_again(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, max_pending=2)
    for n in range(3):
        recorder.record(generation(n))
    await recorder.flush()

    recorder.record(generation(3))

    assert recorder.dropped == 1
    assert recorder.pending == 1
    assert await recorder.get("gen-0003") == generation(3)


async def test_stop_writes_every_waiting_record(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, batch_size=2, flush_interval=60.0)
    recorder.start()
    for n in range(5):
        recorder.record(generation(n))

    await recorder.stop()

    assert len(store.records) == 5
    assert recorder.pending == 0


async def test_stop_without_a_running_writer_still_writes_every_waiting_record(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    for n in range(4):
        recorder.record(generation(n))

    await recorder.stop()

    assert len(store.records) == 4


async def test_stop_retries_a_store_that_comes_back_within_the_grace_period(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, retry_delay=0.01)
    store.fail = True
    recorder.record(generation(1))

    async def recover() -> None:
        await asyncio.sleep(0.03)
        store.fail = False

    recovery = asyncio.create_task(recover())
    await recorder.stop(grace=1.0)
    await recovery

    assert "gen-0001" in store.records


async def test_stop_gives_up_after_the_grace_period_and_says_what_was_lost(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, retry_delay=0.01)
    store.fail = True
    recorder.record(generation(1))
    recorder.record(generation(2))

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        await recorder.stop(grace=0.05)

    assert time.monotonic() - started < 0.5
    assert any("2 generation records could not be written" in r.getMessage() for r in caplog.records)


async def test_the_writer_flushes_at_least_every_flush_interval(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, flush_interval=0.05)
    recorder.start()
    try:
        recorder.record(generation(1))
        first = await eventually(stored(store, "gen-0001"))
        recorder.record(generation(2))
        second = await eventually(stored(store, "gen-0002"))
    finally:
        await recorder.stop()

    assert first < 0.5
    assert second < 0.5
    assert len(store.batches) == 2


async def test_a_full_batch_is_written_without_waiting_for_the_interval(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, batch_size=3, flush_interval=60.0)
    recorder.start()
    try:
        for n in range(3):
            recorder.record(generation(n))
        waited = await eventually(lambda: len(store.records) == 3)
    finally:
        await recorder.stop()

    assert waited < 0.5


async def test_the_writer_keeps_retrying_a_store_that_was_down(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, flush_interval=0.01, retry_delay=0.01)
    store.fail = True
    recorder.start()
    try:
        recorder.record(generation(1))
        await asyncio.sleep(0.05)
        assert store.records == {}
        store.fail = False
        await eventually(stored(store, "gen-0001"))
    finally:
        await recorder.stop()

    assert recorder.store_healthy is True


async def test_ping_is_true_when_the_store_answers(store: FakeStore) -> None:
    assert await GenerationRecorder(store).ping() is True


async def test_ping_is_false_when_the_store_raises(store: FakeStore) -> None:
    store.fail = True

    assert await GenerationRecorder(store).ping() is False


async def test_ping_is_false_when_the_store_hangs_past_the_deadline(store: FakeStore) -> None:
    store.hang = True

    started = time.monotonic()
    healthy = await GenerationRecorder(store).ping(within=0.05)

    assert healthy is False
    assert time.monotonic() - started < 0.5


async def test_old_records_are_pruned_by_retention_days(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, flush_interval=0.01, retention_days=30)
    recorder.start()
    try:
        await eventually(lambda: bool(store.prunes))
        now = time.time()
    finally:
        await recorder.stop()

    assert store.prunes[0] == pytest.approx(now - 30 * 86400, abs=2.0)


async def test_pruning_runs_at_most_once_an_hour_not_on_every_flush(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, flush_interval=0.005, retention_days=7)
    recorder.start()
    try:
        for n in range(3):
            recorder.record(generation(n))
            await eventually(stored(store, f"gen-{n:04d}"))
    finally:
        await recorder.stop()

    assert len(store.prunes) == 1


async def test_nothing_is_pruned_when_retention_days_is_zero(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, flush_interval=0.005, retention_days=0)
    recorder.start()
    try:
        for n in range(3):
            recorder.record(generation(n))
            await eventually(stored(store, f"gen-{n:04d}"))
    finally:
        await recorder.stop()

    assert store.prunes == []


async def test_a_failed_prune_does_not_stop_the_writer(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.fail_prune = True
    recorder = GenerationRecorder(store, flush_interval=0.005, retention_days=1)
    recorder.start()
    try:
        with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
            await eventually(lambda: bool(store.prunes))
            recorder.record(generation(1))
            await eventually(stored(store, "gen-0001"))
    finally:
        await recorder.stop()

    assert any("pruning" in r.getMessage() for r in caplog.records)
