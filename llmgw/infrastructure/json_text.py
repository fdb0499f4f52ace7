"""Top-level fields of a JSON object's text, read and set without parsing the rest of it.

For answers whose bulk the gateway passes on untouched (embeddings: thousands of floats), reading a few
top-level fields with substring searches costs a fraction of parsing and re-encoding the whole text. The
fields looked for here must occur once in the text and hold small values; anything else is not found
(None), and the caller falls back to parsing. Compact and indented JSON are both read (OpenAI indents
its answers; many compatible servers do not).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

# A field's value is read from at most this many bytes after its key.
_VALUE_WINDOW = 4096
_DECODER = json.JSONDecoder()


_WHITESPACE = frozenset(b" \t\r\n")


def field_span(text: bytes, key: str) -> tuple[int, int, Any] | None:
    """Where the value of `"key":` starts and ends in `text`, and the value; None unless the key occurs
    exactly once and its value is read within the window."""
    needle = b'"' + key.encode() + b'":'
    at = text.find(needle)
    if at < 0 or text.find(needle, at + 1) >= 0:
        return None
    start = at + len(needle)
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    window = text[start : start + _VALUE_WINDOW]
    # The window may cut a character in two at its end, never inside the value it is read for.
    decoded = window.decode("utf-8", errors="ignore")
    try:
        value, length = _DECODER.raw_decode(decoded)
    except ValueError:
        return None
    raw_value = decoded[:length].encode("utf-8")
    if not window.startswith(raw_value):
        return None
    return start, start + len(raw_value), value


def with_fields(text: bytes, fields: Mapping[str, Any]) -> bytes:
    """`text` (a JSON object) with `fields` set: values replaced where the key occurs once, keys added at
    the front where it does not occur at all; parsed and re-encoded only when neither holds."""
    for key, value in fields.items():
        encoded = orjson.dumps(value)
        span = field_span(text, key)
        if span is not None:
            start, end, _ = span
            text = text[:start] + encoded + text[end:]
        elif b'"' + key.encode() + b'":' not in text and text.startswith(b"{") and len(text) > 2:
            text = b'{"' + key.encode() + b'":' + encoded + (b"," if text[1:2] != b"}" else b"") + text[1:]
        else:
            return orjson.dumps(orjson.loads(text) | dict(fields))
    return text
