"""What `/readyz` reports about a gateway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmgw.application.circuits import CircuitView


@dataclass(frozen=True, slots=True)
class ProviderState:
    name: str
    has_credentials: bool


@dataclass(frozen=True, slots=True)
class Readiness:
    """What `/readyz` reports: ready when the store answers and the gateway is not draining; providers
    without keys are not an error, nor are open circuits (`circuits` lists the deployments whose circuit
    is open or half-open; closed ones are not listed)."""

    ready: bool
    store_up: bool
    pending_records: int
    dropped_records: int
    providers: Sequence[ProviderState]
    draining: bool = False
    circuits: Sequence[CircuitView] = ()
    #: the limit store (Redis or this process's): up, or unreachable (what `limits.on_store_error` then
    #: decides); None without a limiter
    limits_up: bool | None = None
