"""Request and generation ids: taken from the client or minted, kept in context variables for that request."""

from __future__ import annotations

import contextvars
import random
import re

REQUEST_ID_HEADER = "x-request-id"
GENERATION_ID_HEADER = "x-generation-id"
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Set once a request's generation id is minted, for fronts that send it after the handler (gRPC metadata).
current_generation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "generation_id", default=None
)

# A client's id is echoed in headers and logs: keep it short and free of control characters.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def accept_or_mint(client_value: str | None) -> str:
    if client_value and _ACCEPTABLE.fullmatch(client_value):
        return client_value
    # A correlation id, not a secret: the process's PRNG spares a system call per request.
    return f"{random.getrandbits(128):032x}"
