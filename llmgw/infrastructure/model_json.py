"""A catalog model as clients see it, on both fronts: the one list of a model's public fields."""

from __future__ import annotations

from typing import Any

from llmgw.domain.catalog import Capability, ModelSpec


def model_json(model: ModelSpec) -> dict[str, Any]:
    """OpenAI's model object plus the catalog's own public fields (gRPC's `Model` has a field for each
    key). The catalog's routing and pricing stay private: an alias served by several deployments names
    the first one's provider, unless the entry sets `owned_by`."""
    provider = model.deployments[0].provider
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by or provider,
        "name": model.name,
        "provider": provider,
        "capabilities": [c.value for c in Capability if c in model.capabilities],
    }
