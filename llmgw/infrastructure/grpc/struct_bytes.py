"""google.protobuf.Struct as bytes, written and read with its keys in order.

upb (see `upb_codec`) keeps a Struct's keys in a hash map, which iterates in hash order, while JSON Schemas, tool
parameters and `extra` must reach the upstream in the order the client wrote them. So Struct fields travel
as raw bytes in `upb_codec`'s twin messages, and this module writes (`struct_bytes`) and reads (`plain`) them.
"""

from __future__ import annotations

import struct as _binary
from collections.abc import Iterator, Mapping
from typing import Any

from llmgw.domain.errors import InvalidRequest

__all__ = ["MAX_STRUCT_DEPTH", "plain", "struct_bytes"]

#: JSON objects and lists nested deeper than this in a Struct are refused (upb refused ~33 levels; JSON
#: encoders stop at a few hundred, which would fail the request later as an internal error)
MAX_STRUCT_DEPTH = 100

_EXACT_DOUBLE_INT = 2**53
_DOUBLE = _binary.Struct("<d")
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_NULL, _TRUE, _FALSE, _NUMBER = b"\x08\x00", b"\x20\x01", b"\x20\x00", b"\x11"
_SMALL_SIZES = [bytes((size,)) for size in range(0x80)]


def struct_bytes(obj: Mapping[str, Any]) -> bytes:
    """A JSON object as the bytes of a google.protobuf.Struct, its keys in order."""
    parts = []
    for key, item in obj.items():
        name = key.encode()
        value = _write_value(item)
        # FieldsEntry { string key = 1; Value value = 2 }, as field 1 of the Struct
        entry = b"\x0a" + _size(len(name)) + name + b"\x12" + _size(len(value)) + value
        parts.append(b"\x0a" + _size(len(entry)) + entry)
    return b"".join(parts)


def plain(struct: bytes) -> dict[str, Any]:
    """A Struct's bytes as JSON, keys in the order they were sent.

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


def _write_value(value: Any) -> bytes:
    """Value { oneof kind { NullValue null_value = 1; double number_value = 2; string string_value = 3;
    bool bool_value = 4; Struct struct_value = 5; ListValue list_value = 6 } }."""
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
    """A Value (see `_write_value`): the last kind set wins."""
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


def _number(number: float) -> float | int:
    return int(number) if number.is_integer() and abs(number) <= _EXACT_DOUBLE_INT else number


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
