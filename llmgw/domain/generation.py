"""The generation record: what one chat or embeddings request did and cost."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass


class GenerationKind(enum.Enum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"


class GenerationStatus(enum.Enum):
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


def new_generation_id() -> str:
    """A gateway-minted id, OpenRouter-style `gen-…`: 12 hex digits of Unix milliseconds, then 16 random.

    Ids minted later sort later, so stores append to their index instead of writing all over it;
    the 64 random bits keep ids unguessable.
    """
    return f"gen-{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """One request's record; times are Unix seconds, durations milliseconds, cost USD."""

    id: str
    request_id: str
    kind: GenerationKind
    model: str
    provider: str
    upstream_model: str
    created_at: float
    streamed: bool
    status: GenerationStatus
    upstream_id: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    error_code: str = ""
    error_message: str = ""
    user: str = ""
