"""How a REST stream is written: chunks that arrived together in one write, and the last ones together
with [DONE] and the end of the body, after the stream has finished (and recorded itself)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import orjson

from llmgw.application.gateway import ChatStream
from llmgw.domain.chat import ChunkBatch
from llmgw.domain.errors import UpstreamTimeout
from llmgw.infrastructure.providers.sse import DONE_EVENT
from llmgw.infrastructure.rest import chat
from llmgw.infrastructure.rest.sse import EventStream


class Writes:
    """Stands in for the response: notes every write, in order with the stream's own events."""

    def __init__(self, log: list[tuple[str, bytes]]) -> None:
        self.log = log

    async def write(self, data: bytes) -> None:
        self.log.append(("write", data))

    async def write_eof(self, data: bytes = b"") -> None:
        self.log.append(("eof", data))


def events(*contents: str) -> bytes:
    return b"".join(b"data: " + orjson.dumps({"c": c}) + b"\n\n" for c in contents)


async def run(batches: list[ChunkBatch], error: Exception | None = None) -> list[tuple[str, bytes]]:
    log: list[tuple[str, bytes]] = []

    async def stream() -> AsyncGenerator[ChunkBatch, None]:
        try:
            for batch in batches:
                yield batch
            if error is not None:
                raise error
        finally:
            log.append(("stream finished", b""))

    chat_stream = ChatStream("gen-1", stream())
    first = await anext(chat_stream, None)
    await chat._send(cast(EventStream, Writes(log)), first, chat_stream)
    return log


async def test_a_stream_that_arrived_whole_is_written_once_after_it_finished() -> None:
    log = await run([ChunkBatch([{"c": "a"}, {"c": "b"}], final=True)])
    assert log == [("stream finished", b""), ("eof", events("a", "b") + DONE_EVENT)]


async def test_earlier_batches_are_written_as_they_come_and_the_last_with_done() -> None:
    log = await run(
        [ChunkBatch([{"c": "a"}]), ChunkBatch([{"c": "b"}]), ChunkBatch([{"c": "c"}], final=True)]
    )
    assert log == [
        ("write", events("a")),
        ("write", events("b")),
        ("stream finished", b""),
        ("eof", events("c") + DONE_EVENT),
    ]


async def test_an_error_after_some_chunks_ends_the_stream_with_an_error_event_and_done() -> None:
    log = await run([ChunkBatch([{"c": "a"}])], UpstreamTimeout("p: the stream went silent."))
    assert log[0] == ("write", events("a"))
    assert log[1] == ("stream finished", b"")
    kind, last = log[2]
    assert kind == "eof"
    assert last.endswith(DONE_EVENT)
    error = orjson.loads(last.split(b"\n\n")[0].removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_timeout"


async def test_a_stream_that_ends_without_done_still_gets_done() -> None:
    log = await run([ChunkBatch([{"c": "a"}])])
    assert log == [("write", events("a")), ("stream finished", b""), ("eof", DONE_EVENT)]
