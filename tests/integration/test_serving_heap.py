"""A serving process hides what start-up built from the garbage collector's full collections."""

from __future__ import annotations

import asyncio
import gc
import weakref

from llmgw.serving import run
from tests.fakes.upstream import FakeUpstream
from tests.harness import settings_for


class _Node:
    next: _Node | None = None


async def test_start_up_objects_are_frozen_before_the_fronts_serve(fakes: dict[str, FakeUpstream]) -> None:
    """Full collections walk every tracked object: under load one took ~29 ms while every request in
    flight waited. Objects that live as long as the process (modules, config, the gateway) are frozen."""
    assert gc.get_freeze_count() == 0  # nothing in this test process froze anything before
    stop = asyncio.Event()
    serving = asyncio.create_task(run(settings_for(fakes, storage_url="memory://"), "http", stop=stop))
    try:
        async with asyncio.timeout(10):
            while gc.get_freeze_count() == 0:
                await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 10_000  # the imported stack, not a handful of objects
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
