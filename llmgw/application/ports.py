"""Ports: what the use cases need from the outside world, as protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from llmgw.domain.catalog import ModelSpec
from llmgw.domain.chat import (
    ChatCompletion,
    ChatRequest,
    Embeddings,
    EmbeddingsRequest,
    JSONObject,
)
from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.domain.limits import Admission, Demand, Scope, ScopeStatus
from llmgw.domain.usage_report import GenerationQuery, UsageQuery, UsageRow


class Provider(Protocol):
    """One configured upstream. Adapters raise only `GatewayError`s.

    Each call is bounded by the provider's own `timeout` and by `deadline` (the request's, across all its
    attempts, on the event loop's clock), whichever comes first; running out of time is `UpstreamTimeout`.
    """

    @property
    def name(self) -> str: ...

    @property
    def has_credentials(self) -> bool: ...

    async def complete(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> ChatCompletion:
        """Answer a chat request in one piece; `model.upstream_model` is what the upstream is asked for."""
        ...

    def stream(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> AsyncIterator[list[JSONObject]]:
        """Stream chat chunks (OpenAI JSON objects, the usage chunk included) until the upstream's stream
        ends, in the groups they arrived in: one chunk per item from an upstream that writes each
        alone, several where its writes arrived together (as they do under load), which a front can
        then send in one write. Closes the upstream on exit."""
        ...

    async def embed(
        self, model: ModelSpec, request: EmbeddingsRequest, *, deadline: float | None = None
    ) -> Embeddings: ...


class GenerationStore(Protocol):
    """Durable generation records. Writes come in batches from one background writer."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema."""
        ...

    async def close(self) -> None: ...

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        """Insert the records, or replace those with the same id, and add the newly inserted ones (only
        those: a batch written again after a write that timed out but landed counts once) to the usage
        rollups, in the same transaction."""
        ...

    async def get(self, generation_id: str) -> GenerationRecord | None: ...

    async def prune(self, older_than: float) -> int:
        """Delete records created before `older_than` (Unix seconds); return how many."""
        ...

    async def spend(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        """What the records created in [since, until) that match every non-empty filter cost, in micro-USD:
        each record's `cost_usd` rounded as settling rounds it (`usd_to_micros`), then summed, so the sum
        is what the budget counters were charged (rebuilding them after a Redis restart)."""
        ...

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        """The usage rollups of the query's hours summed by its dimensions, in no particular order; reads
        the rollups only, never the records (pruning records leaves the rollups whole)."""
        ...

    async def list_generations(self, query: GenerationQuery) -> list[GenerationRecord]:
        """At most `query.limit` stored records, newest first (by id)."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...


class KeyStore(Protocol):
    """API keys, teams and the admin audit trail, in the same store as the generation records.

    Listings are ordered by id and paged by cursor: `after` is the last id of the previous page ("" for
    the first); the audit trail is ordered newest first, `before` the last id of the previous page."""

    async def get_key(self, public_id: str) -> ApiKey | None: ...

    async def put_key(self, key: ApiKey) -> None:
        """Insert the key, or replace the one with its public id."""
        ...

    async def delete_key(self, public_id: str) -> bool:
        """Delete the key; False when there was none."""
        ...

    async def list_keys(
        self, *, after: str = "", limit: int = 100, team_id: str | None = None
    ) -> list[ApiKey]: ...

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        """Set each key's `last_used_at` (public id -> Unix seconds) where it is later than the stored one."""
        ...

    async def get_team(self, team_id: str) -> Team | None: ...

    async def put_team(self, team: Team) -> None: ...

    async def delete_team(self, team_id: str) -> bool: ...

    async def list_teams(self, *, after: str = "", limit: int = 100) -> list[Team]: ...

    async def add_audit(self, entry: AuditEntry) -> None: ...

    async def list_audit(self, *, before: str = "", limit: int = 100) -> list[AuditEntry]: ...


class Revocations(Protocol):
    """Tells the other replicas at once that a key changed (disabled, deleted, rotated, re-scoped), so they
    drop it from their caches instead of waiting out the TTL."""

    async def publish(self, public_id: str) -> None: ...


class LimitStore(Protocol):
    """The counters behind limits and budgets: per process, or shared by every worker and replica (Redis).
    Raises `LimitStoreUnavailable` when it cannot be reached."""

    async def admit(self, scopes: Sequence[Scope], demand: Demand, now: float) -> Admission:
        """Check `demand` against every scope's limits and, only if all pass, reserve it in all of them,
        in one atomic step."""
        ...

    async def settle(
        self, scopes: Sequence[Scope], demand: Demand, actual: Demand, now: float, *, reached_upstream: bool
    ) -> None:
        """The request ended: its reservation is replaced by `actual` (tokens and micros from its record);
        one that never reached an upstream gives it back (its request still counts). Always frees its
        parallel slot."""
        ...

    async def status(self, scope: Scope, now: float) -> ScopeStatus:
        """What a scope has used and has left now (the usage API)."""
        ...

    async def restore(self, scope: Scope, now: float, spent_micros: int) -> None:
        """The scope's budget window at `now` has spent at least `spent_micros` (read from the generation
        records): its counter becomes the larger of the two. Never lowers a counter, so it is idempotent
        and safe when several processes restore at once; a scope that tracks no budget is left alone."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
