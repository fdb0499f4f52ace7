"""Catalog models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from llmgw_client.types._base import _merged, _Result


@dataclass(slots=True, kw_only=True)
class Model(_Result):
    """A catalog model: OpenAI's fields plus the gateway's `name`, `provider` and `capabilities`."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = ""
    name: str = ""
    provider: str = ""
    capabilities: list[str] = field(default_factory=list)
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "owned_by": self.owned_by,
            "name": self.name,
            "provider": self.provider,
            "capabilities": list(self.capabilities),
        }
        return _merged(out, self.model_extra)


@dataclass(slots=True, kw_only=True)
class ModelList(_Result):
    """The models a key may use; iterates, indexes and sizes as its `data`."""

    data: list[Model]
    object: str = "list"
    model_extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    generation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _merged({"object": self.object, "data": [m.to_dict() for m in self.data]}, self.model_extra)

    def __iter__(self) -> Iterator[Model]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @overload
    def __getitem__(self, index: int) -> Model: ...
    @overload
    def __getitem__(self, index: slice) -> list[Model]: ...
    def __getitem__(self, index: int | slice) -> Model | list[Model]:
        return self.data[index]
