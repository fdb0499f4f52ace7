"""Request and generation ids: taken from the client or minted, kept in context variables for that request."""

from __future__ import annotations

import contextvars
import random
import re

REQUEST_ID_HEADER = "x-request-id"
GENERATION_ID_HEADER = "x-generation-id"
#: How many upstream attempts a request made, and the provider of the last (the one that answered).
ATTEMPTS_HEADER = "x-llmgw-attempts"
PROVIDER_HEADER = "x-llmgw-provider"
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Set once a request's generation id is minted, for fronts that send it after the handler (gRPC metadata).
current_generation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "generation_id", default=None
)
# Set once a request's upstream attempts are over: their number and the last one's provider.
current_attempts: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "attempts", default=None
)
# Set once a request was admitted against limits: its rate-limit headers (gRPC metadata).
current_limit_headers: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "limit_headers", default=None
)
# The trace of the request's server span, while tracing is on ("": off, or no span).
current_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")
# A gRPC call's deadline, on the event loop's clock, when the client set one.
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


def attempt_headers(attempts: int, provider: str) -> dict[str, str]:
    """`x-llmgw-attempts` and `x-llmgw-provider`; none when no attempt was made."""
    if not attempts:
        return {}
    return {ATTEMPTS_HEADER: str(attempts), PROVIDER_HEADER: provider}


# A client's id is echoed in headers and logs: keep it short and free of control characters.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def accept_or_mint(client_value: str | None) -> str:
    if client_value and _ACCEPTABLE.fullmatch(client_value):
        return client_value
    # A correlation id, not a secret: the process's PRNG spares a system call per request.
    return f"{random.getrandbits(128):032x}"
