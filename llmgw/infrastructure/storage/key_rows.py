"""API keys, teams and audit entries as SQL rows: table and column names and the conversions, shared by
the SQL stores. Sets, lists and mappings are stored as text (scopes space-separated, the rest JSON) so
both databases keep them the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from llmgw.domain.keys import ApiKey, AuditEntry, Scope, Team

KEYS_TABLE = "api_keys"
TEAMS_TABLE = "teams"
AUDIT_TABLE = "audit"

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
)
TEAM_COLUMNS = ("id", "name", "metadata", "created_at")
AUDIT_COLUMNS = ("id", "at", "actor", "action", "target", "details")


def column_list(columns: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


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
    ) = row
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
    )


def team_to_row(team: Team) -> tuple[Any, ...]:
    return (team.id, team.name, _json(dict(team.metadata)), team.created_at)


def team_from_row(row: Sequence[Any]) -> Team:
    team_id, name, metadata, created_at = row
    return Team(id=team_id, name=name, metadata=orjson.loads(metadata), created_at=created_at)


def audit_to_row(entry: AuditEntry) -> tuple[Any, ...]:
    return (entry.id, entry.at, entry.actor, entry.action, entry.target, _json(dict(entry.details)))


def audit_from_row(row: Sequence[Any]) -> AuditEntry:
    entry_id, at, actor, action, target, details = row
    return AuditEntry(
        id=entry_id, at=at, actor=actor, action=action, target=target, details=orjson.loads(details)
    )
