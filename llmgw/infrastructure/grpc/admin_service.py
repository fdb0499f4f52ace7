"""The gRPC admin front: `AdminService` handlers translating protobuf onto the `Admin` use cases.

Requests arrive as upb messages (the server's codec decodes them, see `upb_codec`), hence `Any`: unset
`optional` and wrapper fields are told by `HasField`, and only set fields reach an update, as the keys
of a REST PATCH body do. Answers mirror `admin_json`'s shapes, the REST front's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpclib.const import Handler

from llmgw.application.admin import ANONYMOUS_ACTOR, Admin, IssuedKey
from llmgw.application.gateway import Gateway
from llmgw.application.limit_fields import LIMIT_FIELDS
from llmgw.application.limits import LimitUsage
from llmgw.application.usage_report import UsageReport
from llmgw.domain.errors import ServiceUnavailable
from llmgw.domain.keys import ApiKey, AuditEntry, Scope, Team
from llmgw.infrastructure.admin_json import (
    audit_json,
    key_json,
    limits_json,
    team_json,
    usage_json,
    usage_report_json,
)
from llmgw.infrastructure.grpc.errors import mapped_errors
from llmgw.infrastructure.grpc.generation import generation_to_proto
from llmgw.infrastructure.grpc.handlers import Gate, current_caller, with_ids
from llmgw.infrastructure.grpc.messages import admin_v1, pb
from llmgw.infrastructure.tracing import tracing_of


class AdminService(admin_v1.AdminServiceBase):
    """Every RPC needs the `admin` scope but the two readers of usage and records, which any valid key
    may call (`Admin` decides what it may read); each is one call of `Admin`, acted by the caller's key."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def __mapping__(self) -> dict[str, Handler]:
        gate = Gate(self._gateway.auth, _admin_scope, tracing_of(self._gateway.observers))
        return with_ids(self, super().__mapping__(), gate)

    def _admin(self) -> tuple[Admin, str]:
        admin = self._gateway.admin
        if admin is None:
            raise ServiceUnavailable("The admin API is not set up on this gateway.", code="admin_unavailable")
        caller = current_caller.get()
        return admin, caller.public_id if caller is not None else ANONYMOUS_ACTOR

    async def create_key(self, message: Any) -> admin_v1.CreateKeyResponse:
        with mapped_errors():
            admin, actor = self._admin()
            issued = await admin.create_key(actor, _new_key_fields(message))
            return admin_v1.CreateKeyResponse(**_issued(issued))

    async def list_keys(self, message: Any) -> admin_v1.ListKeysResponse:
        with mapped_errors():
            admin, actor = self._admin()
            team_id = message.team_id if message.HasField("team_id") else None
            page = await admin.list_keys(
                actor, after=message.after, limit=message.limit or None, team_id=team_id
            )
            return admin_v1.ListKeysResponse(
                data=[_key(key) for key in page.items],
                has_more=bool(page.next_cursor),
                next_cursor=page.next_cursor,
            )

    async def get_key(self, message: Any) -> admin_v1.ApiKey:
        with mapped_errors():
            admin, actor = self._admin()
            return _key(await admin.get_key(actor, message.id))

    async def get_key_usage(self, message: Any) -> admin_v1.Usage:
        with mapped_errors():
            admin, actor = self._admin()
            return _usage(await admin.key_usage(actor, message.id, self._gateway.limiter))

    async def update_key(self, message: Any) -> admin_v1.ApiKey:
        with mapped_errors():
            admin, actor = self._admin()
            return _key(await admin.update_key(actor, message.id, _changed_key_fields(message)))

    async def delete_key(self, message: Any) -> admin_v1.DeleteKeyResponse:
        with mapped_errors():
            admin, actor = self._admin()
            await admin.delete_key(actor, message.id)
            return admin_v1.DeleteKeyResponse(id=message.id, deleted=True)

    async def rotate_key(self, message: Any) -> admin_v1.RotateKeyResponse:
        with mapped_errors():
            admin, actor = self._admin()
            grace = message.grace_seconds if message.HasField("grace_seconds") else None
            issued = await admin.rotate_key(actor, message.id, grace=grace)
            return admin_v1.RotateKeyResponse(**_issued(issued))

    async def disable_key(self, message: Any) -> admin_v1.ApiKey:
        with mapped_errors():
            admin, actor = self._admin()
            return _key(await admin.disable_key(actor, message.id))

    async def create_team(self, message: Any) -> admin_v1.Team:
        with mapped_errors():
            admin, actor = self._admin()
            fields: dict[str, Any] = {"name": message.name}
            if message.metadata:
                fields["metadata"] = dict(message.metadata)
            if message.HasField("limits"):
                fields.update(_limit_fields(message.limits, every=False))
            return _team(await admin.create_team(actor, fields))

    async def list_teams(self, message: Any) -> admin_v1.ListTeamsResponse:
        with mapped_errors():
            admin, actor = self._admin()
            page = await admin.list_teams(actor, after=message.after, limit=message.limit or None)
            return admin_v1.ListTeamsResponse(
                data=[_team(team) for team in page.items],
                has_more=bool(page.next_cursor),
                next_cursor=page.next_cursor,
            )

    async def get_team(self, message: Any) -> admin_v1.Team:
        with mapped_errors():
            admin, actor = self._admin()
            return _team(await admin.get_team(actor, message.id))

    async def get_team_usage(self, message: Any) -> admin_v1.Usage:
        with mapped_errors():
            admin, actor = self._admin()
            return _usage(await admin.team_usage(actor, message.id, self._gateway.limiter))

    async def update_team(self, message: Any) -> admin_v1.Team:
        with mapped_errors():
            admin, actor = self._admin()
            fields: dict[str, Any] = {}
            if message.HasField("name"):
                fields["name"] = message.name
            if message.HasField("metadata"):
                fields["metadata"] = dict(message.metadata.values)
            if message.HasField("limits"):
                fields.update(_limit_fields(message.limits, every=True))
            return _team(await admin.update_team(actor, message.id, fields))

    async def delete_team(self, message: Any) -> admin_v1.DeleteTeamResponse:
        with mapped_errors():
            admin, actor = self._admin()
            await admin.delete_team(actor, message.id)
            return admin_v1.DeleteTeamResponse(id=message.id, deleted=True)

    async def list_audit(self, message: Any) -> admin_v1.ListAuditResponse:
        with mapped_errors():
            admin, actor = self._admin()
            page = await admin.audit(actor, before=message.before, limit=message.limit or None)
            return admin_v1.ListAuditResponse(
                data=[_audit(entry) for entry in page.items],
                has_more=bool(page.next_cursor),
                next_cursor=page.next_cursor,
            )

    async def get_usage(self, message: Any) -> admin_v1.UsageReport:
        with mapped_errors():
            admin, _ = self._admin()
            report = await admin.usage(
                current_caller.get(),
                first_day=getattr(message, "from") or None,
                last_day=message.to or None,
                group_by=message.group_by if message.HasField("group_by") else None,
                key_id=message.key_id,
                team_id=message.team_id,
                model=message.model,
                provider=message.provider,
            )
            return _usage_report(report)

    async def list_generations(self, message: Any) -> admin_v1.ListGenerationsResponse:
        with mapped_errors():
            admin, _ = self._admin()
            page = await admin.list_generations(
                current_caller.get(),
                key_id=message.key_id,
                team_id=message.team_id,
                model=message.model,
                status=message.status,
                since=getattr(message, "from") or None,
                until=message.to or None,
                limit=message.limit or None,
                after=message.after,
            )
            return admin_v1.ListGenerationsResponse(
                data=[generation_to_proto(record) for record in page.items],
                has_more=bool(page.next_cursor),
                next_cursor=page.next_cursor,
            )


# What any valid key may call: who reads what is the use case's rule.
_OWN_RULE_RPCS = frozenset({"GetUsage", "ListGenerations"})


def _admin_scope(rpc: str) -> Scope | None:
    return None if rpc in _OWN_RULE_RPCS else Scope.ADMIN


def _usage_report(report: UsageReport) -> admin_v1.UsageReport:
    """`usage_report_json`'s object as a message: a row's dimensions set only when grouped by."""
    shown = usage_report_json(report)
    return admin_v1.UsageReport(
        from_=shown["from"],
        to=shown["to"],
        group_by=shown["group_by"],
        data=[admin_v1.UsageReportRow(**row) for row in shown["data"]],
        totals=admin_v1.UsageTotals(**shown["totals"]),
    )


def _new_key_fields(message: Any) -> dict[str, Any]:
    """A CreateKeyRequest as `Admin.create_key`'s fields: empty lists, maps and ids (and an expiry of 0)
    are the defaults, so they are left out."""
    fields: dict[str, Any] = {"name": message.name}
    if message.team_id:
        fields["team_id"] = message.team_id
    if message.scopes:
        fields["scopes"] = list(message.scopes)
    if message.models:
        fields["models"] = list(message.models)
    if message.HasField("expires_at") and message.expires_at != 0:
        fields["expires_at"] = message.expires_at
    if message.metadata:
        fields["metadata"] = dict(message.metadata)
    if message.HasField("limits"):
        fields.update(_limit_fields(message.limits, every=False))
    return fields


def _changed_key_fields(message: Any) -> dict[str, Any]:
    """An UpdateKeyRequest as `Admin.update_key`'s fields: those set, and only those (an expiry of 0: never)."""
    fields: dict[str, Any] = {}
    for name in ("name", "team_id", "disabled"):
        if message.HasField(name):
            fields[name] = getattr(message, name)
    for name in ("scopes", "models"):
        if message.HasField(name):
            fields[name] = list(getattr(message, name).values)
    if message.HasField("expires_at"):
        fields["expires_at"] = message.expires_at or None
    if message.HasField("metadata"):
        fields["metadata"] = dict(message.metadata.values)
    if message.HasField("limits"):
        fields.update(_limit_fields(message.limits, every=True))
    return fields


def _limit_fields(limits: Any, *, every: bool) -> dict[str, Any]:
    """A `Limits` message as the use cases' limit fields: those set; with `every` (an update, which
    replaces the limits wholesale) the unset ones too, as nulls that clear them."""
    return {
        name: getattr(limits, name) if limits.HasField(name) else None
        for name in LIMIT_FIELDS
        if every or limits.HasField(name)
    }


def _key(key: ApiKey) -> admin_v1.ApiKey:
    shown = key_json(key)
    return admin_v1.ApiKey(
        id=shown["id"],
        name=shown["name"],
        team_id=shown["team_id"] or "",
        scopes=shown["scopes"],
        models=shown["models"],
        expires_at=shown["expires_at"],
        disabled=shown["disabled"],
        metadata=shown["metadata"],
        created_at=shown["created_at"],
        last_used_at=shown["last_used_at"],
        previous_secret_valid_until=shown["previous_secret_valid_until"],
        limits=admin_v1.Limits(**limits_json(key.limits)),
    )


def _issued(issued: IssuedKey) -> Mapping[str, Any]:
    return {"key_info": _key(issued.key), "key": issued.text}


def _team(team: Team) -> admin_v1.Team:
    shown = team_json(team)
    return admin_v1.Team(
        id=shown["id"],
        name=shown["name"],
        metadata=shown["metadata"],
        created_at=shown["created_at"],
        limits=admin_v1.Limits(**limits_json(team.limits)),
    )


def _usage(usage: LimitUsage) -> admin_v1.Usage:
    """`usage_json`'s object as a message: each null part unset."""
    shown = usage_json(usage)
    requests, tokens, budget = shown["requests"], shown["tokens"], shown["budget"]
    return admin_v1.Usage(
        key_id=shown.get("key_id", ""),
        team_id=shown.get("team_id", ""),
        at=shown["at"],
        limits=admin_v1.Limits(**shown["limits"]),
        requests=None if requests is None else admin_v1.RateUsage(**requests),
        tokens=None if tokens is None else admin_v1.RateUsage(**tokens),
        in_flight=shown["in_flight"],
        budget=None if budget is None else admin_v1.BudgetUsage(**budget),
    )


def _audit(entry: AuditEntry) -> admin_v1.AuditEntry:
    shown = audit_json(entry)
    return admin_v1.AuditEntry(
        id=shown["id"],
        at=shown["at"],
        actor=shown["actor"],
        action=shown["action"],
        target=shown["target"] or "",
        details=pb.Struct.from_dict(shown["details"]),
    )
