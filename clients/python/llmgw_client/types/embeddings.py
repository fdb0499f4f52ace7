"""Embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmgw_client.types._base import _merged, _Result, _set


@dataclass(slots=True, kw_only=True)
class Embedding(_Result):
    """One vector: floats, or the base64 text when the caller asked `encoding_format="base64"`."""

    embedding: list[float] | str
    index: int = 0
    object: str = "embedding"
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        vector = self.embedding if isinstance(self.embedding, str) else list(self.embedding)
        return _merged({"object": self.object, "index": self.index, "embedding": vector}, self.model_extra)


@dataclass(slots=True, kw_only=True)
class EmbeddingUsage(_Result):
    prompt_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.total_tokens}
        return _merged(_set(out, cost=self.cost), self.model_extra)


@dataclass(slots=True, kw_only=True)
class CreateEmbeddingResponse(_Result):
    """`id` is the gateway's generation id (None if the gateway sent none)."""

    data: list[Embedding]
    model: str = ""
    object: str = "list"
    usage: EmbeddingUsage = field(default_factory=EmbeddingUsage)
    id: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _set({}, id=self.id)
        out |= {"object": self.object, "model": self.model, "data": [item.to_dict() for item in self.data]}
        out["usage"] = self.usage.to_dict()
        return _merged(out, self.model_extra)
