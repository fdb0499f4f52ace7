"""Lossless reading of OpenAI JSON objects into proto fields, and the merge that undoes it.

What a proto field cannot hold exactly stays in `Reader.rest` and travels in the nearest `extra` Struct;
a null in a field the proto defines is that field unset, and its name travels in the message's
`null_fields` (messages with an `extra` have one), so the way back writes the null again. The way back
reads upb messages (`upb_codec.upb`): unset `optional` and message fields are told by `HasField`. Struct
fields are bytes in those messages, written and read by `struct_bytes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from google.protobuf.message import Message

from llmgw.infrastructure.grpc.struct_bytes import plain, struct_bytes

Kind = Literal["str", "bool", "int32", "int64", "double"]
T = TypeVar("T")

_INT_LIMITS = {"int32": 2**31, "int64": 2**63}
_EXACT_DOUBLE_INT = 2**53


def fits(value: Any, kind: Kind) -> bool:
    """Whether a proto scalar of `kind` holds `value` so that it converts back to an equal JSON value."""
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool" or isinstance(value, bool):
        return isinstance(value, bool) and kind == "bool"
    if kind == "double":
        return isinstance(value, float) or (isinstance(value, int) and abs(value) <= _EXACT_DOUBLE_INT)
    return isinstance(value, int) and -_INT_LIMITS[kind] <= value < _INT_LIMITS[kind]


class Reader:
    """One JSON object being read into a proto message.

    Each method reads one key the proto defines: it consumes the key when it can represent the value
    exactly and returns the proto value. An explicit null is consumed too and read as unset: for a field
    the proto defines, the field stays unset and its key is noted in `nulls` (the message's
    `null_fields`, read after its last key), so a null never reaches `extra`. Anything else (wrong
    types, empty lists, keys no method reads) stays in `rest`. Nested objects
    without an `extra` of their own leave their remainder under the same key (a list of remainders,
    position by position, for lists), so `merged` can put it back; their nulls are read as absent.
    """

    __slots__ = ("nulls", "rest")

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.rest: dict[str, Any] = dict(obj)
        self.nulls: list[str] | None = None

    def read(self, key: str) -> Any:
        """The value of a key the proto defines, None when absent or null (a null is consumed and noted)."""
        rest = self.rest
        value = rest.get(key)
        if value is None and key in rest:
            del rest[key]
            if self.nulls is None:
                self.nulls = [key]
            else:
                self.nulls.append(key)
        return value

    def scalar(self, key: str, kind: Kind, *, skip_zero: bool = False) -> Any:
        """A singular scalar, or None when absent, null or not exactly representable.

        `skip_zero` is for non-optional proto fields that are written back only when non-zero: a zero
        value must then stay in `rest` to survive.
        """
        value = self.read(key)
        if value is None or not fits(value, kind) or (skip_zero and not value):
            return None
        del self.rest[key]
        return float(value) if kind == "double" else value

    def optionals(self, keys: tuple[str, ...], kind: Kind) -> dict[str, Any]:
        """`scalar` for each of `keys` that is present; only the values read (proto3 `optional` fields
        left out are unset, and most keys are absent from most objects)."""
        rest = self.rest
        found = {}
        for key in keys:
            if key in rest and (value := self.scalar(key, kind)) is not None:
                found[key] = value
        return found

    def scalars(self, key: str, kind: Kind) -> list[Any]:
        """A non-empty list of scalars (an empty list stays in `rest`)."""
        value = self.read(key)
        if not isinstance(value, list) or not value or not all(fits(v, kind) for v in value):
            return []
        del self.rest[key]
        return [float(v) for v in value] if kind == "double" else list(value)

    def mapping(self, key: str, kind: Kind) -> dict[str, Any]:
        """A non-empty object whose values are all scalars of `kind` (a proto map)."""
        value = self.read(key)
        if not isinstance(value, dict) or not value or not all(fits(v, kind) for v in value.values()):
            return {}
        del self.rest[key]
        return {k: float(v) if kind == "double" else v for k, v in value.items()}

    def struct(self, key: str) -> bytes | None:
        """Any JSON object, for a Struct field (as `struct_bytes`)."""
        value = self.read(key)
        if not isinstance(value, dict):
            return None
        del self.rest[key]
        return struct_bytes(value)

    def message(self, key: str, build: Callable[[Reader], T]) -> T | None:
        """A nested object, built by `build` from its own reader."""
        value = self.read(key)
        if not isinstance(value, dict):
            return None
        child = Reader(value)
        result = build(child)
        self._settle(key, child.rest)
        return result

    def messages(self, key: str, build: Callable[[Reader], T], *, required: bool = False) -> list[T]:
        """A list of objects. An empty list is consumed only for `required` fields, always written back."""
        value = self.read(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return []
        if not value and not required:
            return []
        children = [Reader(v) for v in value]
        result = [build(child) for child in children]
        self._settle(key, [child.rest for child in children])
        return result

    def leftover(self) -> bytes | None:
        """Everything not consumed, for the `extra` Struct (as `struct_bytes`; None when nothing is left)."""
        rest, self.rest = self.rest, {}
        return struct_bytes(rest) if rest else None

    def _settle(self, key: str, remainder: dict[str, Any] | list[dict[str, Any]]) -> None:
        if any(remainder) if isinstance(remainder, list) else remainder:
            self.rest[key] = remainder
        else:
            del self.rest[key]


def present(msg: Message, names: Iterable[str]) -> dict[str, Any]:
    """The set ones of `msg`'s proto3 `optional` scalar fields `names`."""
    return {name: getattr(msg, name) for name in names if msg.HasField(name)}


def field(msg: Message, name: str) -> Any:
    """A message (or Struct) field of `msg`, None when unset."""
    return getattr(msg, name) if msg.HasField(name) else None


def merged(typed: dict[str, Any], msg: Message) -> dict[str, Any]:
    """`typed` with `msg`'s `null_fields` as nulls and `msg.extra` deep-merged over it: objects key by key,
    equal-length lists item by item."""
    for name in msg.null_fields:
        typed.setdefault(name, None)
    if not msg.HasField("extra"):
        return typed
    result: dict[str, Any] = _merge(typed, plain(msg.extra))
    return result


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(over, list) and len(base) == len(over):
        return [_merge(b, o) for b, o in zip(base, over, strict=True)]
    return over
