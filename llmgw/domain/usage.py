"""Token usage and its cost: read from OpenAI-shaped `usage` objects, priced from the catalog."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmgw.domain.catalog import Pricing

_PER_MILLION = 1_000_000


@dataclass(slots=True)  # not frozen: built per request (see GenerationRecord)
class Usage:
    """Tokens of one request. `cost` is USD as the upstream reported it, if it did."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> Usage:
        """Read OpenAI's `usage` object, with OpenRouter's `cost` and both detail objects."""
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        total = _int(usage.get("total_tokens")) or prompt + completion
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        cost = usage.get("cost")
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cached_tokens=_int(prompt_details.get("cached_tokens"))
            if isinstance(prompt_details, dict)
            else 0,
            reasoning_tokens=(
                _int(completion_details.get("reasoning_tokens"))
                if isinstance(completion_details, dict)
                else 0
            ),
            cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
        )

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost=cost,
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def price(usage: Usage, pricing: Pricing | None) -> float | None:
    """USD for `usage`: the upstream's own figure first, then the price table, else None (unknown, not 0).

    Cached prompt tokens are billed at `cached_prompt` (prompt price when unset). Reasoning tokens are
    part of the completion tokens upstreams report, so they are billed at the completion price once.
    """
    if usage.cost is not None:
        return usage.cost
    if pricing is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = pricing.cached_prompt if pricing.cached_prompt is not None else pricing.prompt
    return (
        (usage.prompt_tokens - cached) * pricing.prompt
        + cached * cached_price
        + usage.completion_tokens * pricing.completion
    ) / _PER_MILLION
