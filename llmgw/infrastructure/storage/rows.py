"""Generation records as SQL rows: the column order and the two conversions, shared by the SQL stores."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import orjson

from llmgw.domain.generation import Attempt, GenerationKind, GenerationRecord, GenerationStatus

TABLE = "generations"
VERSION_TABLE = "llmgw_schema_version"

# One column per record field, in field order, so a new field is a new column without touching this module.
COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(GenerationRecord))

# Quoted because `user` is a reserved word in Postgres.
COLUMN_LIST = ", ".join(f'"{name}"' for name in COLUMNS)


def _attempts_from_json(text: str) -> tuple[Attempt, ...]:
    return tuple(Attempt(*item) for item in orjson.loads(text))


def _names_from_json(text: str) -> tuple[str, ...]:
    return tuple(orjson.loads(text))


# What the drivers hand back is not always the field's type: enums are stored as their values, SQLite has
# no boolean, attempts are a JSON array of arrays (each an `Attempt`'s fields in order), and the limit
# scopes a JSON array of their names.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "kind": GenerationKind,
    "status": GenerationStatus,
    "streamed": bool,
    "attempts": _attempts_from_json,
    "limits": _names_from_json,
}


#: The columns `GenerationStore.spend` filters on, in the order of its keywords.
SPEND_FILTERS = ("key_id", "team_id", "model")

_VALUES = operator.attrgetter(*COLUMNS)
# The enum fields, stored as their values.
_ENUM_POSITIONS = (COLUMNS.index("kind"), COLUMNS.index("status"))
_ATTEMPTS = COLUMNS.index("attempts")
_LIMITS = COLUMNS.index("limits")
_ATTEMPT_VALUES = operator.attrgetter(*(field.name for field in fields(Attempt)))


def to_row(record: GenerationRecord) -> tuple[Any, ...]:
    """The record's values in `COLUMNS` order, enums as their string values, attempts and limit scopes as
    JSON text."""
    row = list(_VALUES(record))
    for position in _ENUM_POSITIONS:
        row[position] = row[position].value
    row[_ATTEMPTS] = orjson.dumps([_ATTEMPT_VALUES(attempt) for attempt in record.attempts]).decode()
    row[_LIMITS] = orjson.dumps(record.limits).decode() if record.limits else "[]"
    return tuple(row)


def from_row(row: Sequence[Any]) -> GenerationRecord:
    """The record stored as `row`, whose values are in `COLUMNS` order."""
    values = {
        name: _DECODERS[name](value) if name in _DECODERS else value
        for name, value in zip(COLUMNS, row, strict=True)
    }
    return GenerationRecord(**values)


def spend_filters(key_id: str, team_id: str, model: str) -> list[tuple[str, str]]:
    """The (column, value) pairs a `spend` query filters on: the non-empty ones."""
    return [
        (column, value)
        for column, value in zip(SPEND_FILTERS, (key_id, team_id, model), strict=True)
        if value
    ]
