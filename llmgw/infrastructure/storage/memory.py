"""An in-process generation store (`memory://`): for tests and throwaway runs."""

from __future__ import annotations

from collections.abc import Sequence

from llmgw.domain.generation import GenerationRecord


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[str, GenerationRecord] = {}

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

    async def ping(self) -> bool:
        return True
