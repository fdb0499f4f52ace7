"""Usage reports: the hourly rollups the stores keep as records are written, the questions asked of them,
and the questions asked of the records themselves (the generations listing)."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

from llmgw.domain.generation import GenerationRecord, GenerationStatus
from llmgw.domain.limits import usd_to_micros

SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400


class Dimension(enum.StrEnum):
    """What a usage report may group by; `day` and `hour` are UTC."""

    DAY = "day"
    HOUR = "hour"
    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    PROVIDER = "provider"


def hour_of(created_at: float) -> int:
    """The start of the UTC hour `created_at` (Unix seconds) falls in: every store buckets with this
    formula (floor of the IEEE quotient), so rollups written by any of them agree."""
    return math.floor(created_at / SECONDS_PER_HOUR) * SECONDS_PER_HOUR


@dataclass(frozen=True, slots=True)
class UsageCounters:
    """What a set of requests did and cost; `cost_micros` sums each record's cost rounded by
    `usd_to_micros` (a record without a cost adds 0), so it matches the records to the micro-dollar."""

    requests: int = 0
    errors: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_micros: int = 0

    @classmethod
    def of(cls, record: GenerationRecord) -> UsageCounters:
        return cls(
            requests=1,
            errors=int(record.status is GenerationStatus.ERROR),
            cancelled=int(record.status is GenerationStatus.CANCELLED),
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cached_tokens=record.cached_tokens,
            reasoning_tokens=record.reasoning_tokens,
            total_tokens=record.total_tokens,
            cost_micros=0 if record.cost_usd is None else usd_to_micros(record.cost_usd),
        )

    def plus(self, other: UsageCounters) -> UsageCounters:
        return UsageCounters(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[int, ...]:
        """The counters in `COUNTERS` order."""
        return (
            self.requests,
            self.errors,
            self.cancelled,
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.total_tokens,
            self.cost_micros,
        )


#: The counters' names, in `UsageCounters.values()` order (also the rollup tables' column names).
COUNTERS: tuple[str, ...] = tuple(field.name for field in fields(UsageCounters))

#: A rollup row's key: (hour start, key_id, team_id, model, provider).
RollupKey = tuple[int, str, str, str, str]


def rollup_key(record: GenerationRecord) -> RollupKey:
    return (hour_of(record.created_at), record.key_id, record.team_id, record.model, record.provider)


def rollup_deltas(records: list[GenerationRecord]) -> list[tuple[RollupKey, UsageCounters]]:
    """What `records` add to the rollups, one delta per rollup row, sorted by key: writers that take the
    rows' locks in this order never deadlock each other."""
    deltas: dict[RollupKey, UsageCounters] = {}
    for record in records:
        key = rollup_key(record)
        counters = UsageCounters.of(record)
        known = deltas.get(key)
        deltas[key] = counters if known is None else known.plus(counters)
    return sorted(deltas.items())


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Sum the rollups of the hours starting in [since, until) (Unix seconds, whole hours) that match every
    non-empty filter, grouped by `group_by` (none: one row of totals)."""

    since: int
    until: int
    group_by: tuple[Dimension, ...] = (Dimension.DAY,)
    key_id: str = ""
    team_id: str = ""
    model: str = ""
    provider: str = ""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group of a report: each dimension it is not grouped by is None; `period` is the start of its
    UTC day or hour (Unix seconds)."""

    counters: UsageCounters
    period: int | None = None
    key_id: str | None = None
    team_id: str | None = None
    model: str | None = None
    provider: str | None = None


# The `UsageRow` field each dimension fills.
_ROW_FIELDS = {
    Dimension.DAY: "period",
    Dimension.HOUR: "period",
    Dimension.KEY: "key_id",
    Dimension.TEAM: "team_id",
    Dimension.MODEL: "model",
    Dimension.PROVIDER: "provider",
}


def usage_row(group_by: Sequence[Dimension], values: Sequence[object], counters: UsageCounters) -> UsageRow:
    """The row of the group whose dimension values (in `group_by` order) are `values`."""
    named: dict[str, Any] = {}
    for dimension, value in zip(group_by, values, strict=True):
        field = _ROW_FIELDS[dimension]
        named[field] = int(cast(int, value)) if field == "period" else str(value)
    return UsageRow(counters, **named)


@dataclass(frozen=True, slots=True)
class GenerationQuery:
    """Records newest first (by id, which sorts by minting time), matching every non-empty filter:
    created in [since, until) when given, with ids below `before` (a cursor) when given."""

    limit: int
    before: str = ""
    key_id: str = ""
    team_id: str = ""
    model: str = ""
    status: GenerationStatus | None = None
    since: float | None = None
    until: float | None = None
