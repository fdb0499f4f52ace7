"""Generation records: what a request cost and how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmgw_client.types._base import _merged, _Result


@dataclass(slots=True, kw_only=True)
class GenerationAttempt(_Result):
    """One try of a request at one deployment; `outcome` is completed, error or cancelled."""

    provider: str = ""
    upstream_model: str = ""
    model: str = ""
    outcome: str = ""
    error_code: str = ""
    duration_ms: float = 0.0
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "model": self.model,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "duration_ms": self.duration_ms,
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class Generation(_Result):
    """What one chat or embeddings request did and cost, as `GET /v1/generation/{id}` answers it (its
    `"generation"` object). Text the request may lack is None when empty, as over REST; `status` is
    completed, error or cancelled. `request_id` is the recorded request's id (the record's field), not
    this lookup's. `limits` names the limit scopes the request was admitted under (`key:<id>`,
    `team:<id>`, `model:<id>`, `global`), empty when none applied."""

    id: str
    request_id: str | None = None
    kind: str = ""
    model: str = ""
    provider: str = ""
    upstream_model: str = ""
    created_at: datetime | None = None
    streamed: bool = False
    status: str = ""
    upstream_id: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    user: str | None = None
    attempts: list[GenerationAttempt] = field(default_factory=list)
    key_id: str | None = None
    team_id: str | None = None
    limits: list[str] = field(default_factory=list)
    #: the W3C trace id of the request's server span (None: the gateway traced nothing)
    trace_id: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "request_id": self.request_id,
            "kind": self.kind,
            "model": self.model,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "created_at": _iso(self.created_at),
            "streamed": self.streamed,
            "status": self.status,
            "upstream_id": self.upstream_id,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "user": self.user,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "key_id": self.key_id,
            "team_id": self.team_id,
            "limits": list(self.limits),
            "trace_id": self.trace_id,
        }
        return _merged(out, self.model_extra)


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as the REST front writes `created_at`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
