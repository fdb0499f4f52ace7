"""The model catalog: which models the gateway serves, through which provider, at what price."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Capability(enum.Enum):
    """What a model can be asked to do."""

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
class ModelSpec:
    """One catalog entry: the gateway-facing id and where requests for it go."""

    id: str
    name: str
    provider: str
    upstream_model: str
    capabilities: frozenset[Capability]
    pricing: Pricing | None = None
    created: int = 0
    owned_by: str = ""

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities
