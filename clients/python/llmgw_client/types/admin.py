"""The admin service's typed results, whose `to_dict()` is the JSON the REST admin API (`/admin/v1`) answers
for the same object, and their construction from the proto messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from llmgw_client._messages import admin_v1
from llmgw_client._transport import CallInfo

__all__ = [
    "ApiKey",
    "ApiKeyDeleted",
    "AuditEntry",
    "BudgetUsage",
    "IssuedKey",
    "KeyUsage",
    "Limits",
    "Page",
    "RateUsage",
    "Team",
    "TeamDeleted",
    "TeamUsage",
]


class _Result:
    """What every admin result offers besides its attributes."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


R = TypeVar("R", bound=_Result)


@dataclass(slots=True, kw_only=True)
class ApiKey(_Result):
    """A key as stored: everything but its secret. `team_id` None: no team; `expires_at` None: never;
    `last_used_at` None: never used; `previous_secret_valid_until`: after a rotation, until when the old
    secret still works (None: it does not). The limits (`rpm`, `tpm`, `max_parallel`, `budget_usd`,
    `budget_period`, `soft_budget_usd`): None, no such limit; `budget_period` None: the key's lifetime."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    team_id: str | None
    scopes: list[str]
    models: list[str]
    expires_at: float | None
    disabled: bool
    metadata: dict[str, str]
    created_at: float
    last_used_at: float | None
    previous_secret_valid_until: float | None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    soft_budget_usd: float | None = None
    request_id: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "name": self.name,
            "team_id": self.team_id,
            "scopes": list(self.scopes),
            "models": list(self.models),
            "expires_at": self.expires_at,
            "disabled": self.disabled,
            "metadata": dict(self.metadata),
            **_limits_dict(self),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "previous_secret_valid_until": self.previous_secret_valid_until,
        }


@dataclass(slots=True, kw_only=True)
class IssuedKey(ApiKey):
    """A key just created or rotated: `key` is its full text (sk-llmgw-<id>-<secret>), shown this once."""

    key: str

    def to_dict(self) -> dict[str, Any]:
        # Not super(): a slotted dataclass is a new class, which zero-argument super() does not know.
        return {**ApiKey.to_dict(self), "key": self.key}


@dataclass(slots=True, kw_only=True)
class Team(_Result):
    """A team; its limits (as on `ApiKey`) hold for all its keys together."""

    id: str
    object: Literal["team"] = "team"
    name: str
    metadata: dict[str, str]
    created_at: float
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    soft_budget_usd: float | None = None
    request_id: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "name": self.name,
            "metadata": dict(self.metadata),
            **_limits_dict(self),
            "created_at": self.created_at,
        }


def _limits_dict(result: ApiKey | Team) -> dict[str, Any]:
    return {
        "rpm": result.rpm,
        "tpm": result.tpm,
        "max_parallel": result.max_parallel,
        "budget_usd": result.budget_usd,
        "budget_period": result.budget_period,
        "soft_budget_usd": result.soft_budget_usd,
    }


def _limits(msg: admin_v1.Limits | None) -> dict[str, Any]:
    """A `Limits` message as the results' six fields (unset, or no message from an older server: None)."""
    limits = msg or admin_v1.Limits()
    return {
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "max_parallel": limits.max_parallel,
        "budget_usd": limits.budget_usd,
        "budget_period": limits.budget_period,
        "soft_budget_usd": limits.soft_budget_usd,
    }


@dataclass(slots=True, kw_only=True)
class Limits(_Result):
    """The six limits of a key or a team, each None when not set (`budget_period` None: lifetime)."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    soft_budget_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "soft_budget_usd": self.soft_budget_usd,
        }


@dataclass(slots=True, kw_only=True)
class RateUsage(_Result):
    """A sliding-minute limit (`rpm` or `tpm`): how many more fit now, and the seconds until it is whole."""

    limit: int
    remaining: int
    reset_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "remaining": self.remaining, "reset_seconds": self.reset_seconds}


@dataclass(slots=True, kw_only=True)
class BudgetUsage(_Result):
    """The current budget period in US dollars: `period` None (and its bounds, Unix seconds) for a lifetime
    budget; `reserved_usd` is held by requests still running; `remaining_usd` None with only a soft
    budget. Only requests to priced models are charged."""

    period: str | None
    period_start: float | None
    period_end: float | None
    budget_usd: float | None
    soft_budget_usd: float | None
    spent_usd: float
    reserved_usd: float
    remaining_usd: float | None
    soft_exceeded: bool
    priced_models_only: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "budget_usd": self.budget_usd,
            "soft_budget_usd": self.soft_budget_usd,
            "spent_usd": self.spent_usd,
            "reserved_usd": self.reserved_usd,
            "remaining_usd": self.remaining_usd,
            "soft_exceeded": self.soft_exceeded,
            "priced_models_only": self.priced_models_only,
        }


@dataclass(slots=True, kw_only=True)
class _Usage(_Result):
    """What a key or a team has used of its limits now (`at`, Unix seconds); each part None when its limit
    is not set: `requests` (rpm), `tokens` (tpm), `in_flight` (max_parallel), `budget`."""

    object: Literal["usage"] = "usage"
    at: float
    limits: Limits
    requests: RateUsage | None
    tokens: RateUsage | None
    in_flight: int | None
    budget: BudgetUsage | None
    request_id: str | None = field(default=None, compare=False)

    def _counters(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "limits": self.limits.to_dict(),
            "requests": None if self.requests is None else self.requests.to_dict(),
            "tokens": None if self.tokens is None else self.tokens.to_dict(),
            "in_flight": self.in_flight,
            "budget": None if self.budget is None else self.budget.to_dict(),
        }


@dataclass(slots=True, kw_only=True)
class KeyUsage(_Usage):
    """`client.admin.keys.usage(id)`: the key's own limits (its team's: `teams.usage`)."""

    key_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, "key_id": self.key_id, **_Usage._counters(self)}


@dataclass(slots=True, kw_only=True)
class TeamUsage(_Usage):
    """`client.admin.teams.usage(id)`: the team's limits, used by all its keys together."""

    team_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, "team_id": self.team_id, **_Usage._counters(self)}


@dataclass(slots=True, kw_only=True)
class AuditEntry(_Result):
    """One admin action: `actor` is the acting key's id ("config" for `auth.admin_key`), `target` the key
    or team acted on (None for listings), `details` the fields the call gave (never a secret)."""

    id: str
    object: Literal["audit_entry"] = "audit_entry"
    at: float
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": dict(self.details),
        }


@dataclass(slots=True, kw_only=True)
class ApiKeyDeleted(_Result):
    id: str
    object: Literal["api_key"] = "api_key"
    deleted: bool
    request_id: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "deleted": self.deleted}


@dataclass(slots=True, kw_only=True)
class TeamDeleted(_Result):
    id: str
    object: Literal["team"] = "team"
    deleted: bool
    request_id: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "deleted": self.deleted}


@dataclass(slots=True, kw_only=True)
class Page(_Result, Generic[R]):
    """One page of a listing, iterable over its `data`; `next_cursor` (None when `has_more` is false) asks
    for the next page as `after=` (the audit trail: `before=`)."""

    object: Literal["list"] = "list"
    data: list[R]
    has_more: bool
    next_cursor: str | None
    request_id: str | None = field(default=None, compare=False)

    def __iter__(self) -> Iterator[R]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "data": [item.to_dict() for item in self.data],
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
        }


K = TypeVar("K", bound=ApiKey)


def key_result(cls: type[K], msg: admin_v1.ApiKey, **extra: Any) -> K:
    return cls(
        id=msg.id,
        name=msg.name,
        team_id=msg.team_id or None,
        scopes=msg.scopes,
        models=msg.models,
        expires_at=msg.expires_at,
        disabled=msg.disabled,
        metadata=msg.metadata,
        created_at=msg.created_at,
        last_used_at=msg.last_used_at,
        previous_secret_valid_until=msg.previous_secret_valid_until,
        **_limits(msg.limits),
        **extra,
    )


def issued_key(key_info: admin_v1.ApiKey | None, text: str, info: CallInfo) -> IssuedKey:
    # The server always sets key_info; an empty one rather than a crash should it ever not.
    return key_result(IssuedKey, key_info or admin_v1.ApiKey(), key=text, request_id=info.request_id)


def team_result(msg: admin_v1.Team, info: CallInfo | None = None) -> Team:
    return Team(
        id=msg.id,
        name=msg.name,
        metadata=msg.metadata,
        created_at=msg.created_at,
        **_limits(msg.limits),
        request_id=info.request_id if info is not None else None,
    )


def key_usage(msg: admin_v1.Usage, info: CallInfo) -> KeyUsage:
    return KeyUsage(key_id=msg.key_id, **_usage_fields(msg, info))


def team_usage(msg: admin_v1.Usage, info: CallInfo) -> TeamUsage:
    return TeamUsage(team_id=msg.team_id, **_usage_fields(msg, info))


def _usage_fields(msg: admin_v1.Usage, info: CallInfo) -> dict[str, Any]:
    requests, tokens, budget = msg.requests, msg.tokens, msg.budget
    return {
        "at": msg.at,
        "limits": Limits(**_limits(msg.limits)),
        "requests": None if requests is None else _rate(requests),
        "tokens": None if tokens is None else _rate(tokens),
        "in_flight": msg.in_flight,
        "budget": None if budget is None else _budget(budget),
        "request_id": info.request_id,
    }


def _rate(msg: admin_v1.RateUsage) -> RateUsage:
    return RateUsage(limit=msg.limit, remaining=msg.remaining, reset_seconds=msg.reset_seconds)


def _budget(msg: admin_v1.BudgetUsage) -> BudgetUsage:
    return BudgetUsage(
        period=msg.period,
        period_start=msg.period_start,
        period_end=msg.period_end,
        budget_usd=msg.budget_usd,
        soft_budget_usd=msg.soft_budget_usd,
        spent_usd=msg.spent_usd,
        reserved_usd=msg.reserved_usd,
        remaining_usd=msg.remaining_usd,
        soft_exceeded=msg.soft_exceeded,
        priced_models_only=msg.priced_models_only,
    )


def audit_entry(msg: admin_v1.AuditEntry) -> AuditEntry:
    return AuditEntry(
        id=msg.id,
        at=msg.at,
        actor=msg.actor,
        action=msg.action,
        target=msg.target or None,
        details=msg.details.to_dict() if msg.details is not None else {},
    )
