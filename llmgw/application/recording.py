"""The generation recorder: one bounded buffer, one background writer, reads that see unwritten records.

Requests hand records over with `record()` (no I/O, no await). The writer flushes them to the store in
batches at least every `flush_interval`, whenever `batch_size` wait, and at `stop()`. A store that is down
does not fail requests: records wait in the buffer, and when the buffer is full new ones are dropped,
counted and logged.

Batches are small and the writer lets requests run between them: a store may write on the event loop's
thread (SQLite does, ~7 µs a row), so a batch holds every request on the loop for as long as it takes:
100 rows ~0.7 ms, where 500 took ~3 ms and showed in the p99 latency of every request around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from itertools import islice

from llmgw.application.ports import GenerationStore
from llmgw.domain.generation import GenerationRecord

log = logging.getLogger(__name__)

_PRUNE_EVERY = 3600.0
_SECONDS_PER_DAY = 86400.0


class GenerationRecorder:
    def __init__(
        self,
        store: GenerationStore,
        *,
        max_pending: int = 50_000,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        retention_days: int = 0,
        retry_delay: float = 1.0,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retention_days = retention_days
        self._retry_delay = retry_delay
        # Insertion-ordered: the writer takes the oldest first; records leave only once written.
        self._pending: dict[str, GenerationRecord] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.dropped = 0
        self.store_healthy = True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: GenerationRecord) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            log.error(
                "generation buffer full (%d records waiting); dropped record %s (%d dropped so far)",
                len(self._pending),
                record.id,
                self.dropped,
            )
            return
        self._pending[record.id] = record
        if len(self._pending) >= self._batch_size:
            self._wakeup.set()

    async def get(self, generation_id: str) -> GenerationRecord | None:
        record = self._pending.get(generation_id)
        if record is not None:
            return record
        found = await self._store.get(generation_id)
        # The writer may have stored it between our two looks.
        return found if found is not None else self._pending.get(generation_id)

    async def ping(self, within: float = 2.0) -> bool:
        """True when the store answers within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                return await self._store.ping()
        except Exception:  # readiness probes report, they do not raise
            log.warning("generation store does not answer", exc_info=True)
            return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="generation-writer")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the writer and flush every waiting record, trying for at most `grace` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + grace
        while self._pending and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(min(self._retry_delay, max(0.0, deadline - time.monotonic())))
        if self._pending:
            log.error("shutdown: %d generation records could not be written", len(self._pending))

    async def flush(self) -> bool:
        """Write everything waiting, batch by batch; False when the store failed."""
        while self._pending:
            batch = list(islice(self._pending.values(), self._batch_size))
            try:
                await self._store.put_many(batch)
            except Exception:  # the store is an adapter we do not control; keep records and retry
                if self.store_healthy:
                    log.exception("generation store write failed; %d records wait", len(self._pending))
                self.store_healthy = False
                return False
            self.store_healthy = True
            for record in batch:
                self._pending.pop(record.id, None)
            if self._pending:
                await asyncio.sleep(0)  # requests waiting on the loop go first
        return True

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            if not await self.flush():
                await asyncio.sleep(self._retry_delay)
            await self._prune_if_due()

    async def _prune_if_due(self) -> None:
        now = time.time()
        if self._retention_days <= 0 or now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        try:
            removed = await self._store.prune(now - self._retention_days * _SECONDS_PER_DAY)
        except Exception:  # pruning is housekeeping; a failure must not stop the writer
            log.exception("pruning old generation records failed")
            return
        if removed:
            log.info("pruned %d generation records older than %d days", removed, self._retention_days)
