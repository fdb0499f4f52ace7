"""An in-memory upstream `Transport` (no sockets): scripted answers, and a record of what was posted.

An `Answer`'s body is a list of steps: bytes are handed out by one `read` each, a float is a pause of that
many seconds before the next step, and a `TransportError` is raised by the `read` that reaches it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmgw.infrastructure.providers.transport import ReadsToTheEnd, TransportError

Step = bytes | float | TransportError


@dataclass(frozen=True)
class Answer:
    """How one POST is answered: after `delay`, `error` is raised, or the status and headers are returned
    and the body follows step by step."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    body: Sequence[Step] = ()
    delay: float = 0.0
    error: TransportError | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
        return cls(status, {"content-type": "application/json", **(headers or {})}, [orjson.dumps(payload)])

    @classmethod
    def events(cls, *steps: Any, done: bool = True) -> Answer:
        """An event stream: each JSON-able step becomes one `data:` event, bytes and floats pass as they
        are; `data: [DONE]` ends it unless `done` is false."""
        body: list[Step] = [
            step
            if isinstance(step, bytes | float | TransportError)
            else b"data: " + orjson.dumps(step) + b"\n\n"
            for step in steps
        ]
        if done:
            body.append(b"data: [DONE]\n\n")
        return cls(200, {"content-type": "text/event-stream"}, body)


@dataclass(frozen=True)
class Posted:
    path: str
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class MemoryResponse(ReadsToTheEnd):
    """An `UpstreamResponse` that plays an `Answer`'s body and remembers how the caller ended it."""

    def __init__(self, answer: Answer) -> None:
        self.status = answer.status
        self.headers = {name.lower(): value for name, value in answer.headers.items()}
        self._steps: deque[Step] = deque(answer.body)
        #: "released" (read whole, connection reusable) or "closed" (anything else); None while open
        self.ended: str | None = None

    @property
    def complete(self) -> bool:
        return not self._steps

    async def read(self, deadline: float | None = None) -> bytes:
        if self.ended is not None:
            raise TransportError("the answer was already ended")
        async with asyncio.timeout_at(deadline):
            while self._steps:
                step = self._steps.popleft()
                if isinstance(step, TransportError):
                    raise step
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif step:
                    return step
        return b""

    def release(self) -> None:
        if self.ended is None:
            self.ended = "released" if self.complete else "closed"

    def close(self) -> None:
        if self.ended is None:
            self.ended = "closed"


class MemoryTransport:
    """Answers each POST with the next scripted `Answer`; records what was posted and each response."""

    def __init__(self, *answers: Answer) -> None:
        self._answers: deque[Answer] = deque(answers)
        self.posted: list[Posted] = []
        self.responses: list[MemoryResponse] = []
        self.closed = False

    def script(self, *answers: Answer) -> None:
        self._answers.extend(answers)

    async def post(self, path: str, body: bytes) -> MemoryResponse:
        if self.closed:
            raise TransportError("the transport is closed")
        self.posted.append(Posted(path, body))
        if not self._answers:
            raise AssertionError(f"no scripted answer left for POST {path}")
        answer = self._answers.popleft()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.error is not None:
            raise answer.error
        response = MemoryResponse(answer)
        self.responses.append(response)
        return response

    async def close(self) -> None:
        self.closed = True
