"""Frozen, typed settings: what the loader hands to the composition root."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmgw.domain.catalog import ModelSpec


class ProviderKind(enum.Enum):
    """Which wire quirks a provider entry speaks; all are OpenAI-compatible."""

    OPENAI = "openai"
    DASHSCOPE = "dashscope"
    OPENROUTER = "openrouter"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A host and port to listen on; `":8080"` means every interface."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """One upstream provider entry of `llm.providers`. Durations are seconds."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key: str = ""
    # Where the key came from, for `config show` and `/readyz` (never the key itself).
    api_key_source: str = ""
    timeout: float = 60.0
    connect_timeout: float = 5.0
    first_token_timeout: float = 30.0
    idle_timeout: float = 30.0
    max_connections: int = 100
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key)


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    format: LogFormat = LogFormat.TEXT


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: ListenAddress = ListenAddress("", 8080)
    max_body_bytes: int = 10_485_760


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    listen: ListenAddress = ListenAddress("", 50051)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    listen: ListenAddress = ListenAddress("", 8081)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    url: str = "sqlite:///./var/llmgw.db"
    retention_days: int = 30


@dataclass(frozen=True, slots=True)
class ServerSettings:
    workers: int = 1
    # Seconds in-flight requests get to finish after SIGTERM.
    shutdown_grace: float = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway needs, validated."""

    providers: Mapping[str, ProviderSettings]
    models: tuple[ModelSpec, ...]
    log: LogSettings = LogSettings()
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings()
    health: HealthSettings = HealthSettings()
    storage: StorageSettings = StorageSettings()
    server: ServerSettings = ServerSettings()
    # Config files that were actually read, in layer order.
    sources: tuple[str, ...] = ()
