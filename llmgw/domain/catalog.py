"""The model catalog: which models the gateway serves, through which deployments, at what price."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from llmgw.domain.limits import NO_LIMITS, Limits


class Capability(enum.StrEnum):
    """What a model can be asked to do (a StrEnum: its members are hashed on every request)."""

    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    VISION = "vision"
    TOOLS = "tools"
    REASONING = "reasoning"


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per million tokens; `cached_prompt` defaults to the prompt price when unset."""

    prompt: float
    completion: float
    cached_prompt: float | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a catalog model is served: a provider and the model id it knows it by.

    Requests go to the deployments of the lowest `priority` number; those share them by `weight`.
    """

    provider: str
    upstream_model: str
    weight: int = 1
    priority: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """One catalog entry: the gateway-facing id (`provider/model` or any alias) and where requests go.

    `deployments` is where requests for the model go. A model served in one place may be written
    with `provider` and `upstream_model` alone: that is its one deployment. Otherwise `provider` and
    `upstream_model` are the first deployment's, for display; routing reads `deployments` only.
    `fallbacks` and `fallbacks_on_context` name other models (catalog ids or `provider/model`).
    """

    id: str
    name: str
    capabilities: frozenset[Capability]
    provider: str = ""
    upstream_model: str = ""
    deployments: tuple[Deployment, ...] = ()
    pricing: Pricing | None = None
    created: int = 0
    owned_by: str = ""
    #: Model ids tried in order once this model's own deployments are spent or open.
    fallbacks: tuple[str, ...] = ()
    #: Model ids (larger contexts) tried in order when an upstream refuses a request as too long.
    fallbacks_on_context: tuple[str, ...] = ()
    #: What requests for this model may use, whoever sends them (`llm.models[].limits`).
    limits: Limits = NO_LIMITS

    def __post_init__(self) -> None:
        if not self.deployments:
            object.__setattr__(self, "deployments", (Deployment(self.provider, self.upstream_model),))
        elif not (self.provider or self.upstream_model):
            first = self.deployments[0]
            object.__setattr__(self, "provider", first.provider)
            object.__setattr__(self, "upstream_model", first.upstream_model)

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def served_by(self, deployment: Deployment) -> ModelSpec:
        """This model as one deployment serves it: what a provider is handed, whose `upstream_model`
        is what the upstream is asked for. The id stays the gateway's."""
        return replace(
            self,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            deployments=(deployment,),
        )
