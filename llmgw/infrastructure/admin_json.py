"""Keys, teams and audit rows as the JSON the admin API and the CLI show: never a secret nor its hash.
Times are Unix seconds, as OpenAI's `created`; a key's and a team's limits are six fields of the object
itself, each null when there is no such limit."""

from __future__ import annotations

from typing import Any

from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.domain.limits import Limits


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
        **limits_json(key.limits),
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
        **limits_json(team.limits),
        "created_at": team.created_at,
    }


def limits_json(limits: Limits) -> dict[str, Any]:
    """`budget_period` null: the budgets hold for the object's lifetime."""
    period = limits.budget_period
    return {
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "max_parallel": limits.max_parallel,
        "budget_usd": limits.budget_usd,
        "budget_period": None if period is None else period.value,
        "soft_budget_usd": limits.soft_budget_usd,
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
