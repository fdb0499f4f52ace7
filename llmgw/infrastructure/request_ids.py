"""Request ids: taken from the client or minted, kept in a context variable for logs of that request."""

from __future__ import annotations

import contextvars
import re
import uuid

REQUEST_ID_HEADER = "x-request-id"
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# A client's id is echoed in headers and logs: keep it short and free of control characters.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def accept_or_mint(client_value: str | None) -> str:
    if client_value and _ACCEPTABLE.fullmatch(client_value):
        return client_value
    return uuid.uuid4().hex
