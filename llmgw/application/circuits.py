"""Circuit breakers, one per deployment (provider + upstream model), kept in this process's memory."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmgw.domain.catalog import Deployment
from llmgw.domain.errors import UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_Key = tuple[str, str]


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitView:
    """One circuit that is not closed, as `/readyz` shows it: `opened_at` is wall-clock epoch seconds."""

    provider: str
    upstream_model: str
    state: CircuitState
    opened_at: float


class _Circuit:
    __slots__ = ("failures", "opened_at", "opened_wall", "probe_since", "state")

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = 0.0  # on the breaker's clock: cooldowns and which opened first
        self.opened_wall = 0.0
        self.probe_since: float | None = None


def opens_at_once(outcome: BaseException | None) -> bool:
    """The upstream refused the gateway's key (401, 402, 403): every request would fail the same way."""
    return isinstance(outcome, UpstreamUnavailable) and outcome.status in (401, 402, 403)


def counts_as_failure(outcome: BaseException | None) -> bool:
    """An upstream that could not answer (connection errors, 5xx, 401/403) or did not in time. Client
    errors, 429s, routing errors and cancellations say nothing about the deployment's health."""
    return isinstance(outcome, UpstreamUnavailable | UpstreamTimeout)


class Circuits:
    """closed → open after `failures` consecutive failures (at once on a refused key: 401/402/403) → after `cooldown` seconds one probe request
    may go (half-open) → its success closes the circuit, its failure opens it for another cooldown.

    The Router asks `is_available` and, once it has chosen, `claim`s the deployment: that turns a due
    circuit half-open and gives the chosen request the one probe slot. `record` reports how a request
    ended and frees the slot. A probe that reports nothing within a cooldown (a stream never iterated)
    no longer holds the slot. Any success closes a circuit, probe or not.
    """

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if failures < 1 or cooldown < 0:
            raise ValueError("a circuit needs failures >= 1 and cooldown >= 0")
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._wall = wall_clock
        self._circuits: dict[_Key, _Circuit] = {}

    def state(self, deployment: Deployment) -> CircuitState:
        circuit = self._circuits.get(_key(deployment))
        return circuit.state if circuit is not None else CircuitState.CLOSED

    def is_available(self, deployment: Deployment) -> bool:
        circuit = self._circuits.get(_key(deployment))
        if circuit is None or circuit.state is CircuitState.CLOSED:
            return True
        now = self._clock()
        if circuit.state is CircuitState.OPEN:
            return now - circuit.opened_at >= self._cooldown
        return not self._probing(circuit, now)

    def claim(self, deployment: Deployment) -> bool:
        """A request goes to `deployment`: True when it is the probe of a half-open circuit."""
        circuit = self._circuits.get(_key(deployment))
        if circuit is None or circuit.state is CircuitState.CLOSED:
            return False
        now = self._clock()
        if circuit.state is CircuitState.OPEN:
            if now - circuit.opened_at < self._cooldown:
                return False
            circuit.state = CircuitState.HALF_OPEN
            log.info("circuit half-open: %s; one probe request may go", _name(deployment))
        elif self._probing(circuit, now):
            return False
        circuit.probe_since = now
        return True

    def record(self, deployment: Deployment, outcome: BaseException | None, *, probe: bool = False) -> None:
        """How a request to `deployment` ended: None for success. `probe` says it held the probe slot."""
        key = _key(deployment)
        circuit = self._circuits.get(key)
        if outcome is None:
            if circuit is not None and circuit.state is not CircuitState.CLOSED:
                log.info("circuit closed: %s answered again", _name(deployment))
            self._circuits.pop(key, None)
            return
        if not counts_as_failure(outcome):
            if probe and circuit is not None:
                circuit.probe_since = None
            return
        if circuit is None:
            circuit = self._circuits[key] = _Circuit()
        circuit.failures += 1
        if circuit.state is CircuitState.HALF_OPEN or (
            circuit.state is CircuitState.CLOSED
            and (circuit.failures >= self._threshold or opens_at_once(outcome))
        ):
            self._open(deployment, circuit, outcome)

    def opened_first(self, deployments: Sequence[Deployment]) -> Deployment:
        """The deployment whose circuit opened earliest (closed ones count as never opened: first)."""

        def opened(deployment: Deployment) -> float:
            circuit = self._circuits.get(_key(deployment))
            if circuit is None or circuit.state is CircuitState.CLOSED:
                return float("-inf")
            return circuit.opened_at

        return min(deployments, key=opened)

    def views(self) -> list[CircuitView]:
        """The circuits that are not closed, earliest opened first."""
        not_closed = [(k, c) for k, c in self._circuits.items() if c.state is not CircuitState.CLOSED]
        not_closed.sort(key=lambda item: item[1].opened_at)
        return [CircuitView(k[0], k[1], c.state, c.opened_wall) for k, c in not_closed]

    def _open(self, deployment: Deployment, circuit: _Circuit, outcome: BaseException) -> None:
        reopened = circuit.state is CircuitState.HALF_OPEN
        circuit.state = CircuitState.OPEN
        circuit.opened_at = self._clock()
        circuit.opened_wall = self._wall()
        circuit.probe_since = None
        log.warning(
            "circuit open: %s after %s; no requests for %g s",
            _name(deployment),
            "a failed probe"
            if reopened
            else f"{circuit.failures} consecutive failure(s), the last: {_code(outcome)}",
            self._cooldown,
        )

    def _probing(self, circuit: _Circuit, now: float) -> bool:
        return circuit.probe_since is not None and now - circuit.probe_since < max(self._cooldown, 1.0)


def _code(outcome: BaseException) -> str:
    status = getattr(outcome, "status", None)
    code = getattr(outcome, "code", None) or type(outcome).__name__
    return f"{code} (HTTP {status})" if status else str(code)


def _key(deployment: Deployment) -> _Key:
    return deployment.provider, deployment.upstream_model


def _name(deployment: Deployment) -> str:
    return f"provider={deployment.provider} upstream_model={deployment.upstream_model}"
