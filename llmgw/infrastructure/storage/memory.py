"""An in-process store (`memory://`) of generation records, their usage rollups, API keys, teams and the
audit trail: for tests and throwaway runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.domain.limits import usd_to_micros
from llmgw.domain.usage_report import (
    SECONDS_PER_DAY,
    Dimension,
    GenerationQuery,
    RollupKey,
    UsageCounters,
    UsageQuery,
    UsageRow,
    rollup_deltas,
    usage_row,
)


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[str, GenerationRecord] = {}
        self._rollups: dict[RollupKey, UsageCounters] = {}
        self._keys: dict[str, ApiKey] = {}
        self._teams: dict[str, Team] = {}
        self._audit: dict[str, AuditEntry] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        new = {record.id: record for record in records if record.id not in self._records}
        for record in records:
            self._records[record.id] = record
        for key, delta in rollup_deltas(list(new.values())):
            known = self._rollups.get(key)
            self._rollups[key] = delta if known is None else known.plus(delta)

    async def get(self, generation_id: str) -> GenerationRecord | None:
        return self._records.get(generation_id)

    async def prune(self, older_than: float) -> int:
        old = [key for key, record in self._records.items() if record.created_at < older_than]
        for key in old:
            del self._records[key]
        return len(old)

    async def spend(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        return sum(
            usd_to_micros(record.cost_usd)
            for record in self._records.values()
            if record.cost_usd is not None
            and since <= record.created_at < until
            and (not key_id or record.key_id == key_id)
            and (not team_id or record.team_id == team_id)
            and (not model or record.model == model)
        )

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        groups: dict[tuple[object, ...], UsageCounters] = {}
        wanted = (query.key_id, query.team_id, query.model, query.provider)
        for key, counters in self._rollups.items():
            hour, *names = key
            if not query.since <= hour < query.until:
                continue
            if any(want and want != name for want, name in zip(wanted, names, strict=True)):
                continue
            group = tuple(_dimension(key, dimension) for dimension in query.group_by)
            known = groups.get(group)
            groups[group] = counters if known is None else known.plus(counters)
        return [usage_row(query.group_by, group, counters) for group, counters in groups.items()]

    async def list_generations(self, query: GenerationQuery) -> list[GenerationRecord]:
        found = []
        for generation_id in sorted(self._records, reverse=True):
            record = self._records[generation_id]
            if (
                (not query.before or generation_id < query.before)
                and (not query.key_id or record.key_id == query.key_id)
                and (not query.team_id or record.team_id == query.team_id)
                and (not query.model or record.model == query.model)
                and (query.status is None or record.status is query.status)
                and (query.since is None or record.created_at >= query.since)
                and (query.until is None or record.created_at < query.until)
            ):
                found.append(record)
                if len(found) >= query.limit:
                    break
        return found

    async def ping(self) -> bool:
        return True

    async def get_key(self, public_id: str) -> ApiKey | None:
        return self._keys.get(public_id)

    async def put_key(self, key: ApiKey) -> None:
        self._keys[key.public_id] = key

    async def delete_key(self, public_id: str) -> bool:
        return self._keys.pop(public_id, None) is not None

    async def list_keys(
        self, *, after: str = "", limit: int = 100, team_id: str | None = None
    ) -> list[ApiKey]:
        listed = [key for public_id, key in sorted(self._keys.items()) if public_id > after]
        return [key for key in listed if team_id is None or key.team_id == team_id][:limit]

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        for public_id, at in used.items():
            key = self._keys.get(public_id)
            if key is not None and (key.last_used_at is None or key.last_used_at < at):
                self._keys[public_id] = dataclasses.replace(key, last_used_at=at)

    async def get_team(self, team_id: str) -> Team | None:
        return self._teams.get(team_id)

    async def put_team(self, team: Team) -> None:
        self._teams[team.id] = team

    async def delete_team(self, team_id: str) -> bool:
        return self._teams.pop(team_id, None) is not None

    async def list_teams(self, *, after: str = "", limit: int = 100) -> list[Team]:
        return [team for team_id, team in sorted(self._teams.items()) if team_id > after][:limit]

    async def add_audit(self, entry: AuditEntry) -> None:
        self._audit[entry.id] = entry

    async def list_audit(self, *, before: str = "", limit: int = 100) -> list[AuditEntry]:
        newest_first = sorted(self._audit.items(), reverse=True)
        return [entry for entry_id, entry in newest_first if not before or entry_id < before][:limit]


def _dimension(key: RollupKey, dimension: Dimension) -> object:
    hour, key_id, team_id, model, provider = key
    return {
        Dimension.DAY: hour - hour % SECONDS_PER_DAY,
        Dimension.HOUR: hour,
        Dimension.KEY: key_id,
        Dimension.TEAM: team_id,
        Dimension.MODEL: model,
        Dimension.PROVIDER: provider,
    }[dimension]
