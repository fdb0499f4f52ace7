"""Routing: from a gateway model id to a catalog entry and the provider that serves it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from llmgw.application.ports import Provider
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.errors import InvalidRequest, NotFound

# Models reached by `provider/model` without a catalog entry: the upstream decides what they can do.
_UNCATALOGUED = frozenset({Capability.CHAT, Capability.EMBEDDINGS, Capability.VISION, Capability.TOOLS})


@dataclass(frozen=True, slots=True)
class Route:
    model: ModelSpec
    provider: Provider


class Router:
    """Catalog entry first; otherwise the id's prefix names the provider and the rest goes upstream."""

    def __init__(self, models: Iterable[ModelSpec], providers: Mapping[str, Provider]) -> None:
        self._models = {model.id: model for model in models}
        self._providers = dict(providers)

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

    def route(self, model_id: str, capability: Capability) -> Route:
        model = self._models.get(model_id) or self._uncatalogued(model_id)
        if not model.can(capability):
            raise InvalidRequest(
                f"The model '{model_id}' does not support {capability.value}.",
                code="model_not_supported",
                param="model",
            )
        return Route(model, self._providers[model.provider])

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
