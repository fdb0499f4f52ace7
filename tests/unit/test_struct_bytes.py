"""The ordered google.protobuf.Struct codec: protobuf's own wire format, with the keys in JSON order."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from llmgw.domain.errors import InvalidRequest
from llmgw.infrastructure.grpc.struct_bytes import MAX_STRUCT_DEPTH, plain, struct_bytes

Json = dict[str, Any]

# Keys out of alphabetical order, more than a hash map keeps in order by chance.
ORDERED: Json = {
    "zeta": 1,
    "alpha": {"y": True, "b": None, "x": "s", "m": [{"q": 1, "c": 2.5}, [], {}]},
    "mid": [None, False, "ü ☀", -3],
    "a": 0.5,
    "empty": {},
    "reasoning": {"type": "string"},
    "answer": {"type": "string"},
}


def keys_in_order(value: Any) -> Any:
    """`value` with every object turned into its list of (key, value) pairs: equality then sees order."""
    if isinstance(value, dict):
        return [(key, keys_in_order(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [keys_in_order(item) for item in value]
    return value


def test_a_json_object_reads_back_with_its_keys_in_the_order_written() -> None:
    assert keys_in_order(plain(struct_bytes(ORDERED))) == keys_in_order(ORDERED)


def test_the_bytes_are_a_struct_any_protobuf_reader_understands() -> None:
    parsed = struct_pb2.Struct.FromString(struct_bytes(ORDERED))

    assert json_format.MessageToDict(parsed) == ORDERED  # numbers as doubles, which compare equal


def test_bytes_protobuf_wrote_read_back_as_the_same_json() -> None:
    written = struct_pb2.Struct()
    written.update({"budget": 1000, "ratio": 0.25, "flags": [True, None], "who": {"name": "ana"}})

    assert plain(written.SerializeToString()) == {
        "budget": 1000,
        "ratio": 0.25,
        "flags": [True, None],
        "who": {"name": "ana"},
    }


def test_whole_numbers_come_back_as_ints_only_while_a_double_holds_them_exactly() -> None:
    out = plain(struct_bytes({"small": 1000, "edge": 2**53, "over": 2.0**60, "half": 1.5}))

    assert out == {"small": 1000, "edge": 2**53, "over": 2.0**60, "half": 1.5}
    assert [type(out[key]) for key in out] == [int, int, float, float]


def test_a_value_a_struct_cannot_hold_is_refused_when_written() -> None:
    with pytest.raises(TypeError, match="a Struct cannot hold bytes values"):
        struct_bytes({"blob": b"\x00"})


@pytest.mark.parametrize("container", [dict, list], ids=["objects", "lists"])
def test_a_struct_nested_deeper_than_the_limit_is_an_invalid_request(container: type) -> None:
    deep: Any = "leaf"
    for _ in range(MAX_STRUCT_DEPTH + 1):
        deep = {"k": deep} if container is dict else [deep]
    just_deep_enough: Any = "leaf"
    for _ in range(MAX_STRUCT_DEPTH):
        just_deep_enough = {"k": just_deep_enough} if container is dict else [just_deep_enough]

    assert plain(struct_bytes({"v": just_deep_enough})) == {"v": just_deep_enough}
    with pytest.raises(InvalidRequest, match=f"nests more than {MAX_STRUCT_DEPTH} levels deep"):
        plain(struct_bytes({"v": deep}))


def test_reading_a_deep_struct_costs_no_more_memory_than_its_bytes() -> None:
    """Nested fields are views: a copy per level made a 4 MB string 450 levels deep cost ~3.5 GB."""
    deep: Any = "x" * 1_000_000
    for _ in range(90):
        deep = [deep]
    data = struct_bytes({"v": deep})

    tracemalloc.start()
    try:
        read = plain(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert read == {"v": deep}
    assert peak < 4_000_000  # the 1 MB string it returns, and little else; copies would be ~90 MB


@pytest.mark.parametrize(
    "struct",
    [
        b"\x0a\x05\x0a",  # a map entry that claims 5 bytes and has 1
        b"\x0a\x80",  # a truncated varint
        b"\x0a\x02\x08\x05",  # the key as a varint
        b"\x0a\x03\x0a\x01\xff",  # the key not UTF-8
        b"\x0a\x0a\x0a\x01k\x12\x05\x15\x00\x00\x00\x00",  # a number of 4 bytes
        b"\x0a\x03\x0b\x00\x00",  # wire type 3 (groups)
        b"\x00\x00",  # field number 0
        b"\x0a\x0c" + b"\x80" * 11 + b"\x01",  # a varint longer than 10 bytes
    ],
    ids=[
        "overrun",
        "truncated-varint",
        "int-key",
        "bad-utf8",
        "fixed32-number",
        "group",
        "field-zero",
        "long",
    ],
)
def test_bytes_that_are_no_struct_are_an_invalid_request(struct: bytes) -> None:
    with pytest.raises(InvalidRequest, match=r"google\.protobuf\.Struct field is not valid"):
        plain(struct)
