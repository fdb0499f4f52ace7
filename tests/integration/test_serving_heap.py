"""A serving process hides what start-up built from the garbage collector, and collects young objects
less often than Python's default."""

from __future__ import annotations

import asyncio
import gc
import weakref

from llmgw.serving import GC_YOUNG_THRESHOLD, run
from tests.fakes.upstream import FakeUpstream
from tests.harness import settings_for


class _Node:
    next: _Node | None = None


async def test_serving_freezes_start_up_objects_and_raises_the_young_collection_threshold(
    fakes: dict[str, FakeUpstream],
) -> None:
    """Full collections walk every tracked object: under load one took ~29 ms while every request in
    flight waited. Objects that live as long as the process (modules, config, the gateway) are frozen, and
    young collections wait for 10000 net allocations (700 was reached by requests in flight alone)."""
    assert gc.get_freeze_count() == 0  # nothing in this test process froze anything before
    thresholds = gc.get_threshold()
    stop = asyncio.Event()
    serving = asyncio.create_task(run(settings_for(fakes, storage_url="memory://"), "http", stop=stop))
    try:
        async with asyncio.timeout(10):
            while gc.get_freeze_count() == 0:
                await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 10_000  # the imported stack, not a handful of objects
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *thresholds[1:])
        # What requests allocate stays collectable: a reference cycle made now is still freed.
        cycle = _Node()
        cycle.next = cycle
        freed = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert freed() is None
    finally:
        stop.set()
        await serving
        gc.unfreeze()  # back to normal for the rest of the suite
        gc.set_threshold(*thresholds)
