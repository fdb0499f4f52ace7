"""Choose the generation store adapter from `storage.url`."""

from __future__ import annotations

from llmgw.application.ports import GenerationStore
from llmgw.infrastructure.storage.memory import MemoryStore


def create_store(url: str, *, timeout: float = 2.0) -> GenerationStore:
    """`timeout` (`storage.timeout`) goes to adapters with calls of their own to bound (Postgres); the
    recorder and the composition root bound every call of every adapter as well."""
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("sqlite://"):
        from llmgw.infrastructure.storage.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from llmgw.infrastructure.storage.postgres import PostgresStore

        return PostgresStore(url, timeout=timeout)
    raise ValueError(f"unsupported storage.url scheme: {url!r}")
