"""The admin use cases: keys and teams created, changed and listed, usage reports and the generations
listing read, every call written to the audit trail.

Both fronts and the CLI call these with the acting key's public id (`cli` for the command line) and the
fields as plain JSON values (the gRPC front converts its messages to them), so the rules on what a field
may hold live here once.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from llmgw.application import usage_report as reports
from llmgw.application.auth import Authenticator
from llmgw.application.limit_fields import LIMIT_FIELDS, changed_limits
from llmgw.application.limits import Limiter, LimitUsage
from llmgw.application.ports import GenerationStore, KeyStore
from llmgw.application.usage_report import UsageReport
from llmgw.domain.errors import GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import (
    PREFIX,
    ROTATION_GRACE_SECONDS,
    ApiKey,
    AuditEntry,
    Scope,
    Team,
    hash_secret,
    mint_key,
    new_audit_id,
    new_team_id,
)
from llmgw.domain.limits import NO_LIMITS, Limits, ScopeKind
from llmgw.domain.limits import Scope as LimitScope
from llmgw.domain.usage_report import GenerationQuery, UsageCounters, UsageQuery

T = TypeVar("T")

#: The CLI's name in audit rows.
CLI_ACTOR = "cli"
#: Who acts, in audit rows, when auth is off: nobody in particular.
ANONYMOUS_ACTOR = "anonymous"
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_MAX_NAME = 200
_MAX_METADATA = 32
_MAX_METADATA_TEXT = 500
_MAX_MODELS = 100
_KEY_FIELDS = frozenset(
    {"name", "scopes", "models", "team_id", "expires_at", "metadata", "disabled", *LIMIT_FIELDS}
)
_TEAM_FIELDS = frozenset({"name", "metadata", *LIMIT_FIELDS})


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_cursor` (the last item's id) asks for the next, "" when none is left."""

    items: Sequence[T]
    next_cursor: str = ""


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created or rotated: `text` is the full key, shown this once and never again."""

    key: ApiKey
    text: str


class Admin:
    """`rotation_grace` (seconds, `auth.rotation_grace`): how long a rotated key's old secret still works
    when the call does not say. `records`: the generation store the usage reports and the generations
    listing read; by default `store` itself when it keeps the records too, as the one store of the
    composition root does (keys and records share it, see DESIGN.md)."""

    def __init__(
        self,
        store: KeyStore,
        auth: Authenticator,
        *,
        records: GenerationStore | None = None,
        rotation_grace: float = ROTATION_GRACE_SECONDS,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._records = records if records is not None else _records_in(store)
        self._auth = auth
        self._grace = rotation_grace
        self._wall = wall

    # Keys

    async def create_key(self, actor: str, fields: Mapping[str, Any]) -> IssuedKey:
        async with self._audited(actor, "key.create", "", fields) as call:
            now = self._wall()
            values = await self._key_fields(fields, creating=True, now=now, limits=NO_LIMITS)
            text, presented = mint_key()
            key = ApiKey(
                public_id=presented.public_id,
                secret_hash=hash_secret(presented.secret, self._auth.pepper),
                created_at=now,
                **values,
            )
            call.target = key.public_id
            await self._store.put_key(key)
            return IssuedKey(key, text)

    async def get_key(self, actor: str, public_id: str) -> ApiKey:
        async with self._audited(actor, "key.get", public_id):
            return await self._key(public_id)

    async def list_keys(
        self, actor: str, *, after: str = "", limit: int | None = None, team_id: str | None = None
    ) -> Page[ApiKey]:
        async with self._audited(actor, "key.list", "", {"after": after, "limit": limit, "team_id": team_id}):
            size = _page_size(limit)
            keys = await self._store.list_keys(after=after, limit=size + 1, team_id=team_id)
            return _page(keys, size, lambda key: key.public_id)

    async def update_key(self, actor: str, public_id: str, fields: Mapping[str, Any]) -> ApiKey:
        async with self._audited(actor, "key.update", public_id, fields):
            key = await self._key(public_id)
            values = await self._key_fields(fields, creating=False, now=self._wall(), limits=key.limits)
            key = replace(key, **values)
            await self._store.put_key(key)
            await self._auth.changed(public_id)
            return key

    async def rotate_key(self, actor: str, public_id: str, *, grace: float | None = None) -> IssuedKey:
        """A new secret for the key; the old one keeps working for `grace` seconds (default
        `rotation_grace`; 0: stops at once)."""
        async with self._audited(actor, "key.rotate", public_id, {"grace_seconds": grace}):
            if grace is not None and (not math.isfinite(grace) or grace < 0):
                raise InvalidRequest(
                    "grace_seconds must be a number of seconds, 0 or more.", param="grace_seconds"
                )
            key = await self._key(public_id)
            # A new secret under the same public id: records and limits keep naming the same key.
            _, presented = mint_key()
            key = key.rotated(
                hash_secret(presented.secret, self._auth.pepper),
                self._wall(),
                self._grace if grace is None else grace,
            )
            await self._store.put_key(key)
            await self._auth.changed(public_id)
            return IssuedKey(key, f"{PREFIX}{public_id}-{presented.secret}")

    async def disable_key(self, actor: str, public_id: str) -> ApiKey:
        async with self._audited(actor, "key.disable", public_id):
            key = replace(await self._key(public_id), disabled=True)
            await self._store.put_key(key)
            await self._auth.changed(public_id)
            return key

    async def delete_key(self, actor: str, public_id: str) -> None:
        async with self._audited(actor, "key.delete", public_id):
            if not await self._store.delete_key(public_id):
                raise _key_not_found(public_id)
            await self._auth.changed(public_id)

    async def key_usage(self, actor: str, public_id: str, limiter: Limiter | None) -> LimitUsage:
        """What the key has used of its own limits now (not its team's: `team_usage`), from `limiter`'s
        store: the one the gateway counts in."""
        async with self._audited(actor, "key.usage", public_id):
            key = await self._key(public_id)
            return await _usage(limiter, LimitScope(ScopeKind.KEY, key.public_id, key.limits))

    async def _key(self, public_id: str) -> ApiKey:
        key = await self._store.get_key(public_id) if public_id else None
        if key is None:
            raise _key_not_found(public_id)
        return key

    async def _key_fields(
        self, fields: Mapping[str, Any], *, creating: bool, now: float, limits: Limits
    ) -> dict[str, Any]:
        """The key's fields from `fields`: all on creation, else those given; `limits` are the key's."""
        _known(fields, _KEY_FIELDS)
        values: dict[str, Any] = {}
        if creating or "name" in fields:
            values["name"] = _name(fields.get("name"))
        if "scopes" in fields:
            values["scopes"] = _scopes(fields["scopes"])
        if "models" in fields:
            values["models"] = _models(fields["models"])
        if "team_id" in fields:
            values["team_id"] = await self._team_id(fields["team_id"])
        if "expires_at" in fields:
            values["expires_at"] = _expiry(fields["expires_at"], now)
        if "metadata" in fields:
            values["metadata"] = _metadata(fields["metadata"])
        if "disabled" in fields:
            if creating or not isinstance(fields["disabled"], bool):
                raise InvalidRequest(
                    "disabled is true or false, and only on an existing key.", param="disabled"
                )
            values["disabled"] = fields["disabled"]
        if (changed := changed_limits(limits, fields)) is not None:
            values["limits"] = changed
        return values

    async def _team_id(self, value: Any) -> str:
        if value is None or value == "":
            return ""
        if not isinstance(value, str) or await self._store.get_team(value) is None:
            raise InvalidRequest(f"No team with id {value!r}.", param="team_id", code="team_not_found")
        return value

    # Teams

    async def create_team(self, actor: str, fields: Mapping[str, Any]) -> Team:
        async with self._audited(actor, "team.create", "", fields) as call:
            _known(fields, _TEAM_FIELDS)
            limits = changed_limits(NO_LIMITS, fields)
            team = Team(
                id=new_team_id(),
                name=_name(fields.get("name")),
                metadata=_metadata(fields.get("metadata", {})),
                limits=NO_LIMITS if limits is None else limits,
                created_at=self._wall(),
            )
            call.target = team.id
            await self._store.put_team(team)
            return team

    async def get_team(self, actor: str, team_id: str) -> Team:
        async with self._audited(actor, "team.get", team_id):
            return await self._team(team_id)

    async def list_teams(self, actor: str, *, after: str = "", limit: int | None = None) -> Page[Team]:
        async with self._audited(actor, "team.list", "", {"after": after, "limit": limit}):
            size = _page_size(limit)
            teams = await self._store.list_teams(after=after, limit=size + 1)
            return _page(teams, size, lambda team: team.id)

    async def update_team(self, actor: str, team_id: str, fields: Mapping[str, Any]) -> Team:
        async with self._audited(actor, "team.update", team_id, fields):
            _known(fields, _TEAM_FIELDS)
            team = await self._team(team_id)
            if "name" in fields:
                team = replace(team, name=_name(fields["name"]))
            if "metadata" in fields:
                team = replace(team, metadata=_metadata(fields["metadata"]))
            if (limits := changed_limits(team.limits, fields)) is not None:
                team = replace(team, limits=limits)
            await self._store.put_team(team)
            return team

    async def delete_team(self, actor: str, team_id: str) -> None:
        """Refused while keys still belong to the team: move or delete them first."""
        async with self._audited(actor, "team.delete", team_id):
            await self._team(team_id)
            if await self._store.list_keys(team_id=team_id, limit=1):
                raise InvalidRequest(
                    f"Team '{team_id}' still has keys; move or delete them first.", code="team_not_empty"
                )
            await self._store.delete_team(team_id)

    async def team_usage(self, actor: str, team_id: str, limiter: Limiter | None) -> LimitUsage:
        """What the team's keys have used together of the team's limits now (see `key_usage`)."""
        async with self._audited(actor, "team.usage", team_id):
            team = await self._team(team_id)
            return await _usage(limiter, LimitScope(ScopeKind.TEAM, team.id, team.limits))

    async def _team(self, team_id: str) -> Team:
        team = await self._store.get_team(team_id) if team_id else None
        if team is None:
            raise NotFound(f"Team '{team_id}' not found.", code="team_not_found", param="id")
        return team

    # Audit

    async def audit(self, actor: str, *, before: str = "", limit: int | None = None) -> Page[AuditEntry]:
        """The audit trail, newest first (this listing is written to it too, before it is read)."""
        async with self._audited(actor, "audit.list", "", {"before": before, "limit": limit}):
            size = _page_size(limit)
        entries = await self._store.list_audit(before=before, limit=size + 1)
        return _page(entries, size, lambda entry: entry.id)

    # Usage reports and the generations listing (see `usage_report` for who may read what)

    async def usage(
        self,
        actor: ApiKey | None,
        *,
        first_day: str | None = None,
        last_day: str | None = None,
        group_by: str | None = None,
        key_id: str = "",
        team_id: str = "",
        model: str = "",
        provider: str = "",
    ) -> UsageReport:
        """Usage of the UTC days `first_day`..`last_day` (YYYY-MM-DD, both included; default the 30 days
        to today), summed by `group_by` (comma-separated dimensions; default `day`; "" the totals only)
        from the usage rollups, never from the records."""
        asked: dict[str, object] = {"from": first_day, "to": last_day, "group_by": group_by, "key_id": key_id}
        asked |= {"team_id": team_id, "model": model, "provider": provider}
        async with self._audited(_actor_id(actor), "usage.read", "", asked):
            held = await reports.readable(actor, self._store, key_id=key_id, team_id=team_id)
            today = datetime.fromtimestamp(self._wall(), UTC).date()
            first, last = reports.report_days(first_day, last_day, today)
            dimensions = reports.dimensions(group_by)
            query = UsageQuery(
                since=reports.day_start(first),
                until=reports.day_start(last) + 86400,
                group_by=dimensions,
                key_id=held.key_id,
                team_id=held.team_id,
                model=model,
                provider=provider,
            )
            rows = sorted(
                await self._record_store().usage(query), key=lambda row: reports.sort_key(row, dimensions)
            )
            totals = UsageCounters()
            for row in rows:
                totals = totals.plus(row.counters)
            return UsageReport(first, last, dimensions, rows, totals)

    async def list_generations(
        self,
        actor: ApiKey | None,
        *,
        key_id: str = "",
        team_id: str = "",
        model: str = "",
        status: str = "",
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        after: str = "",
    ) -> Page[GenerationRecord]:
        """Stored records newest first, a page at a time (`after`: the previous page's `next_cursor`),
        created in [since, until) (Unix seconds, RFC 3339 or a UTC day). Records still waiting in a
        recorder's buffer are not listed yet: its writer stores them within ~10 ms."""
        asked: dict[str, object] = {"key_id": key_id, "team_id": team_id, "model": model, "status": status}
        asked |= {"from": since, "to": until, "limit": limit, "after": after}
        async with self._audited(_actor_id(actor), "generation.list", "", asked):
            held = await reports.readable(actor, self._store, key_id=key_id, team_id=team_id)
            size = reports.listing_page(limit)
            query = GenerationQuery(
                limit=size + 1,
                before=after,
                key_id=held.key_id,
                team_id=held.team_id,
                model=model,
                status=reports.status(status),
                since=reports.instant(since, "from"),
                until=reports.instant(until, "to"),
            )
            found = await self._record_store().list_generations(query)
            return _page(found, size, lambda record: record.id)

    def _record_store(self) -> GenerationStore:
        if self._records is None:
            raise ServiceUnavailable(
                "Usage reports are not set up on this gateway.", code="usage_unavailable"
            )
        return self._records

    @asynccontextmanager
    async def _audited(
        self, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> AsyncIterator[_Call]:
        """Write the call's audit row once it ended, whatever ended it: a refused call's row names the
        fields it was given and why it was refused (`error`, the error's code)."""
        call = _Call(target)
        recorded: dict[str, object] = dict(details or {})
        try:
            yield call
        except GatewayError as exc:
            # Values that were refused may be anything the client sent: their names only.
            recorded = {"fields": sorted(str(name)[:_MAX_NAME] for name in list(recorded)[:_MAX_METADATA])}
            recorded["error"] = exc.code
            raise
        finally:
            now = self._wall()
            entry = AuditEntry(
                id=new_audit_id(now), at=now, actor=actor, action=action, target=call.target, details=recorded
            )
            await self._store.add_audit(entry)


class _Call:
    """What an audited call learns while it runs: the id of what it created."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        self.target = target


def _actor_id(actor: ApiKey | None) -> str:
    return actor.public_id if actor is not None else ANONYMOUS_ACTOR


def _records_in(store: KeyStore) -> GenerationStore | None:
    """`store` as the generation store too, when it is one (see `Admin`)."""
    if all(callable(getattr(store, name, None)) for name in ("usage", "list_generations", "put_many")):
        return cast(GenerationStore, store)
    return None


async def _usage(limiter: Limiter | None, scope: LimitScope) -> LimitUsage:
    if limiter is None:
        raise ServiceUnavailable("Limits are not counted on this gateway.", code="limits_unavailable")
    return await limiter.usage(scope)


def _key_not_found(public_id: str) -> NotFound:
    return NotFound(f"API key '{public_id}' not found.", code="key_not_found", param="id")


def _page(items: list[T], size: int, cursor: Callable[[T], str]) -> Page[T]:
    if len(items) > size:
        items = items[:size]
        return Page(items, cursor(items[-1]))
    return Page(items)


def _page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit is a whole number from 1 to {MAX_PAGE}.", param="limit")
    return limit


def _known(fields: Mapping[str, Any], known: frozenset[str]) -> None:
    for name in fields:
        if name not in known:
            raise InvalidRequest(
                f"Unknown field '{name}'; expected some of: {', '.join(sorted(known))}.", param=name
            )


def _name(value: Any) -> str:
    """A key's or team's name: given whenever the field is (a null name is refused, not emptied)."""
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME or not value.isprintable():
        raise InvalidRequest(f"name is a line of text of 1 to {_MAX_NAME} characters.", param="name")
    return value


def _scopes(value: Any) -> frozenset[Scope]:
    names = [scope.value for scope in Scope]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"scopes is a non-empty list of: {', '.join(names)}.", param="scopes")
    scopes = set()
    for item in value:
        try:
            scopes.add(Scope(item))
        except ValueError:
            raise InvalidRequest(
                f"Unknown scope {item!r}; expected some of: {', '.join(names)}.", param="scopes"
            ) from None
    return frozenset(scopes)


def _models(value: Any) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) > _MAX_MODELS
        or not all(isinstance(item, str) and item and item.isprintable() for item in value)
    ):
        raise InvalidRequest(
            "models is a list of model ids or glob patterns (`gpt-4o*`, `dashscope/*`); empty: every model.",
            param="models",
        )
    return tuple(value)


def _expiry(value: Any, now: float) -> float | None:
    """None (never), Unix seconds, or an ISO 8601 time with its offset; not in the past."""
    if value is None:
        return None
    at: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        at = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            at = parsed.timestamp()
    if at is None:
        raise InvalidRequest(
            "expires_at is null, Unix seconds, or an ISO 8601 time with its offset (2027-01-31T00:00:00Z).",
            param="expires_at",
        )
    if at <= now:
        raise InvalidRequest("expires_at is in the past.", param="expires_at")
    return at


def _metadata(value: Any) -> dict[str, str]:
    if (
        not isinstance(value, dict)
        or len(value) > _MAX_METADATA
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= _MAX_NAME and len(v) <= _MAX_METADATA_TEXT
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            f"metadata is an object of at most {_MAX_METADATA} text values "
            f"(keys up to {_MAX_NAME} characters, values up to {_MAX_METADATA_TEXT}).",
            param="metadata",
        )
    return dict(value)
