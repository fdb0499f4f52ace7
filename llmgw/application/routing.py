"""Routing: from a gateway model id to a catalog entry, one of its deployments, and that provider."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from llmgw.application.ports import Provider
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.domain.errors import InvalidRequest, NotFound

# Models reached by `provider/model` without a catalog entry: the upstream decides what they can do.
_UNCATALOGUED = frozenset({Capability.CHAT, Capability.EMBEDDINGS, Capability.VISION, Capability.TOOLS})

#: Whether a deployment may take requests now (its circuit breaker's answer); routing prefers those that may.
Availability = Callable[[Deployment], bool]
#: Among deployments none of which is available, the one to try anyway (the one whose circuit opened first).
Fallback = Callable[[Sequence[Deployment]], Deployment]
#: Told which deployment a request goes to; True when that request holds its circuit's one probe slot.
Claim = Callable[[Deployment], bool]
#: A number in [0, 1), as `random.random` draws: tests pass their own for repeatable choices.
Draw = Callable[[], float]


def always_available(deployment: Deployment) -> bool:
    return True


def claims_nothing(deployment: Deployment) -> bool:
    return False


@dataclass(slots=True)  # not frozen: built per request (see GenerationRecord)
class Route:
    """Where one request goes: `model` is the catalog entry (its id is what clients see), `deployment`
    the one chosen, `provider` the deployment's. Providers are handed `target`."""

    model: ModelSpec
    deployment: Deployment
    provider: Provider
    #: The request holds its deployment's circuit probe slot, to be given back when it ends.
    probe: bool = False

    @property
    def target(self) -> ModelSpec:
        """The model as the chosen deployment serves it: its `upstream_model` is the deployment's."""
        if len(self.model.deployments) == 1:  # the model's own and only deployment
            return self.model
        return self.model.served_by(self.deployment)


class Router:
    """Catalog entry first; otherwise the id's prefix names the provider and the rest goes upstream.

    A catalog entry's deployments are chosen among the available ones of the lowest `priority`
    number, at random in proportion to their `weight`. When none is available, `opened_first` picks the
    one to try (failing without an attempt helps no one); without it, all of them count. The chosen
    deployment is `claim`ed at once, so a half-open circuit's one probe slot goes to this request.
    """

    def __init__(
        self,
        models: Iterable[ModelSpec],
        providers: Mapping[str, Provider],
        *,
        is_available: Availability = always_available,
        draw: Draw = random.random,
        opened_first: Fallback | None = None,
        claim: Claim = claims_nothing,
    ) -> None:
        self._models = {model.id: model for model in models}
        self._providers = dict(providers)
        self._is_available = is_available
        self._opened_first = opened_first
        self._claim = claim
        self._draw = draw

    @property
    def models(self) -> Sequence[ModelSpec]:
        return tuple(self._models.values())

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def model(self, model_id: str) -> ModelSpec:
        model = self._models.get(model_id)
        if model is None:
            raise NotFound(f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
        return model

    def resolve(self, model_id: str, capability: Capability) -> ModelSpec:
        """The catalog entry, or a `provider/model` id's uncatalogued model, that can do `capability`."""
        model = self._models.get(model_id) or self._uncatalogued(model_id)
        if not model.can(capability):
            raise InvalidRequest(
                f"The model '{model_id}' does not support {capability.value}.",
                code="model_not_supported",
                param="model",
            )
        return model

    def route_to(self, model: ModelSpec, deployment: Deployment) -> Route:
        """A request to `model` goes to `deployment`, which is `claim`ed (it may hold its probe slot)."""
        return Route(model, deployment, self._providers[deployment.provider], probe=self._claim(deployment))

    def is_available(self, deployment: Deployment) -> bool:
        return self._is_available(deployment)

    def opened_first(self, deployments: Sequence[Deployment]) -> Deployment:
        """Among deployments none of which is available, the one to try anyway (without an `opened_first`,
        as if all were available)."""
        return self._opened_first(deployments) if self._opened_first is not None else self.pick(deployments)

    def choose(self, deployments: Sequence[Deployment]) -> Deployment:
        """The preferred available deployments (lowest priority number), one of them by weight; when none
        is available, `opened_first`."""
        if len(deployments) == 1:
            return deployments[0]
        available = [d for d in deployments if self._is_available(d)]
        return self.pick(available) if available else self.opened_first(deployments)

    def pick(self, candidates: Sequence[Deployment]) -> Deployment:
        """Among `candidates` (not empty), those of the lowest priority number, one of them by weight."""
        if len(candidates) == 1:
            return candidates[0]
        best = min(d.priority for d in candidates)
        preferred = [d for d in candidates if d.priority == best]
        if len(preferred) == 1:
            return preferred[0]
        point = self._draw() * sum(d.weight for d in preferred)
        for deployment in preferred:
            point -= deployment.weight
            if point < 0:
                return deployment
        return preferred[-1]  # a draw of (almost) 1.0 with float rounding

    @property
    def draw(self) -> Draw:
        return self._draw

    def _uncatalogued(self, model_id: str) -> ModelSpec:
        provider, sep, upstream = model_id.partition("/")
        if not sep or not upstream or provider not in self._providers:
            raise NotFound(f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
        return ModelSpec(
            id=model_id,
            name=model_id,
            provider=provider,
            upstream_model=upstream,
            capabilities=_UNCATALOGUED,
            owned_by=provider,
        )
