"""google.protobuf.Struct ↔ JSON objects, with the gateway's rules: keys in order, numbers as doubles,
and whole doubles read back as ints (up to 2**53), as the server's `struct_bytes` writes and reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgw_client._messages import pb

__all__ = ["copy_json", "merged", "plain", "plain_or_empty", "to_struct"]

_EXACT_DOUBLE_INT = 2**53
_NULL = pb.NullValue.NULL_VALUE


def to_struct(obj: Mapping[str, Any]) -> pb.Struct:
    """A JSON object as a Struct, its keys in order (betterproto2 writes a map in its dict's order)."""
    return pb.Struct(fields={key: _value(item) for key, item in obj.items()})


def _value(value: Any) -> pb.Value:
    if value is None:
        return pb.Value(null_value=_NULL)
    if value is True or value is False:
        return pb.Value(bool_value=value)
    if isinstance(value, str):
        return pb.Value(string_value=value)
    if isinstance(value, int | float):
        return pb.Value(number_value=float(value))
    if isinstance(value, Mapping):
        return pb.Value(struct_value=to_struct(value))
    if isinstance(value, list | tuple):
        return pb.Value(list_value=pb.ListValue(values=[_value(item) for item in value]))
    raise TypeError(f"a JSON value cannot be a {type(value).__name__}")


def plain(struct: pb.Struct) -> dict[str, Any]:
    """A Struct as a JSON object, keys in the order they were sent."""
    return {key: _plain_value(item) for key, item in struct.fields.items()}


def plain_or_empty(struct: pb.Struct | None) -> dict[str, Any]:
    """`plain` for an `extra` field: a fresh empty dict when unset."""
    return {} if struct is None else plain(struct)


def _plain_value(value: pb.Value) -> Any:
    """The kind that is set; a Value without one reads as null, as on the server."""
    if (number := value.number_value) is not None:
        whole = number.is_integer() and abs(number) <= _EXACT_DOUBLE_INT
        return int(number) if whole else number
    if value.string_value is not None:
        return value.string_value
    if value.bool_value is not None:
        return value.bool_value
    if value.struct_value is not None:
        return plain(value.struct_value)
    items = value.list_value
    return None if items is None else [_plain_value(item) for item in items.values]


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` deep-merged over it, as the server's `json_fields.merged`: objects key by key,
    equal-length lists item by item, else `over` wins. The result shares nothing with `over`."""
    result: dict[str, Any] = _merge(base, over)
    return result


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else copy_json(value)
        return out
    if isinstance(base, list) and isinstance(over, list) and len(base) == len(over):
        return [_merge(b, o) for b, o in zip(base, over, strict=True)]
    return copy_json(over)


def copy_json(value: Any) -> Any:
    """A JSON value's own copy (objects and lists copied, at every depth)."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value
