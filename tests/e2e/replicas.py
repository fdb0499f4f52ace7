"""`llmgw serve` processes started together for multi-replica tests, each with its output read all along
(request logs must not fill the pipe) and shown when a test fails."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.test_serve_process import Process, llmgw_serve


@dataclass
class Replica:
    """One `llmgw serve` (one replica, of one or more workers)."""

    process: Process
    name: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.process.rest_url

    @property
    def readyz_url(self) -> str:
        return f"http://127.0.0.1:{self.process.health}/readyz"

    def tail(self, lines: int = 30) -> str:
        return "".join(self.output[-lines:])


@asynccontextmanager
async def serving(tmp_path: Path, env: Mapping[str, str], name: str = "") -> AsyncIterator[Replica]:
    async with llmgw_serve(tmp_path, env) as process:
        replica = Replica(process, name)
        drain = asyncio.create_task(_drain(process, replica.output))
        try:
            yield replica
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


@asynccontextmanager
async def replicas(
    tmp_path: Path, envs: Mapping[str, Mapping[str, str]]
) -> AsyncIterator[dict[str, Replica]]:
    """One `llmgw serve` per entry of `envs` (in `tmp_path / name`), all started at once; all stopped on
    the way out, whichever failed to start."""
    async with AsyncExitStack() as stack:
        try:
            async with asyncio.TaskGroup() as group:
                starting = {
                    name: group.create_task(stack.enter_async_context(serving(tmp_path / name, env, name)))
                    for name, env in envs.items()
                }
        except BaseExceptionGroup as failed:  # the first start-up failure, as pytest.fail reported it
            raise failed.exceptions[0] from None
        yield {name: task.result() for name, task in starting.items()}


async def _drain(process: Process, output: list[str]) -> None:
    stdout = process.proc.stdout
    assert stdout is not None
    while line := await stdout.readline():
        output.append(line.decode(errors="replace"))
