"""The generation recorder: records readable at once, here and from other processes sharing the store;
written within milliseconds, in batches; never lost silently or blocking."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence

import pytest

from llmgw.application.recording import GenerationRecorder
from llmgw.domain.errors import ServiceUnavailable
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus, minted_at
from llmgw.domain.usage_report import GenerationQuery, UsageQuery, UsageRow

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
        self.write_delay = 0.0
        self.writes_begun = 0
        self.reads = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        self.writes_begun += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise ConnectionError("store is down")
        if self.write_delay:
            await asyncio.sleep(self.write_delay)  # a store that awaits its server, as Postgres does
        self.batches.append([record.id for record in records])
        self.records.update((record.id, record) for record in records)

    async def get(self, generation_id: str) -> GenerationRecord | None:
        self.reads += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise ConnectionError("store is down")
        return self.records.get(generation_id)

    async def prune(self, older_than: float) -> int:
        self.prunes.append(older_than)
        if self.fail_prune:
            raise ConnectionError("store is down")
        return 0

    async def spend(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        return 0

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        return []

    async def list_generations(self, query: GenerationQuery) -> list[GenerationRecord]:
        return []

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


def minted(seconds_ago: float) -> str:
    """A gateway id minted `seconds_ago` (negative: in the future), as `new_generation_id` writes them."""
    generation_id = f"gen-{round((time.time() - seconds_ago) * 1000):012x}{secrets.token_hex(8)}"
    assert minted_at(generation_id) is not None
    return generation_id


def written_elsewhere(store: FakeStore, record: GenerationRecord, after: float) -> asyncio.Task[None]:
    """Another worker or replica writing `record` to the shared store `after` seconds from now."""

    async def write() -> None:
        await asyncio.sleep(after)
        await store.put_many([record])

    return asyncio.create_task(write())


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


class FakeClock:
    """The recorder's clock for its drop log, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drop_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == RECORDER_LOG and "buffer full" in r.getMessage()]


async def test_a_full_buffer_drops_new_records_counts_them_and_logs_the_first_at_once(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, max_pending=3, clock=FakeClock())
    store.fail = True

    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        for n in range(5):
            recorder.record(generation(n))

    assert recorder.pending == 3
    assert recorder.dropped == 2
    [line] = drop_lines(caplog)
    assert line.levelno == logging.ERROR
    assert "dropping new generation records" in line.getMessage()
    assert await recorder.get("gen-0000") == generation(0)


async def test_a_burst_of_drops_logs_one_line_at_once_then_at_most_one_summary_per_interval(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 records dropped over 25 s: not 10,000 lines, but the first drop and a summary every 10 s."""
    clock = FakeClock()
    recorder = GenerationRecorder(store, max_pending=1, drop_log_interval=10.0, clock=clock)
    recorder.record(generation(0))

    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        for n in range(1, 10_001):
            recorder.record(generation(n))
            clock.now += 0.0025  # 400 drops a second

    assert recorder.dropped == 10_000
    lines = drop_lines(caplog)
    assert len(lines) == 3
    assert "1 dropped in total" in lines[0].getMessage()
    # Each summary counts the drops since the line before it, and the total.
    assert "4000 generation records dropped in the last 10.0 s (4001 in total)" in lines[1].getMessage()
    assert "4000 generation records dropped in the last 10.0 s (8001 in total)" in lines[2].getMessage()
    assert all(line.levelno == logging.ERROR and line.exc_info is None for line in lines)


async def test_a_summary_of_the_last_drops_follows_once_the_interval_has_passed_after_they_stop(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The store is down and traffic stops: the writer, still retrying, writes the summary."""
    clock = FakeClock()
    recorder = GenerationRecorder(store, max_pending=1, retry_delay=0.005, clock=clock)
    store.fail = True
    recorder.start()
    try:
        with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
            for n in range(6):
                recorder.record(generation(n))
            await asyncio.sleep(0.02)
            assert len(drop_lines(caplog)) == 1  # the first drop; the other four wait for the interval
            clock.now += 10.0
            await eventually(lambda: len(drop_lines(caplog)) == 2)
    finally:
        await recorder.stop(grace=0.0)

    assert "4 generation records dropped" in drop_lines(caplog)[1].getMessage()
    assert "(5 in total)" in drop_lines(caplog)[1].getMessage()


async def test_an_idle_writer_wakes_for_the_summary_after_the_store_came_back(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, max_pending=1, flush_interval=0.001, drop_log_interval=0.05)
    store.fail = True
    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        for n in range(4):
            recorder.record(generation(n))
        store.fail = False
        recorder.start()
        try:
            await eventually(lambda: recorder.pending == 0)
            await eventually(lambda: len(drop_lines(caplog)) == 2)
        finally:
            await recorder.stop()

    assert "(3 in total)" in drop_lines(caplog)[1].getMessage()


async def test_nothing_about_drops_is_logged_when_nothing_was_dropped(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    recorder = GenerationRecorder(store, max_pending=10, flush_interval=0.001, clock=clock)
    recorder.start()
    try:
        with caplog.at_level(logging.DEBUG, logger=RECORDER_LOG):
            for n in range(30):
                recorder.record(generation(n))
                clock.now += 5.0
                await eventually(stored(store, f"gen-{n:04d}"))
    finally:
        await recorder.stop()

    assert recorder.dropped == 0
    assert drop_lines(caplog) == []


async def test_drops_not_logged_yet_are_summed_up_at_stop(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, max_pending=1, clock=FakeClock())
    store.fail = True
    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        for n in range(4):
            recorder.record(generation(n))
        await recorder.stop(grace=0.0)

    assert len(drop_lines(caplog)) == 2
    assert "2 generation records dropped" in drop_lines(caplog)[1].getMessage()


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


async def test_a_record_is_written_within_milliseconds_by_default(store: FakeStore) -> None:
    """Another process can only read it from the store: the writer does not sit on it."""
    recorder = GenerationRecorder(store)
    recorder.start()
    try:
        recorder.record(generation(1))
        waited = await eventually(stored(store, "gen-0001"))
    finally:
        await recorder.stop()

    assert waited < 0.1


async def test_an_idle_writer_writes_at_once_then_at_most_once_per_flush_interval(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, batch_size=3, flush_interval=60.0)
    recorder.start()
    try:
        recorder.record(generation(0))
        assert await eventually(stored(store, "gen-0000")) < 0.1
        recorder.record(generation(1))
        await asyncio.sleep(0.1)
        assert "gen-0001" not in store.records  # it waits for the interval...
        recorder.record(generation(2))
        recorder.record(generation(3))
        await eventually(lambda: len(store.records) == 4)  # ...unless a batch fills
    finally:
        await recorder.stop()

    assert store.batches == [["gen-0000"], ["gen-0001", "gen-0002", "gen-0003"]]


async def test_under_steady_traffic_each_write_carries_what_gathered_since_the_last(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, flush_interval=0.05)
    recorder.start()
    started = time.monotonic()
    try:
        for n in range(50):
            recorder.record(generation(n))
            await asyncio.sleep(0.005)
        await eventually(lambda: len(store.records) == 50)
    finally:
        elapsed = time.monotonic() - started
        await recorder.stop()

    assert store.batches[0] == ["gen-0000"]
    assert [n for batch in store.batches for n in batch] == [f"gen-{n:04d}" for n in range(50)]
    assert len(store.batches) <= elapsed / 0.05 + 2


async def test_records_handed_over_during_a_write_gather_for_the_next_one(store: FakeStore) -> None:
    store.write_delay = 0.1
    recorder = GenerationRecorder(store, flush_interval=0.001)
    recorder.start()
    try:
        recorder.record(generation(0))
        await eventually(lambda: store.writes_begun == 1)
        for n in range(1, 6):
            recorder.record(generation(n))
            await asyncio.sleep(0.002)
        await eventually(lambda: len(store.records) == 6)
    finally:
        await recorder.stop()

    assert store.batches == [["gen-0000"], [f"gen-{n:04d}" for n in range(1, 6)]]


# Lookups of records another worker or replica is about to write


async def test_a_lookup_waits_for_a_record_another_process_is_about_to_write(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    record = dataclasses.replace(generation(1), id=minted(0.01))
    writer = written_elsewhere(store, record, after=0.05)

    started = time.monotonic()
    found = await recorder.get(record.id)
    waited = time.monotonic() - started
    await writer

    assert found == record
    assert 0.05 <= waited < 0.5


async def test_a_long_request_that_just_ended_elsewhere_is_waited_for_too(store: FakeStore) -> None:
    """Its id was minted when it started, ten minutes ago; it ended just now on another worker."""
    recorder = GenerationRecorder(store)
    record = dataclasses.replace(generation(1), id=minted(600))
    writer = written_elsewhere(store, record, after=0.05)

    found = await recorder.get(record.id)
    await writer

    assert found == record


async def test_a_record_handed_over_here_while_a_lookup_waits_is_found(store: FakeStore) -> None:
    recorder = GenerationRecorder(store)
    record = dataclasses.replace(generation(1), id=minted(0.01))
    lookup = asyncio.create_task(recorder.get(record.id))
    await asyncio.sleep(0.03)

    recorder.record(record)

    assert await asyncio.wait_for(lookup, 0.5) == record


async def test_a_recent_id_that_never_appears_is_not_found_after_the_lookup_wait(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, lookup_wait=0.2)

    started = time.monotonic()
    found = await recorder.get(minted(0.01))
    waited = time.monotonic() - started

    assert found is None
    assert 0.2 <= waited < 1.0
    assert 3 <= store.reads <= 10  # it reads again at growing intervals, it does not spin on the store


@pytest.mark.parametrize(
    "generation_id",
    [
        "gen-doesnotexist",
        "gen-0001",
        "",
        minted(0.01).upper().replace("GEN-", "gen-"),
        minted(0.01) + "0",
        minted(2 * 3600),  # older than any request lasts
        minted(-86400),  # minted tomorrow: no clock is that far ahead
    ],
    ids=["malformed", "short", "empty", "uppercase", "long", "old", "future"],
)
async def test_an_id_no_request_in_flight_can_have_is_not_found_at_once(
    store: FakeStore, generation_id: str
) -> None:
    recorder = GenerationRecorder(store, lookup_wait=5.0)

    started = time.monotonic()
    found = await recorder.get(generation_id)

    assert found is None
    assert time.monotonic() - started < 0.5
    assert store.reads == 1


async def test_a_request_longer_than_longest_request_is_not_waited_for(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, lookup_wait=5.0, longest_request=60.0)

    started = time.monotonic()
    assert await recorder.get(minted(120)) is None
    assert time.monotonic() - started < 0.5
    assert store.reads == 1


async def test_a_store_failing_during_the_wait_fails_the_lookup(store: FakeStore) -> None:
    """A lookup that cannot read the store says so (a 503); it does not answer "not found"."""
    recorder = GenerationRecorder(store)
    lookup = asyncio.create_task(recorder.get(minted(0.01)))
    await asyncio.sleep(0.03)
    store.fail = True

    with pytest.raises(ServiceUnavailable, match="failed to answer"):
        await asyncio.wait_for(lookup, 0.5)


async def test_a_waiting_record_is_found_while_the_store_hangs(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, timeout=0.1)
    store.hang = True
    record = generation(1)
    recorder.record(record)

    started = time.monotonic()
    assert await recorder.get(record.id) == record
    assert time.monotonic() - started < 0.05


@pytest.mark.parametrize("generation_id", [minted(0.01), "gen-doesnotexist"], ids=["recent", "malformed"])
async def test_a_lookup_the_hanging_store_cannot_answer_is_unavailable_within_the_timeout(
    store: FakeStore, generation_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, timeout=0.1, lookup_wait=5.0)
    store.hang = True

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=RECORDER_LOG):
        with pytest.raises(ServiceUnavailable, match=r"does not answer within storage\.timeout"):
            await recorder.get(generation_id)
        with pytest.raises(ServiceUnavailable):
            await recorder.get(generation_id)
    took = time.monotonic() - started

    assert 0.2 <= took < 0.5  # two lookups, each one read bounded by the timeout; no re-reads
    assert store.reads == 2
    assert [r.getMessage() for r in caplog.records] == ["generation lookups fail: no answer within 0.1 s"]


async def test_a_store_that_starts_hanging_during_the_wait_ends_the_lookup_within_wait_plus_timeout(
    store: FakeStore,
) -> None:
    recorder = GenerationRecorder(store, timeout=0.1, lookup_wait=0.2)
    lookup = asyncio.create_task(recorder.get(minted(0.01)))
    await asyncio.sleep(0.05)
    store.hang = True

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(lookup, 1.0)
    assert time.monotonic() - started < 0.2 + 0.1


async def test_a_record_handed_over_while_a_read_hangs_is_found(store: FakeStore) -> None:
    recorder = GenerationRecorder(store, timeout=0.1)
    store.hang = True
    record = generation(1)
    lookup = asyncio.create_task(recorder.get(record.id))
    await asyncio.sleep(0.02)

    recorder.record(record)

    assert await asyncio.wait_for(lookup, 0.5) == record


async def test_a_write_that_hangs_times_out_and_its_records_wait_for_the_next(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, timeout=0.05, retry_delay=0.01)
    store.hang = True
    recorder.record(generation(1))
    recorder.start()
    try:
        with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
            await eventually(lambda: store.writes_begun >= 2)
        assert recorder.pending == 1
        assert recorder.store_healthy is False
        store.hang = False
        await eventually(stored(store, "gen-0001"))
    finally:
        await recorder.stop()

    timeouts = [r for r in caplog.records if "did not finish within 0.1 s" in r.getMessage()]
    assert len(timeouts) == 1  # once per outage, not per retry


async def test_stop_with_a_hanging_store_returns_within_its_grace_and_says_what_was_lost(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = GenerationRecorder(store, timeout=5.0, retry_delay=0.01)
    recorder.start()
    store.hang = True
    for n in range(3):
        recorder.record(generation(n))
    await eventually(lambda: store.writes_begun == 1)  # the writer is stuck in a write

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger=RECORDER_LOG):
        await recorder.stop(grace=0.2)
    took = time.monotonic() - started

    assert 0.2 <= took < 0.4
    assert recorder.pending == 3
    assert any("3 generation records could not be written" in r.getMessage() for r in caplog.records)


async def test_ping_waits_at_most_the_timeout_by_default(store: FakeStore) -> None:
    store.hang = True

    started = time.monotonic()
    assert await GenerationRecorder(store, timeout=0.1).ping() is False
    assert time.monotonic() - started < 0.3


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
