"""Lossless reading of OpenAI JSON objects into proto fields, and the merge that undoes it.

What a proto field cannot hold exactly stays in `Reader.rest` and travels in the nearest `extra` Struct.
The way back reads upb messages (`wire.upb`): unset `optional` and message fields are told by `HasField`.
Struct fields are bytes in those messages (see `wire`): `struct_bytes` writes them and `plain` reads them,
keys in order.
"""

from __future__ import annotations

import struct as _binary
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar

from google.protobuf.message import Message

from llmgw.domain.errors import InvalidRequest

Kind = Literal["str", "bool", "int32", "int64", "double"]
T = TypeVar("T")

_INT_LIMITS = {"int32": 2**31, "int64": 2**63}
_EXACT_DOUBLE_INT = 2**53
_DOUBLE = _binary.Struct("<d")


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

    Each method consumes the keys it can represent exactly and returns their proto value; anything else
    (explicit nulls, wrong types, empty lists, unknown keys of nested objects) stays in `rest`. Nested
    objects without an `extra` of their own leave their remainder under the same key (a list of
    remainders, position by position, for lists), so `merged` can put it back.
    """

    __slots__ = ("rest",)

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.rest: dict[str, Any] = dict(obj)

    def scalar(self, key: str, kind: Kind, *, skip_zero: bool = False) -> Any:
        """A singular scalar, or None when absent or not exactly representable.

        `skip_zero` is for non-optional proto fields that are written back only when non-zero: a zero
        value must then stay in `rest` to survive.
        """
        value: Any = self.rest.get(key)
        if key not in self.rest or not fits(value, kind) or (skip_zero and not value):
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
        value = self.rest.get(key)
        if not isinstance(value, list) or not value or not all(fits(v, kind) for v in value):
            return []
        del self.rest[key]
        return [float(v) for v in value] if kind == "double" else list(value)

    def mapping(self, key: str, kind: Kind) -> dict[str, Any]:
        """A non-empty object whose values are all scalars of `kind` (a proto map)."""
        value = self.rest.get(key)
        if not isinstance(value, dict) or not value or not all(fits(v, kind) for v in value.values()):
            return {}
        del self.rest[key]
        return {k: float(v) if kind == "double" else v for k, v in value.items()}

    def struct(self, key: str) -> bytes | None:
        """Any JSON object, for a Struct field (as `struct_bytes`)."""
        value = self.rest.get(key)
        if not isinstance(value, dict):
            return None
        del self.rest[key]
        return struct_bytes(value)

    def message(self, key: str, build: Callable[[Reader], T]) -> T | None:
        """A nested object, built by `build` from its own reader."""
        value = self.rest.get(key)
        if not isinstance(value, dict):
            return None
        child = Reader(value)
        result = build(child)
        self._settle(key, child.rest)
        return result

    def messages(self, key: str, build: Callable[[Reader], T], *, required: bool = False) -> list[T]:
        """A list of objects. An empty list is consumed only for `required` fields, always written back."""
        value = self.rest.get(key)
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


def plain(struct: bytes) -> dict[str, Any]:
    """A Struct's bytes (as `wire`'s twin messages hold them) as JSON, keys in the order they were sent.
    Whole-number doubles turn back into ints where a double holds the int exactly (`thinking_budget: 1000`,
    not 1000.0); larger ones stay doubles, which JSON encoders can write. A Value without a kind reads as
    null.

    Bytes that are no Struct, or nest objects and lists more than `MAX_STRUCT_DEPTH` deep, raise
    `InvalidRequest`: upb left them unchecked. Nested fields are read as views, not copies, so a deep
    Struct costs no more memory than its bytes.
    """
    try:
        return _read_struct(memoryview(struct), 0)
    # Whatever the bytes hold: a truncated or overlong varint, a field running past its end, a wrong wire
    # type (an int where bytes belong), a double of the wrong size, bad UTF-8, nesting beyond recursion.
    except (ValueError, IndexError, TypeError, AttributeError, _binary.error, RecursionError) as exc:
        raise InvalidRequest("A google.protobuf.Struct field is not valid protobuf.") from exc


def _number(number: float) -> float | int:
    return int(number) if number.is_integer() and abs(number) <= _EXACT_DOUBLE_INT else number


# The protobuf wire format of google.protobuf.Struct, Value and ListValue, written and read in key order.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_NULL, _TRUE, _FALSE, _NUMBER = b"\x08\x00", b"\x20\x01", b"\x20\x00", b"\x11"


def struct_bytes(obj: Mapping[str, Any]) -> bytes:
    """A JSON object as the bytes of a google.protobuf.Struct, its keys in order (see `wire`)."""
    parts = []
    for key, item in obj.items():
        name = key.encode()
        value = _write_value(item)
        # FieldsEntry { string key = 1; Value value = 2 }, as field 1 of the Struct
        entry = b"\x0a" + _size(len(name)) + name + b"\x12" + _size(len(value)) + value
        parts.append(b"\x0a" + _size(len(entry)) + entry)
    return b"".join(parts)


def _write_value(value: Any) -> bytes:
    if value is None or value is True or value is False:
        return _NULL if value is None else _TRUE if value else _FALSE
    if isinstance(value, str):
        text = value.encode()
        return b"\x1a" + _size(len(text)) + text
    if isinstance(value, int | float):
        return _NUMBER + _DOUBLE.pack(value)
    if isinstance(value, Mapping):
        fields = struct_bytes(value)
        return b"\x2a" + _size(len(fields)) + fields
    if isinstance(value, list | tuple):
        items = b"".join([b"\x0a" + _size(len(item)) + item for item in map(_write_value, value)])
        return b"\x32" + _size(len(items)) + items
    raise TypeError(f"a Struct cannot hold {type(value).__name__} values")


_SMALL_SIZES = [bytes((size,)) for size in range(0x80)]


def _size(size: int) -> bytes:
    """A length as a varint."""
    if size < 0x80:
        return _SMALL_SIZES[size]
    out = bytearray()
    while size >= 0x80:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out)


#: JSON objects and lists nested deeper than this in a Struct are refused (upb refused ~33 levels; JSON
#: encoders stop at a few hundred, which would fail the request later as an internal error)
MAX_STRUCT_DEPTH = 100


def _read_struct(data: memoryview, depth: int) -> dict[str, Any]:
    """Struct { map<string, Value> fields = 1 }: each entry { string key = 1; Value value = 2 }."""
    out: dict[str, Any] = {}
    for number, entry in _read_fields(data):
        if number == 1:
            key, value = "", None
            for part, item in _read_fields(entry):
                if part == 1:
                    key = str(item, "utf-8")
                elif part == 2:
                    value = _read_value(item, depth)
            out[key] = value  # a repeated key: the last one wins, as protobuf maps do
    return out


def _read_value(data: memoryview, depth: int) -> Any:
    """Value { oneof kind { NullValue null_value = 1; double number_value = 2; string string_value = 3;
    bool bool_value = 4; Struct struct_value = 5; ListValue list_value = 6 } }: the last one set wins."""
    value: Any = None
    for number, item in _read_fields(data):
        if number == 1:
            value = None
        elif number == 2:
            value = _number(_DOUBLE.unpack(item)[0])
        elif number == 3:
            value = str(item, "utf-8")
        elif number == 4:
            value = bool(item)
        elif number == 5:
            value = _read_struct(item, _deeper(depth))
        elif number == 6:  # ListValue { repeated Value values = 1 }
            value = [
                _read_value(element, _deeper(depth)) for index, element in _read_fields(item) if index == 1
            ]
    return value


def _deeper(depth: int) -> int:
    """One level down into an object or a list, refused past `MAX_STRUCT_DEPTH`."""
    if depth >= MAX_STRUCT_DEPTH:
        raise InvalidRequest(
            f"A google.protobuf.Struct field nests more than {MAX_STRUCT_DEPTH} levels deep."
        )
    return depth + 1


def _read_fields(data: memoryview) -> Iterator[tuple[int, Any]]:
    """(field number, value) in wire order: ints for varints, views of `data` for everything else."""
    position, end = 0, len(data)
    while position < end:
        tag, position = _read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0 is not a field")
        if wire_type == _VARINT:
            value, position = _read_varint(data, position)
            yield number, value
            continue
        if wire_type == _LENGTH:
            size, position = _read_varint(data, position)
        elif wire_type == _FIXED64:
            size = 8
        elif wire_type == _FIXED32:
            size = 4
        else:
            raise ValueError(f"wire type {wire_type} has no place in a Struct")
        if position + size > end:
            raise ValueError("a field runs past the end of its message")
        yield number, data[position : position + size]
        position += size


def _read_varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]  # IndexError past the end: a truncated varint
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def merged(typed: dict[str, Any], msg: Message) -> dict[str, Any]:
    """`typed` with `msg.extra` deep-merged over it: objects key by key, equal-length lists item by item."""
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
