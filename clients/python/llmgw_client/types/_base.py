"""What every typed result shares: `to_json`, and the helpers that write `to_dict()`."""

from __future__ import annotations

import json
from typing import Any

from llmgw_client._struct import merged


class _Result:
    """What every result has besides its fields: `to_dict` (each class's own) and `to_json`."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, *, indent: int | None = 2) -> str:
        """`to_dict()` as JSON text (indented by 2 spaces by default, as the openai SDK's)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def _merged(typed: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`typed` with `extra` deep-merged over it; the result shares nothing with `extra`."""
    return merged(typed, extra) if extra else typed


def _answer(typed: dict[str, Any], null_fields: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    """`typed` with each of `null_fields` it lacks as a null, then `extra` deep-merged over it (the
    server's `json_fields.merged`)."""
    for name in null_fields:
        typed.setdefault(name, None)
    return _merged(typed, extra)


def _set(out: dict[str, Any], **values: Any) -> dict[str, Any]:
    """`out` with each of `values` that is not None."""
    for key, value in values.items():
        if value is not None:
            out[key] = value
    return out
