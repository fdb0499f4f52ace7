"""Generation records as SQL rows: the column order and the two conversions, shared by the SQL stores."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus

TABLE = "generations"
VERSION_TABLE = "llmgw_schema_version"

# One column per record field, in field order, so a new field is a new column without touching this module.
COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(GenerationRecord))

# Quoted because `user` is a reserved word in Postgres.
COLUMN_LIST = ", ".join(f'"{name}"' for name in COLUMNS)

# What the drivers hand back is not always the field's type: enums are stored as their values and
# SQLite has no boolean.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "kind": GenerationKind,
    "status": GenerationStatus,
    "streamed": bool,
}


_VALUES = operator.attrgetter(*COLUMNS)
# The enum fields, stored as their values.
_ENUM_POSITIONS = (COLUMNS.index("kind"), COLUMNS.index("status"))


def to_row(record: GenerationRecord) -> tuple[Any, ...]:
    """The record's values in `COLUMNS` order, enums as their string values."""
    row = list(_VALUES(record))
    for position in _ENUM_POSITIONS:
        row[position] = row[position].value
    return tuple(row)


def from_row(row: Sequence[Any]) -> GenerationRecord:
    """The record stored as `row`, whose values are in `COLUMNS` order."""
    values = {
        name: _DECODERS[name](value) if name in _DECODERS else value
        for name, value in zip(COLUMNS, row, strict=True)
    }
    return GenerationRecord(**values)
