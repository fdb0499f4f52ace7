"""Keys, teams and audit rows as the JSON the admin API and the CLI show: never a secret nor its hash.
Times are Unix seconds, as OpenAI's `created`."""

from __future__ import annotations

from typing import Any

from llmgw.domain.keys import ApiKey, AuditEntry, Team


def key_json(key: ApiKey) -> dict[str, Any]:
    """`previous_secret_valid_until`: after a rotation, until when the old secret still works (null: it
    does not, or there was no rotation)."""
    return {
        "id": key.public_id,
        "object": "api_key",
        "name": key.name,
        "team_id": key.team_id or None,
        "scopes": sorted(scope.value for scope in key.scopes),
        "models": list(key.models),
        "expires_at": key.expires_at,
        "disabled": key.disabled,
        "metadata": dict(key.metadata),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "previous_secret_valid_until": key.previous_valid_until,
    }


def team_json(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "object": "team",
        "name": team.name,
        "metadata": dict(team.metadata),
        "created_at": team.created_at,
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "audit_entry",
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target or None,
        "details": dict(entry.details),
    }
