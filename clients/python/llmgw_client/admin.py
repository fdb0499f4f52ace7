"""The admin resource, `client.admin.keys / .teams / .audit`, over `AdminService`; its typed results are
in `llmgw_client.types.admin`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeAlias

from llmgw_client._messages import admin_v1
from llmgw_client._transport import NOT_GIVEN, Caller, NotGiven
from llmgw_client.types.admin import (
    ApiKey,
    ApiKeyDeleted,
    AuditEntry,
    BudgetUsage,
    IssuedKey,
    KeyUsage,
    Limits,
    Page,
    RateUsage,
    Team,
    TeamDeleted,
    TeamUsage,
    audit_entry,
    issued_key,
    key_result,
    key_usage,
    team_result,
    team_usage,
)

__all__ = [
    "Admin",
    "ApiKey",
    "ApiKeyDeleted",
    "Audit",
    "AuditEntry",
    "BudgetUsage",
    "IssuedKey",
    "KeyUsage",
    "Keys",
    "Limits",
    "Page",
    "RateUsage",
    "Team",
    "TeamDeleted",
    "TeamUsage",
    "Teams",
]

_SERVICE = "/llmgateway.admin.v1.AdminService/"

#: A time as the REST API takes it: Unix seconds, an aware `datetime`, or ISO 8601 text with its offset.
Time: TypeAlias = float | datetime | str
Timeout: TypeAlias = float | NotGiven | None
Retries: TypeAlias = int | NotGiven
#: A budget's period; None: the key's or team's lifetime.
Period: TypeAlias = Literal["day", "week", "month"]
_LIMITS = ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "soft_budget_usd")


class _Resource:
    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller


class Keys(_Resource):
    """API keys. Every method also takes `timeout=` (seconds), `max_retries=` and `extra_headers=`."""

    __slots__ = ()

    async def create(
        self,
        *,
        name: str,
        team_id: str | None = None,
        scopes: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        expires_at: Time | None = None,
        metadata: Mapping[str, str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        budget_usd: float | None = None,
        budget_period: Period | None = None,
        soft_budget_usd: float | None = None,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> IssuedKey:
        """Issue a key; `scopes` None: inference only; `models` None: every model; `expires_at` None:
        never; each limit None: no such limit (`budget_period` None: the key's lifetime). Its full text is
        the answer's `key`, shown this once."""
        request = admin_v1.CreateKeyRequest(
            name=name,
            team_id=team_id or "",
            scopes=list(scopes or ()),
            models=list(models or ()),
            expires_at=None if expires_at is None else _seconds(expires_at),
            metadata=dict(metadata or {}),
            limits=_new_limits(
                rpm=rpm,
                tpm=tpm,
                max_parallel=max_parallel,
                budget_usd=budget_usd,
                budget_period=budget_period,
                soft_budget_usd=soft_budget_usd,
            ),
        )
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "CreateKey", request, admin_v1.CreateKeyResponse, options
        )
        return issued_key(reply.key_info, reply.key, info)

    async def list(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        team_id: str | None = None,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Page[ApiKey]:
        """One page of keys in id order (`limit` None: 100); `team_id`: only that team's."""
        request = admin_v1.ListKeysRequest(
            after=after or "", limit=0 if limit is None else limit, team_id=team_id
        )
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "ListKeys", request, admin_v1.ListKeysResponse, options
        )
        return Page(
            data=[key_result(ApiKey, key) for key in reply.data],
            has_more=reply.has_more,
            next_cursor=reply.next_cursor or None,
            request_id=info.request_id,
        )

    async def retrieve(
        self,
        key_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ApiKey:
        request = admin_v1.GetKeyRequest(id=key_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "GetKey", request, admin_v1.ApiKey, options)
        return key_result(ApiKey, reply, request_id=info.request_id)

    async def usage(
        self,
        key_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> KeyUsage:
        """What the key has used of its own limits now and what it has left (`GET
        /admin/v1/keys/{id}/usage`); each part None when its limit is not set."""
        request = admin_v1.GetKeyUsageRequest(id=key_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "GetKeyUsage", request, admin_v1.Usage, options)
        return key_usage(reply, info)

    async def update(
        self,
        key_id: str,
        *,
        name: str | NotGiven = NOT_GIVEN,
        team_id: str | NotGiven | None = NOT_GIVEN,
        scopes: Sequence[str] | NotGiven = NOT_GIVEN,
        models: Sequence[str] | NotGiven = NOT_GIVEN,
        expires_at: Time | NotGiven | None = NOT_GIVEN,
        disabled: bool | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        max_parallel: int | NotGiven | None = NOT_GIVEN,
        budget_usd: float | NotGiven | None = NOT_GIVEN,
        budget_period: Period | NotGiven | None = NOT_GIVEN,
        soft_budget_usd: float | NotGiven | None = NOT_GIVEN,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ApiKey:
        """Change the fields given, and only those: `team_id` None: no team; `models` []: every model;
        `expires_at` None: never; `disabled=False` re-enables; `metadata` replaces the whole map; a limit
        None: no such limit.

        `UpdateKey` replaces a key's limits all at once, so when some limits are given and not all six,
        the others are first read with `retrieve` (one more call, and a change another admin makes in
        between is overwritten)."""
        request = admin_v1.UpdateKeyRequest(id=key_id)
        changes = _given(
            rpm=rpm,
            tpm=tpm,
            max_parallel=max_parallel,
            budget_usd=budget_usd,
            budget_period=budget_period,
            soft_budget_usd=soft_budget_usd,
        )
        if changes:
            current = None
            if len(changes) < len(_LIMITS):
                current = await self.retrieve(
                    key_id, timeout=timeout, max_retries=max_retries, extra_headers=extra_headers
                )
            request.limits = _replaced(current, changes)
        if not isinstance(name, NotGiven):
            request.name = name
        if not isinstance(team_id, NotGiven):
            request.team_id = team_id or ""
        if not isinstance(scopes, NotGiven):
            request.scopes = admin_v1.StringList(values=list(scopes))
        if not isinstance(models, NotGiven):
            request.models = admin_v1.StringList(values=list(models))
        if not isinstance(expires_at, NotGiven):
            # The proto's "never" is 0, the REST API's null.
            request.expires_at = 0.0 if expires_at is None else _seconds(expires_at)
        if not isinstance(disabled, NotGiven):
            request.disabled = disabled
        if not isinstance(metadata, NotGiven):
            request.metadata = admin_v1.StringMap(values=dict(metadata))
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "UpdateKey", request, admin_v1.ApiKey, options)
        return key_result(ApiKey, reply, request_id=info.request_id)

    async def delete(
        self,
        key_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ApiKeyDeleted:
        """Remove a key for good; it is refused at once."""
        request = admin_v1.DeleteKeyRequest(id=key_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "DeleteKey", request, admin_v1.DeleteKeyResponse, options
        )
        return ApiKeyDeleted(id=reply.id, deleted=reply.deleted, request_id=info.request_id)

    async def rotate(
        self,
        key_id: str,
        *,
        grace_seconds: float | None = None,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> IssuedKey:
        """A new secret under the same id; the old one keeps working for `grace_seconds` (None: the
        server's `auth.rotation_grace`; 0: it stops at once)."""
        request = admin_v1.RotateKeyRequest(id=key_id, grace_seconds=grace_seconds)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "RotateKey", request, admin_v1.RotateKeyResponse, options
        )
        return issued_key(reply.key_info, reply.key, info)

    async def disable(
        self,
        key_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ApiKey:
        """Refuse a key from now on, keeping its records (`update(key_id, disabled=False)` re-enables it)."""
        request = admin_v1.DisableKeyRequest(id=key_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "DisableKey", request, admin_v1.ApiKey, options)
        return key_result(ApiKey, reply, request_id=info.request_id)


class Teams(_Resource):
    """Teams, which keys can belong to. Every method also takes `timeout=`, `max_retries=` and
    `extra_headers=`."""

    __slots__ = ()

    async def create(
        self,
        *,
        name: str,
        metadata: Mapping[str, str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        budget_usd: float | None = None,
        budget_period: Period | None = None,
        soft_budget_usd: float | None = None,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Team:
        """Create a team; its limits (each None: no such limit) hold for all its keys together."""
        request = admin_v1.CreateTeamRequest(
            name=name,
            metadata=dict(metadata or {}),
            limits=_new_limits(
                rpm=rpm,
                tpm=tpm,
                max_parallel=max_parallel,
                budget_usd=budget_usd,
                budget_period=budget_period,
                soft_budget_usd=soft_budget_usd,
            ),
        )
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "CreateTeam", request, admin_v1.Team, options)
        return team_result(reply, info)

    async def list(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Page[Team]:
        """One page of teams in id order (`limit` None: 100)."""
        request = admin_v1.ListTeamsRequest(after=after or "", limit=0 if limit is None else limit)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "ListTeams", request, admin_v1.ListTeamsResponse, options
        )
        return Page(
            data=[team_result(team) for team in reply.data],
            has_more=reply.has_more,
            next_cursor=reply.next_cursor or None,
            request_id=info.request_id,
        )

    async def retrieve(
        self,
        team_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Team:
        request = admin_v1.GetTeamRequest(id=team_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "GetTeam", request, admin_v1.Team, options)
        return team_result(reply, info)

    async def usage(
        self,
        team_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> TeamUsage:
        """What the team's keys have used together of the team's limits now (`GET
        /admin/v1/teams/{id}/usage`)."""
        request = admin_v1.GetTeamUsageRequest(id=team_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "GetTeamUsage", request, admin_v1.Usage, options)
        return team_usage(reply, info)

    async def update(
        self,
        team_id: str,
        *,
        name: str | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        max_parallel: int | NotGiven | None = NOT_GIVEN,
        budget_usd: float | NotGiven | None = NOT_GIVEN,
        budget_period: Period | NotGiven | None = NOT_GIVEN,
        soft_budget_usd: float | NotGiven | None = NOT_GIVEN,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Team:
        """Change the fields given, and only those; `metadata` replaces the whole map; a limit None: no
        such limit. Some limits given but not all six: the others are read first, as in `Keys.update`."""
        request = admin_v1.UpdateTeamRequest(id=team_id)
        changes = _given(
            rpm=rpm,
            tpm=tpm,
            max_parallel=max_parallel,
            budget_usd=budget_usd,
            budget_period=budget_period,
            soft_budget_usd=soft_budget_usd,
        )
        if changes:
            current = None
            if len(changes) < len(_LIMITS):
                current = await self.retrieve(
                    team_id, timeout=timeout, max_retries=max_retries, extra_headers=extra_headers
                )
            request.limits = _replaced(current, changes)
        if not isinstance(name, NotGiven):
            request.name = name
        if not isinstance(metadata, NotGiven):
            request.metadata = admin_v1.StringMap(values=dict(metadata))
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_SERVICE + "UpdateTeam", request, admin_v1.Team, options)
        return team_result(reply, info)

    async def delete(
        self,
        team_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> TeamDeleted:
        """Remove a team; refused (`BadRequestError`, code `team_not_empty`) while keys belong to it."""
        request = admin_v1.DeleteTeamRequest(id=team_id)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "DeleteTeam", request, admin_v1.DeleteTeamResponse, options
        )
        return TeamDeleted(id=reply.id, deleted=reply.deleted, request_id=info.request_id)


class Audit(_Resource):
    """The audit trail of admin calls, newest first."""

    __slots__ = ()

    async def list(
        self,
        *,
        before: str | None = None,
        limit: int | None = None,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Page[AuditEntry]:
        """One page, newest first (this listing is written to the trail too); `before`: the previous
        page's `next_cursor`, as the REST API's `?before=`."""
        request = admin_v1.ListAuditRequest(before=before or "", limit=0 if limit is None else limit)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _SERVICE + "ListAudit", request, admin_v1.ListAuditResponse, options
        )
        return Page(
            data=[audit_entry(entry) for entry in reply.data],
            has_more=reply.has_more,
            next_cursor=reply.next_cursor or None,
            request_id=info.request_id,
        )


class Admin:
    """`client.admin`: the gateway's keys, teams and audit trail (a key with the `admin` scope)."""

    __slots__ = ("audit", "keys", "teams")

    def __init__(self, caller: Caller) -> None:
        self.keys = Keys(caller)
        self.teams = Teams(caller)
        self.audit = Audit(caller)


def _new_limits(**values: Any) -> admin_v1.Limits | None:
    """The limits a create request sets; None when it sets none."""
    given = {name: value for name, value in values.items() if value is not None}
    return admin_v1.Limits(**given) if given else None


def _given(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if not isinstance(value, NotGiven)}


def _replaced(current: ApiKey | Team | None, changes: Mapping[str, Any]) -> admin_v1.Limits:
    """All the limits an update sets: `current`'s (None when every one is in `changes`) with `changes`.
    A period kept from `current` goes when no budget is left for it, as in a REST PATCH."""
    values = {name: getattr(current, name) for name in _LIMITS} if current is not None else {}
    values.update(changes)
    if (
        "budget_period" not in changes
        and values.get("budget_usd") is None
        and values.get("soft_budget_usd") is None
    ):
        values["budget_period"] = None
    return admin_v1.Limits(**{name: value for name, value in values.items() if value is not None})


def _seconds(value: Time) -> float:
    """Unix seconds from what the REST API's `expires_at` takes; a time without its offset is refused, as
    the REST API refuses it (which zone it meant is unknown)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("expires_at needs a time zone (2027-01-31T00:00:00+00:00).")
        return value.timestamp()
    return float(value)
