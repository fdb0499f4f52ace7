"""The rate-limit headers of an answer to a limited request (REST headers, gRPC metadata), OpenAI's names:
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, and `x-llmgw-budget-remaining-usd` where a budget
applies (`x-llmgw-budget-soft-exceeded: true` past a soft budget).

Each group describes the tightest scope the request counts against: of the key, its team, the model and
the gateway, the one with the fewest requests left (the fewest tokens, the least budget).
Resets are seconds, with an `s` (`"0.5s"`, `"60s"`), the shortest OpenAI's format allows.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmgw.application.limits import Admitted
from llmgw.domain.errors import GatewayError
from llmgw.domain.limits import ScopeStatus, micros_to_usd

LIMIT_REQUESTS = "x-ratelimit-limit-requests"
REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
RESET_REQUESTS = "x-ratelimit-reset-requests"
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
RESET_TOKENS = "x-ratelimit-reset-tokens"
BUDGET_REMAINING = "x-llmgw-budget-remaining-usd"
BUDGET_SOFT_EXCEEDED = "x-llmgw-budget-soft-exceeded"


def admitted_headers(admitted: Admitted | None) -> dict[str, str]:
    """The headers of an answer to a request admitted with `admitted` (none when no limit applied)."""
    return {} if admitted is None else limit_headers(admitted.statuses)


def refusal_headers(exc: GatewayError) -> dict[str, str]:
    """The headers of an error answer: a limit's refusal, or another error of a limited request."""
    statuses = exc.limit_statuses
    return limit_headers([s for s in statuses if isinstance(s, ScopeStatus)]) if statuses else {}


def limit_headers(statuses: Sequence[ScopeStatus]) -> dict[str, str]:
    """The headers for an answer whose request was admitted (or refused) with `statuses`."""
    headers: dict[str, str] = {}
    requests = _tightest(statuses, "remaining_requests")
    if requests is not None and requests.scope.limits.rpm is not None:
        headers[LIMIT_REQUESTS] = str(requests.scope.limits.rpm)
        headers[REMAINING_REQUESTS] = str(max(0, requests.remaining_requests or 0))
        headers[RESET_REQUESTS] = _seconds(requests.reset_requests)
    tokens = _tightest(statuses, "remaining_tokens")
    if tokens is not None and tokens.scope.limits.tpm is not None:
        headers[LIMIT_TOKENS] = str(tokens.scope.limits.tpm)
        headers[REMAINING_TOKENS] = str(max(0, tokens.remaining_tokens or 0))
        headers[RESET_TOKENS] = _seconds(tokens.reset_tokens)
    budget = _tightest(statuses, "remaining_micros")
    if budget is not None and budget.remaining_micros is not None:
        headers[BUDGET_REMAINING] = f"{micros_to_usd(max(0, budget.remaining_micros)):.6f}"
    if any(status.soft_exceeded for status in statuses):
        headers[BUDGET_SOFT_EXCEEDED] = "true"
    return headers


def _tightest(statuses: Sequence[ScopeStatus], field: str) -> ScopeStatus | None:
    best: ScopeStatus | None = None
    best_left: int | None = None
    for status in statuses:
        left = getattr(status, field)
        if left is not None and (best_left is None or left < best_left):
            best, best_left = status, left
    return best


def _seconds(value: float | None) -> str:
    seconds = max(0.0, value or 0.0)
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
