"""The rules of the usage reports and the generations listing: who may read what, and what the
parameters both fronts pass as text (days, times, dimensions, statuses, page sizes) may hold.

A key with the `admin` scope (or nobody, with auth off) reads everything. A key with `usage:read` reads
its team's usage and records (a key in no team: its own key's); it may narrow that with filters, but
naming another team, or a key outside what it may read, is refused (403), as is a key with neither scope.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from llmgw.application.ports import KeyStore
from llmgw.domain.errors import InvalidRequest, PermissionDenied
from llmgw.domain.generation import GenerationStatus
from llmgw.domain.keys import ApiKey, Scope
from llmgw.domain.usage_report import Dimension, UsageCounters, UsageRow

#: A report covers at most this many days, both ends included.
MAX_REPORT_DAYS = 400
#: The days a report covers when `from` is not given, `to` included.
DEFAULT_REPORT_DAYS = 30
DEFAULT_LISTING_PAGE = 20
MAX_LISTING_PAGE = 100


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The usage of the UTC days `first`..`last` (both included), one row per group, ordered by the
    dimensions' values in `group_by` order, and the totals of every row."""

    first: date
    last: date
    group_by: tuple[Dimension, ...]
    rows: Sequence[UsageRow]
    totals: UsageCounters


@dataclass(frozen=True, slots=True)
class Readable:
    """The filters a caller's reads are held to: "" is any."""

    key_id: str
    team_id: str


async def readable(actor: ApiKey | None, keys: KeyStore, *, key_id: str, team_id: str) -> Readable:
    """The key and team filters `actor` may read under, from those it asked for (see the module's
    docstring); raises `PermissionDenied` for a read it may not make."""
    if actor is None or Scope.ADMIN in actor.scopes:
        return Readable(key_id, team_id)
    if Scope.USAGE_READ not in actor.scopes:
        raise PermissionDenied(
            "Reading usage and generation records needs a key with the usage:read or admin scope.",
            code="insufficient_scope",
        )
    if not actor.team_id:
        if team_id:
            raise _others("team_id", "A key in no team reads its own usage only; it names no team_id.")
        if key_id and key_id != actor.public_id:
            raise _others("key_id", "A key in no team reads its own usage only.")
        return Readable(actor.public_id, "")
    if team_id and team_id != actor.team_id:
        raise _others("team_id", "This key reads its own team's usage only.")
    if key_id and key_id != actor.public_id:
        named = await keys.get_key(key_id)
        if named is None or named.team_id != actor.team_id:
            raise _others("key_id", "This key reads the usage of its own team's keys only.")
    return Readable(key_id, actor.team_id)


def _others(param: str, message: str) -> PermissionDenied:
    return PermissionDenied(message, code="insufficient_scope", param=param)


def report_days(first: str | None, last: str | None, today: date) -> tuple[date, date]:
    """`from` and `to` as UTC days (YYYY-MM-DD, both included): `to` defaults to today, `from` to
    `DEFAULT_REPORT_DAYS` days ending on `to`."""
    end = _day(last, "to") if last else today
    start = _day(first, "from") if first else end - timedelta(days=DEFAULT_REPORT_DAYS - 1)
    if start > end:
        raise InvalidRequest("from is a day after to.", param="from")
    if (end - start).days + 1 > MAX_REPORT_DAYS:
        raise InvalidRequest(f"A report covers at most {MAX_REPORT_DAYS} days.", param="from")
    return start, end


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(text: str, param: str) -> date:
    if _DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise InvalidRequest(f"{param} is a UTC day, YYYY-MM-DD.", param=param)


def day_start(day: date) -> int:
    """The day's first second, in Unix seconds (UTC)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def dimensions(text: str | None) -> tuple[Dimension, ...]:
    """`group_by`: comma-separated dimension names; not given, by day; empty, no grouping (the totals)."""
    if text is None:
        return (Dimension.DAY,)
    names = [name.strip() for name in text.split(",")] if text.strip() else []
    try:
        chosen = tuple(Dimension(name) for name in names)
    except ValueError:
        raise InvalidRequest(
            f"group_by is a comma-separated list of: {', '.join(d.value for d in Dimension)}.",
            param="group_by",
        ) from None
    if len(set(chosen)) != len(chosen):
        raise InvalidRequest("group_by names each dimension once.", param="group_by")
    if Dimension.DAY in chosen and Dimension.HOUR in chosen:
        raise InvalidRequest("group_by takes day or hour, not both.", param="group_by")
    return chosen


def sort_key(row: UsageRow, group_by: Sequence[Dimension]) -> tuple[object, ...]:
    fields = {
        Dimension.DAY: row.period,
        Dimension.HOUR: row.period,
        Dimension.KEY: row.key_id,
        Dimension.TEAM: row.team_id,
        Dimension.MODEL: row.model,
        Dimension.PROVIDER: row.provider,
    }
    return tuple(fields[dimension] for dimension in group_by)


def instant(text: str | None, param: str) -> float | None:
    """A listing's `from`/`to`: Unix seconds, an RFC 3339 time (UTC when it has no offset), or a UTC day
    (its midnight); "" or None is no bound."""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{param} is Unix seconds, an RFC 3339 time or a UTC day (YYYY-MM-DD).", param=param
        ) from None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


def status(text: str | None) -> GenerationStatus | None:
    if not text:
        return None
    try:
        return GenerationStatus(text)
    except ValueError:
        raise InvalidRequest("status is one of: completed, error, cancelled.", param="status") from None


def listing_page(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LISTING_PAGE
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTING_PAGE:
        raise InvalidRequest(f"limit is a whole number from 1 to {MAX_LISTING_PAGE}.", param="limit")
    return limit
