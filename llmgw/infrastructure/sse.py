"""Server-sent events, both sides: the decoder that reads upstream streams and the framing of ours."""

from __future__ import annotations

import re
from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSELineTooLong(ValueError):
    """A line, or an event's data, grew past the decoder's limit."""


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` payload of every event completed so far.

    Comment lines (`: OPENROUTER PROCESSING`), `event:`/`id:`/`retry:` fields and CR, LF or CRLF line
    endings are handled as the SSE specification says; several `data:` lines in one event are joined with
    a newline. Each byte is scanned once, so one huge event costs what the same bytes cost unstreamed;
    a line or an event's data longer than `max_line` raises `SSELineTooLong` instead of growing without end.
    """

    __slots__ = ("_after_cr", "_data", "_data_size", "_max_line", "_partial", "_partial_size")

    def __init__(self, max_line: int) -> None:
        self._max_line = max_line
        self._partial: list[bytes] = []  # the pieces of a line not ended yet
        self._partial_size = 0
        self._data: list[bytes] = []  # the data lines of the event being read
        self._data_size = 0
        self._after_cr = False  # the last piece ended with CR: an LF first in the next one ends nothing

    def feed(self, chunk: bytes) -> list[bytes]:
        if not (self._partial or self._data or self._after_cr) and chunk.endswith(b"\n\n"):
            whole = self._whole_events(chunk)
            if whole is not None:
                return whole
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if b"\r" in chunk:
            lines = _LINE_END.split(chunk)
            self._after_cr = chunk.endswith(b"\r")
        else:
            lines = chunk.split(b"\n")
            self._after_cr = False
        tail = lines.pop()  # after the last line end: the start of a line still arriving
        events: list[bytes] = []
        if lines:
            if self._partial:
                self._partial.append(lines[0])
                lines[0] = b"".join(self._partial)
                self._partial, self._partial_size = [], 0
            for line in lines:
                self._line(line, events)
        if tail:
            self._partial.append(tail)
            self._partial_size += len(tail)
            if self._partial_size > self._max_line:
                raise SSELineTooLong(f"a line of the stream is longer than {self._max_line} bytes")
        return events

    def _whole_events(self, chunk: bytes) -> list[bytes] | None:
        """What OpenAI-compatible servers send, whole events of one `data: ` line (or one comment line)
        each, read without going line by line; None for anything else."""
        if b"\r" in chunk:
            return None
        events = []
        for part in chunk[:-2].split(b"\n\n"):
            if not part or b"\n" in part or len(part) > self._max_line:
                return None
            if part.startswith(b"data: "):
                events.append(part[6:])
            elif not part.startswith(b":"):
                return None
        return events

    def close(self) -> list[bytes]:
        """End of stream: an event left without its blank line still counts."""
        events = self.feed(b"\n\n") if self._partial or self._data else []
        self._partial, self._data = [], []
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                self._data, self._data_size = [], 0
        elif line.startswith(b"data:"):
            value = line[6:] if line.startswith(b"data: ") else line[5:]
            self._data_size += len(value) + 1
            if self._data_size > self._max_line:
                raise SSELineTooLong(f"an event of the stream is longer than {self._max_line} bytes")
            self._data.append(value)


def encode_event(payload: Any) -> bytes:
    """One `data:` event; orjson output never contains a raw newline, so one line is enough."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"
