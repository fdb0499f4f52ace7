"""What the gateway tells its observers (metrics, traces) about each chat and embeddings request.

Observers run on the request's own path, in its task, right after its record is handed to the recorder:
they must not block nor await, and an observer that raises is logged, never the request's failure.
"""

from __future__ import annotations

from typing import Protocol

from llmgw.application.tracking import RequestContext, Tracker
from llmgw.domain.errors import GatewayError
from llmgw.domain.generation import GenerationKind, GenerationRecord


class Observer(Protocol):
    def finished(self, record: GenerationRecord, tracker: Tracker) -> None:
        """A request ended with a record: answered, failed after reaching the routing, or cancelled."""
        ...

    def refused(self, kind: GenerationKind, model: str, error: GatewayError, ctx: RequestContext) -> None:
        """A request was refused before it got a record: an unknown or forbidden model, a bad request, a
        limit, a full gateway, a shutdown. `model` is the catalog id when the model resolved, else ""."""
        ...
