"""Server-sent events: an incremental decoder for upstream streams and the encoder for ours."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` payload of every event completed so far.

    Comment lines (`: OPENROUTER PROCESSING`), `event:`/`id:`/`retry:` fields and CR/LF line endings are
    handled as the SSE specification says; several `data:` lines in one event are joined with a newline.
    """

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._data or b"\r" in buffer:
            return self._feed_lines(buffer)
        # Fast path, what OpenAI-compatible servers send: LF-only events split by blank lines.
        parts = buffer.split(b"\n\n")
        self._buffer = parts.pop()
        events: list[bytes] = []
        for part in parts:
            if part.startswith(b"data: ") and b"\n" not in part:
                events.append(part[6:])
            elif part:
                event = _event_of(part.split(b"\n"))
                if event is not None:
                    events.append(event)
        return events

    def _feed_lines(self, buffer: bytes) -> list[bytes]:
        """The general case, line by line: CR line endings, or an event begun in an earlier feed."""
        events: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(_field_value(line))
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[bytes]:
        """End of stream: an event left without its blank line still counts."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        self._buffer = b""
        return events


def _field_value(line: bytes) -> bytes:
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value


def _event_of(lines: list[bytes]) -> bytes | None:
    """The data of one complete event given as its lines; None for comment-only events."""
    data = [_field_value(line) for line in lines if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def encode_event(payload: Any) -> bytes:
    """One `data:` event; orjson output never contains a raw newline, so one line is enough."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"
