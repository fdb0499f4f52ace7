"""Choose the generation store adapter from `storage.url`."""

from __future__ import annotations

from llmgw.application.ports import GenerationStore
from llmgw.infrastructure.storage.memory import MemoryStore


def create_store(url: str) -> GenerationStore:
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("sqlite://"):
        from llmgw.infrastructure.storage.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from llmgw.infrastructure.storage.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported storage.url scheme: {url!r}")
