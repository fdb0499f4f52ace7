"""Generation records as protobuf messages: each record field in the `Generation` field of its name."""

from __future__ import annotations

import dataclasses
import datetime
import operator
from collections.abc import Callable
from typing import Any

from llmgw.domain.generation import GenerationRecord, GenerationStatus
from llmgw.infrastructure.grpc.messages import v1

# The record's fields that the message has, read from both, so a new record field needs no edit here. It
# reaches gRPC clients once `Generation` has a field of its name (a field number is the proto's own edit).
_IN_MESSAGE = frozenset(field.name for field in dataclasses.fields(v1.Generation))
_FIELDS = tuple(field.name for field in dataclasses.fields(GenerationRecord) if field.name in _IN_MESSAGE)
_VALUES = operator.attrgetter(*_FIELDS)

_STATUS = {
    GenerationStatus.COMPLETED: v1.GenerationStatus.COMPLETED,
    GenerationStatus.ERROR: v1.GenerationStatus.ERROR,
    GenerationStatus.CANCELLED: v1.GenerationStatus.CANCELLED,
}
# Values the message holds in types of its own; every other one is the record's value as it is.
_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "kind": operator.attrgetter("value"),
    "status": _STATUS.__getitem__,
    "created_at": lambda seconds: datetime.datetime.fromtimestamp(seconds, datetime.UTC),
    "attempts": lambda attempts: [v1.GenerationAttempt(**dataclasses.asdict(a)) for a in attempts],
    "limits": list,
}


def generation_to_proto(record: GenerationRecord) -> v1.Generation:
    values = dict(zip(_FIELDS, _VALUES(record), strict=True))
    for name, convert in _CONVERSIONS.items():
        values[name] = convert(values[name])
    return v1.Generation(**values)
