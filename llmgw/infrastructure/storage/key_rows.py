"""API keys, teams and audit entries as SQL rows: table and column names and the conversions, shared by
the SQL stores. Sets, lists and mappings are stored as text (scopes space-separated, the rest JSON) so
both databases keep them the same way; limits are a nullable column each (null: no such limit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from llmgw.domain.keys import ApiKey, AuditEntry, Scope, Team
from llmgw.domain.limits import NO_LIMITS, Limits, Period

KEYS_TABLE = "api_keys"
TEAMS_TABLE = "teams"
AUDIT_TABLE = "audit"

# A key's and a team's limits, one column per `Limits` field, named after it (migration 4), last in both
# tables.
LIMIT_COLUMNS = ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "soft_budget_usd")

# One column per field, named after it; the conversions below list the values in this order.
KEY_COLUMNS = (
    "public_id",
    "name",
    "secret_hash",
    "scopes",
    "models",
    "team_id",
    "expires_at",
    "disabled",
    "metadata",
    "created_at",
    "last_used_at",
    "previous_hash",
    "previous_valid_until",
    *LIMIT_COLUMNS,
)
TEAM_COLUMNS = ("id", "name", "metadata", "created_at", *LIMIT_COLUMNS)
AUDIT_COLUMNS = ("id", "at", "actor", "action", "target", "details")


def column_list(columns: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def limits_to_row(limits: Limits) -> tuple[Any, ...]:
    """The limits' values in `LIMIT_COLUMNS` order, the period as its name."""
    period = limits.budget_period
    return (
        limits.rpm,
        limits.tpm,
        limits.max_parallel,
        limits.budget_usd,
        None if period is None else period.value,
        limits.soft_budget_usd,
    )


def limits_from_row(row: Sequence[Any]) -> Limits:
    """The limits stored as `row`, in `LIMIT_COLUMNS` order."""
    rpm, tpm, max_parallel, budget_usd, budget_period, soft_budget_usd = row
    if all(value is None for value in row):
        return NO_LIMITS  # shared, so `Limits.empty` answers by identity on every request
    return Limits(
        rpm=rpm,
        tpm=tpm,
        max_parallel=max_parallel,
        budget_usd=budget_usd,
        budget_period=None if budget_period is None else Period(budget_period),
        soft_budget_usd=soft_budget_usd,
    )


_LIMITS_AT = len(KEY_COLUMNS) - len(LIMIT_COLUMNS)
_TEAM_LIMITS_AT = len(TEAM_COLUMNS) - len(LIMIT_COLUMNS)


def key_to_row(key: ApiKey) -> tuple[Any, ...]:
    """The key's values in `KEY_COLUMNS` order."""
    return (
        key.public_id,
        key.name,
        key.secret_hash,
        " ".join(sorted(scope.value for scope in key.scopes)),
        _json(list(key.models)),
        key.team_id,
        key.expires_at,
        key.disabled,
        _json(dict(key.metadata)),
        key.created_at,
        key.last_used_at,
        key.previous_hash,
        key.previous_valid_until,
        *limits_to_row(key.limits),
    )


def key_from_row(row: Sequence[Any]) -> ApiKey:
    """The key stored as `row`, in `KEY_COLUMNS` order."""
    (
        public_id,
        name,
        secret_hash,
        scopes,
        models,
        team_id,
        expires_at,
        disabled,
        metadata,
        created_at,
        last_used_at,
        previous_hash,
        previous_valid_until,
    ) = row[:_LIMITS_AT]
    return ApiKey(
        public_id=public_id,
        name=name,
        secret_hash=bytes(secret_hash),
        scopes=frozenset(Scope(value) for value in scopes.split()),
        models=tuple(orjson.loads(models)),
        team_id=team_id,
        expires_at=expires_at,
        disabled=bool(disabled),  # SQLite has no boolean
        metadata=orjson.loads(metadata),
        created_at=created_at,
        last_used_at=last_used_at,
        previous_hash=None if previous_hash is None else bytes(previous_hash),
        previous_valid_until=previous_valid_until,
        limits=limits_from_row(row[_LIMITS_AT:]),
    )


def team_to_row(team: Team) -> tuple[Any, ...]:
    return (team.id, team.name, _json(dict(team.metadata)), team.created_at, *limits_to_row(team.limits))


def team_from_row(row: Sequence[Any]) -> Team:
    team_id, name, metadata, created_at = row[:_TEAM_LIMITS_AT]
    return Team(
        id=team_id,
        name=name,
        metadata=orjson.loads(metadata),
        created_at=created_at,
        limits=limits_from_row(row[_TEAM_LIMITS_AT:]),
    )


def audit_to_row(entry: AuditEntry) -> tuple[Any, ...]:
    return (entry.id, entry.at, entry.actor, entry.action, entry.target, _json(dict(entry.details)))


def audit_from_row(row: Sequence[Any]) -> AuditEntry:
    entry_id, at, actor, action, target, details = row
    return AuditEntry(
        id=entry_id, at=at, actor=actor, action=action, target=target, details=orjson.loads(details)
    )
