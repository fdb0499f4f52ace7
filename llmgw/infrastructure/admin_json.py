"""Keys, teams, their usage of their limits, and audit rows as the JSON the admin API and the CLI show:
never a secret nor its hash. Times are Unix seconds, as OpenAI's `created`; a key's and a team's limits are
six fields of the object itself, each null when there is no such limit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmgw.application.limits import LimitUsage
from llmgw.application.usage_report import UsageReport
from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.domain.limits import Limits, ScopeKind, micros_to_usd
from llmgw.domain.usage_report import COUNTERS, Dimension, UsageCounters, UsageRow


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


def usage_json(usage: LimitUsage) -> dict[str, Any]:
    """`GET /admin/v1/keys/{id}/usage` (`key_id`) and `/teams/{id}/usage` (`team_id`): the limits, then the
    counters of each one set (null: no such limit). `requests` and `tokens`: the sliding window's limit,
    what is left now and the seconds until it is whole again; `in_flight`: requests running now (with
    `max_parallel`); `budget` (with `budget_usd` or `soft_budget_usd`): the current period's bounds
    (null for a lifetime budget), spent and reserved (by requests still running) US dollars, and what is
    left of `budget_usd` (null with only a soft budget). Only priced models are charged to budgets."""
    scope, status, limits = usage.scope, usage.status, usage.scope.limits
    owner = "key_id" if scope.kind is ScopeKind.KEY else "team_id"
    requests = tokens = budget = None
    if limits.rpm is not None:
        requests = {
            "limit": limits.rpm,
            "remaining": status.remaining_requests,
            "reset_seconds": _seconds(status.reset_requests),
        }
    if limits.tpm is not None:
        tokens = {
            "limit": limits.tpm,
            "remaining": status.remaining_tokens,
            "reset_seconds": _seconds(status.reset_tokens),
        }
    if limits.tracks_budget:
        start, end = usage.period if usage.period is not None else (None, None)
        remaining = status.remaining_micros
        budget = {
            "period": None if limits.budget_period is None else limits.budget_period.value,
            "period_start": start,
            "period_end": end,
            "budget_usd": limits.budget_usd,
            "soft_budget_usd": limits.soft_budget_usd,
            "spent_usd": micros_to_usd(status.spent_micros or 0),
            "reserved_usd": micros_to_usd(status.reserved_micros or 0),
            "remaining_usd": None if remaining is None else micros_to_usd(remaining),
            "soft_exceeded": status.soft_exceeded,
            "priced_models_only": True,
        }
    return {
        "object": "usage",
        owner: scope.id,
        "at": usage.at,
        "limits": limits_json(limits),
        "requests": requests,
        "tokens": tokens,
        "in_flight": status.in_flight if limits.max_parallel is not None else None,
        "budget": budget,
    }


def _seconds(value: float | None) -> float:
    """To the millisecond: the counters' float noise (60 / rpm steps) is not news to anyone."""
    return round(value or 0.0, 3)


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


#: Each dimension's field in a usage report's rows (and its CSV column).
DIMENSION_FIELDS = {
    Dimension.DAY: "day",
    Dimension.HOUR: "hour",
    Dimension.KEY: "key_id",
    Dimension.TEAM: "team_id",
    Dimension.MODEL: "model",
    Dimension.PROVIDER: "provider",
}
#: The counters of a report's rows and totals, in order (`cost_usd` is `cost_micros` in US dollars).
COUNTER_FIELDS = (*(name for name in COUNTERS if name != "cost_micros"), "cost_usd", "cost_micros")


def usage_report_json(report: UsageReport) -> dict[str, Any]:
    """`GET /admin/v1/usage`: each row has the fields of its dimensions only (`day` "YYYY-MM-DD", `hour`
    "YYYY-MM-DDTHH:00:00Z", both UTC), then the counters; `totals` sums every row."""
    return {
        "object": "usage_report",
        "from": report.first.isoformat(),
        "to": report.last.isoformat(),
        "group_by": [dimension.value for dimension in report.group_by],
        "data": [usage_row_json(row, report.group_by) for row in report.rows],
        "totals": counters_json(report.totals),
    }


def usage_row_json(row: UsageRow, group_by: tuple[Dimension, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dimension in group_by:
        out[DIMENSION_FIELDS[dimension]] = _dimension_value(row, dimension)
    return out | counters_json(row.counters)


def _dimension_value(row: UsageRow, dimension: Dimension) -> str:
    if dimension is Dimension.DAY or dimension is Dimension.HOUR:
        at = datetime.fromtimestamp(row.period or 0, UTC)
        return at.strftime("%Y-%m-%d" if dimension is Dimension.DAY else "%Y-%m-%dT%H:00:00Z")
    value = {
        Dimension.KEY: row.key_id,
        Dimension.TEAM: row.team_id,
        Dimension.MODEL: row.model,
        Dimension.PROVIDER: row.provider,
    }[dimension]
    return value or ""


def counters_json(counters: UsageCounters) -> dict[str, Any]:
    out: dict[str, Any] = dict(zip(COUNTERS, counters.values(), strict=True))
    micros = out.pop("cost_micros")
    return out | {"cost_usd": micros_to_usd(micros), "cost_micros": micros}
