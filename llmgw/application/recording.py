"""The generation recorder: one bounded buffer, one background writer, and lookups that find a record
the moment its response has ended, on any worker or replica sharing the store.

Requests hand records over with `record()` (no I/O, no await). The writer writes them at once when it
has been idle and, under load, at most once every `flush_interval` (10 ms), each write carrying what was
handed over since the last one (a full `batch_size` goes at once). So a record is in the store one write
after its response ended when traffic is light, and within ~10 ms and a write under load, while the
writes' fixed costs stay bounded whatever the request rate: at most 100 transactions a second (more
only past `batch_size` records per 10 ms), each ~50 µs of CPU on SQLite plus the writer's wake-up.
While a write is in flight (Postgres awaits the server) the next batch gathers. `stop()` writes
whatever waits. A store that is down does not fail requests: records wait in the buffer, and when the
buffer is full new ones are dropped and counted. The first drop is logged at once, then at most one
summary line every `drop_log_interval` (10 s) says how many were dropped since the last line: an outage
that drops 28,000 records writes a handful of lines, not one each. `record()` checks the clock only when
it drops; the writer, which wakes for the summary when it is due, writes the last one after drops stop.

Lookups read this process's waiting records, then the store. A record handed over by another worker or
replica reaches the store only after that write, so a lookup that misses, for an id that may belong to
a request finishing elsewhere, reads the store again at growing intervals (2 ms, doubling, at most
250 ms apart: 15 reads in all) for up to `lookup_wait` (2 s) before it answers not found. The wait is
a generous multiple of the writer's lag: a write when idle, ~10 ms and a write under load, plus on a
saturated loop the loop's own delay (hundreds of ms at worst in the benchmarks). Ids carry their
minting time (`minted_at`): one that is malformed, older than `longest_request` (no request is in
flight that long), or from the future beyond clock skew is answered at once, after one read.

Every store call is bounded by `timeout` (`storage.timeout`, 2 s): a store that accepts and then hangs
is a store that failed. A lookup answers from this process's waiting records without the store; when
the record is not here and a read fails or does not answer within `timeout`, the lookup raises
`ServiceUnavailable` (a 503, never a hang). So a lookup ends within `timeout` of its first read; a
recent id that is re-read ends within `lookup_wait + timeout` at worst (the last read may begin just
before `lookup_wait` is over), and at once after the first read that fails. A write that times out
keeps its records waiting, as a failed one does (writes are upserts: one that did land is harmless to
repeat). `stop(grace)` gives the final flush `grace` seconds in all, whatever the store does.
Pruning alone gets a longer bound (`PRUNE_TIMEOUT`): the first prune after retention is enabled may
delete many rows, and a prune cut short rolls back and would never progress.

Why not write on the request path: a store round trip awaited by every request adds its latency and a
whole transaction of CPU to each; and a registry of in-flight ids shared between processes (Redis,
Postgres LISTEN/NOTIFY) would add a dependency and a write per request for what a short re-read covers.
The price is paid by misses only: a well-formed, recent id that does not exist takes `lookup_wait` to
answer and 15 store reads.

Batches are small and the writer lets requests run between them: a store may write on the event loop's
thread (SQLite does, ~7 µs a row), so a batch holds every request on the loop for as long as it takes:
100 rows ~0.7 ms, where 500 took ~3 ms and showed in the p99 latency of every request around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from itertools import islice
from typing import TypeVar

from llmgw.application.ports import GenerationStore
from llmgw.domain.errors import ServiceUnavailable
from llmgw.domain.generation import GenerationRecord, minted_at

_T = TypeVar("_T")

log = logging.getLogger(__name__)

_PRUNE_EVERY = 3600.0
_SECONDS_PER_DAY = 86400.0
# A missed lookup reads the store again after 2 ms, then at doubling intervals of at most 250 ms.
_FIRST_REREAD = 0.002
_LONGEST_REREAD = 0.25
# Ids minted by a replica whose clock runs ahead of ours by up to this much may still be in flight.
_CLOCK_SKEW = 60.0
# Seconds a prune may take, `timeout` permitting more (see the module's docstring).
PRUNE_TIMEOUT = 60.0


class GenerationRecorder:
    def __init__(
        self,
        store: GenerationStore,
        *,
        max_pending: int = 50_000,
        batch_size: int = 100,
        flush_interval: float = 0.01,
        retention_days: int = 0,
        retry_delay: float = 1.0,
        lookup_wait: float = 2.0,
        longest_request: float = 3600.0,
        drop_log_interval: float = 10.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._timeout = timeout
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retention_days = retention_days
        self._retry_delay = retry_delay
        self._lookup_wait = lookup_wait
        self._longest_request = longest_request
        # Insertion-ordered: the writer takes the oldest first; records leave only once written.
        self._pending: dict[str, GenerationRecord] = {}
        self._waiting = asyncio.Event()  # records wait to be written
        self._full = asyncio.Event()  # a whole batch waits
        self._task: asyncio.Task[None] | None = None
        self._last_write = float("-inf")  # when the writer last began a write, on the loop's clock
        self._last_prune = 0.0
        self.dropped = 0
        self.store_healthy = True
        self._lookups_failing = False  # a failed lookup was logged; the next one that reads logs again
        self._drop_log_interval = drop_log_interval
        self._clock = clock  # for the drop log's pace only
        self._dropped_logged = 0  # `dropped` when the last drop line was written
        self._drop_logged_at = float("-inf")  # and when, on `clock`

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: GenerationRecord) -> None:
        pending = self._pending
        if len(pending) >= self._max_pending:
            self.dropped += 1
            self._log_drops(due_only=True)
            return
        pending[record.id] = record
        self._waiting.set()
        if len(pending) >= self._batch_size:
            self._full.set()

    def _log_drops(self, *, due_only: bool) -> None:
        """Log the drops not logged yet: with `due_only`, only once `drop_log_interval` has passed
        since the last line."""
        unlogged = self.dropped - self._dropped_logged
        if not unlogged:
            return
        now = self._clock()
        since = now - self._drop_logged_at
        if due_only and since < self._drop_log_interval:
            return
        if since >= self._drop_log_interval and unlogged == 1:
            log.error(
                "generation buffer full (%d records waiting): dropping new generation records "
                "(%d dropped in total); further drops are summed up every %.0f s",
                len(self._pending),
                self.dropped,
                self._drop_log_interval,
            )
        else:
            log.error(
                "generation buffer full: %d generation records dropped in the last %.1f s (%d in total)",
                unlogged,
                since,
                self.dropped,
            )
        self._dropped_logged = self.dropped
        self._drop_logged_at = now

    def _until_drop_log(self) -> float | None:
        if self.dropped == self._dropped_logged:
            return None
        return max(0.0, self._drop_logged_at + self._drop_log_interval - self._clock())

    async def get(self, generation_id: str) -> GenerationRecord | None:
        """The record, from this process or the store; waits up to `lookup_wait` for one that another
        process may be about to write (see the module's docstring). Raises `ServiceUnavailable` when the
        record is not waiting here and the store fails or does not answer within `timeout`."""
        found = await self._look_up(generation_id)
        if found is not None or not self._may_be_in_flight(generation_id):
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lookup_wait
        pause = _FIRST_REREAD
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, _LONGEST_REREAD)
            found = await self._look_up(generation_id)
            if found is not None:
                return found
        return None

    async def _look_up(self, generation_id: str) -> GenerationRecord | None:
        record = self._pending.get(generation_id)
        if record is not None:
            return record
        try:
            found = await self._bounded(self._store.get(generation_id), self._timeout)
        except Exception as exc:  # the store is an adapter we do not control: any failure is a 503
            # The writer may have been handed it, or stored it, meanwhile.
            record = self._pending.get(generation_id)
            if record is not None:
                return record
            raise self._unavailable(exc) from exc
        if self._lookups_failing:
            self._lookups_failing = False
            log.info("generation store answers lookups again")
        # The writer may have stored it between our two looks.
        return found if found is not None else self._pending.get(generation_id)

    def _unavailable(self, exc: Exception) -> ServiceUnavailable:
        """The error a lookup the store could not answer raises; the first of an outage is logged."""
        timed_out = isinstance(exc, TimeoutError)
        if timed_out:
            message = "The generation store does not answer within storage.timeout; try again later."
        else:
            message = "The generation store failed to answer; try again later."
        if not self._lookups_failing:
            self._lookups_failing = True
            log.warning(
                "generation lookups fail: %s",
                f"no answer within {self._timeout:g} s" if timed_out else exc,
                exc_info=not timed_out,
            )
        return ServiceUnavailable(message)

    @staticmethod
    async def _bounded(call: Coroutine[object, object, _T], within: float) -> _T:
        """`call`'s result, or `TimeoutError` once `within` seconds have passed. A call cut short is
        cancelled but not waited for: an adapter may take its time to unwind (asyncpg cancels the query
        on the server, through the same hanging network), and that time must not count against callers."""
        task = asyncio.ensure_future(call)
        try:
            await asyncio.wait({task}, timeout=max(0.0, within))
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        task.add_done_callback(_forget)
        raise TimeoutError

    def _may_be_in_flight(self, generation_id: str) -> bool:
        minted = minted_at(generation_id)
        if minted is None:
            return False
        return -_CLOCK_SKEW <= time.time() - minted <= self._longest_request

    async def ping(self, within: float | None = None) -> bool:
        """True when the store answers within `within` seconds (default: `timeout`)."""
        try:
            return await self._bounded(self._store.ping(), self._timeout if within is None else within)
        except TimeoutError:
            log.warning(
                "generation store does not answer within %g s", self._timeout if within is None else within
            )
            return False
        except Exception:  # readiness probes report, they do not raise
            log.warning("generation store does not answer", exc_info=True)
            return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="generation-writer")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the writer and flush every waiting record, trying for at most `grace` seconds in all:
        each write is bounded by what is left of it, so a store that hangs cannot hold the stop longer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A store call that swallows its cancellation must not hold the stop either.
            await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            if not task.done():
                log.warning("shutdown: the generation writer did not stop; abandoning its write")
        while self._pending and (left := deadline - loop.time()) > 0:
            if not await self.flush(within=left):
                await asyncio.sleep(min(self._retry_delay, max(0.0, deadline - loop.time())))
        self._log_drops(due_only=False)
        if self._pending:
            log.error(
                "shutdown: %d generation records could not be written (the store failed or did not "
                "answer within %.1f s)",
                len(self._pending),
                grace,
            )

    async def flush(self, within: float | None = None) -> bool:
        """Write the records waiting when called, oldest first, batch by batch; False when the store
        failed or a write took longer than `timeout` (or than what is left of `within` seconds).
        Records handed over meanwhile wait for the next flush, so that they gather in its batch."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        left = len(self._pending)
        while left > 0 and self._pending:
            batch = list(islice(self._pending.values(), min(self._batch_size, left)))
            left -= len(batch)
            bound = self._timeout if deadline is None else min(self._timeout, deadline - loop.time())
            if bound <= 0:
                return False
            try:
                if deadline is None:
                    # The writer's own writes: no task each (the writer is abandoned whole at stop).
                    async with asyncio.timeout(bound):
                        await self._store.put_many(batch)
                else:
                    await self._bounded(self._store.put_many(batch), bound)
            except TimeoutError:
                if self.store_healthy:
                    log.error(
                        "generation store write did not finish within %.1f s; %d records wait",
                        bound,
                        len(self._pending),
                    )
                self.store_healthy = False
                return False
            except Exception:  # the store is an adapter we do not control; keep records and retry
                if self.store_healthy:
                    log.exception("generation store write failed; %d records wait", len(self._pending))
                self.store_healthy = False
                return False
            self.store_healthy = True
            for record in batch:
                self._pending.pop(record.id, None)
            if left > 0:
                await asyncio.sleep(0)  # requests waiting on the loop go first
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._until_work()
            self._log_drops(due_only=True)
            if self._pending:
                self._last_write = loop.time()
                if not await self.flush():
                    await asyncio.sleep(self._retry_delay)
            await self._prune_if_due()

    async def _until_work(self) -> None:
        """Return once records wait and the last write began `flush_interval` ago (a full batch does not
        wait for that), or once pruning or a line about dropped records is due."""
        if not self._pending:
            self._waiting.clear()
            due = [t for t in (self._until_prune(), self._until_drop_log()) if t is not None]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(due, default=None)):
                    await self._waiting.wait()
        rest = self._last_write + self._flush_interval - asyncio.get_running_loop().time()
        if rest > 0 and 0 < len(self._pending) < self._batch_size:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rest):
                    await self._full.wait()

    def _until_prune(self) -> float | None:
        if self._retention_days <= 0:
            return None
        return max(0.0, self._last_prune + _PRUNE_EVERY - time.time())

    async def _prune_if_due(self) -> None:
        now = time.time()
        if self._retention_days <= 0 or now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        try:
            removed = await self._bounded(
                self._store.prune(now - self._retention_days * _SECONDS_PER_DAY),
                max(self._timeout, PRUNE_TIMEOUT),
            )
        except Exception:  # pruning is housekeeping; a failure must not stop the writer
            log.exception("pruning old generation records failed")
            return
        if removed:
            log.info("pruned %d generation records older than %d days", removed, self._retention_days)


def _forget(task: asyncio.Task[object]) -> None:
    """Retrieve the outcome of a store call abandoned after its timeout, so that it is not logged."""
    if not task.cancelled():
        task.exception()
