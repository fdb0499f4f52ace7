"""Duration values in config: "20s", "1500ms", "2m", "1h", "1m30s", or a plain number of seconds."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object) -> float:
    """Seconds for a duration value; raises ValueError saying what was expected."""
    # bool is an int subclass, but `timeout = true` is a mistake, not one second.
    if isinstance(value, bool):
        raise ValueError(_expected(value))
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(_expected(value))
    text = value.strip().lower()
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(_expected(value))
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _PART.findall(text))


def _expected(value: object) -> str:
    return f'must be a duration like "20s", "1500ms", "2m", "1m30s" or a number of seconds, got {value!r}'
