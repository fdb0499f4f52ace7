"""Top-level fields of a JSON text are read and set without parsing the rest, or not at all."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from llmgw.infrastructure.json_text import field_span, with_fields

ANSWER: dict[str, Any] = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -2.5e-05, 3.0]}],
    "model": "text-embedding-v4",
    "usage": {"prompt_tokens": 5, "total_tokens": 5},
}
COMPACT = orjson.dumps(ANSWER)
INDENTED = json.dumps(ANSWER, indent=2).encode()


@pytest.mark.parametrize("text", [COMPACT, INDENTED], ids=["compact", "indented"])
def test_a_field_is_found_with_its_value(text: bytes) -> None:
    span = field_span(text, "usage")
    assert span is not None
    start, end, value = span
    assert value == {"prompt_tokens": 5, "total_tokens": 5}
    assert json.loads(text[start:end]) == value


@pytest.mark.parametrize("text", [COMPACT, INDENTED], ids=["compact", "indented"])
def test_fields_are_set_and_everything_else_is_left_byte_for_byte(text: bytes) -> None:
    out = with_fields(text, {"id": "gen-1", "model": "dashscope/emb"})
    assert json.loads(out) == ANSWER | {"id": "gen-1", "model": "dashscope/emb"}
    # The id goes in front, the model's value is swapped; not one other byte changes (no float re-formatted).
    assert out == b'{"id":"gen-1",' + text[1:].replace(b'"text-embedding-v4"', b'"dashscope/emb"')


def test_a_value_with_non_ascii_text_is_replaced_whole() -> None:
    text = orjson.dumps({"model": "modèle-é", "data": []})
    assert json.loads(with_fields(text, {"model": "m"})) == {"model": "m", "data": []}


@pytest.mark.parametrize(
    "text",
    [
        orjson.dumps({"data": [{"model": "inner"}], "model": "outer"}),  # the key twice
        b'{"model": ' + b'"' + b"x" * 5000 + b'"}',  # a value longer than the window
    ],
    ids=["twice", "too-long"],
)
def test_an_ambiguous_or_oversized_field_is_not_found_and_setting_it_parses(text: bytes) -> None:
    assert field_span(text, "model") is None
    assert json.loads(with_fields(text, {"model": "m"}))["model"] == "m"


def test_a_missing_key_is_added_at_the_front() -> None:
    assert with_fields(b'{"a":1}', {"id": "gen-1"}) == b'{"id":"gen-1","a":1}'
    assert with_fields(b"{}", {"id": "gen-1"}) == b'{"id":"gen-1"}'
