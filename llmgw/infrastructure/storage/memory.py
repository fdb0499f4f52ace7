"""An in-process store (`memory://`) of generation records, API keys, teams and the audit trail: for
tests and throwaway runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.domain.limits import usd_to_micros


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[str, GenerationRecord] = {}
        self._keys: dict[str, ApiKey] = {}
        self._teams: dict[str, Team] = {}
        self._audit: dict[str, AuditEntry] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        for record in records:
            self._records[record.id] = record

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
