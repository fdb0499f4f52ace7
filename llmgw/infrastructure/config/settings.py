"""Frozen, typed settings, or the problems that keep them from loading: what the loader hands over."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from llmgw.application.limits import OnStoreError
from llmgw.application.retries import RetryPolicy
from llmgw.domain.catalog import ModelSpec
from llmgw.domain.limits import NO_LIMITS, Limits


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, or one key it does not know.

    `key` is dotted (`llm.providers.dashscope.timeout`, `llm.models[dashscope/qwen-turbo].name`);
    `source` is the config file path, `env LLMGW_...`, or `default`.
    """

    key: str
    source: str
    message: str

    def __str__(self) -> str:
        # A file that cannot be parsed has no key to name.
        prefix = f"{self.key}: " if self.key else ""
        return f"{prefix}{self.message} (from {self.source})"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds every problem found, `warnings` every unknown key."""

    def __init__(self, problems: Iterable[ConfigProblem], warnings: Iterable[ConfigProblem] = ()) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        self.warnings: tuple[ConfigProblem, ...] = tuple(warnings)
        super().__init__(self.problems)

    def __str__(self) -> str:
        count = len(self.problems)
        lines = [f"invalid configuration: {count} problem{'' if count == 1 else 's'}"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines + [f"  warning: {warning}" for warning in self.warnings])


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


class TransportKind(enum.Enum):
    """How upstream HTTP is spoken: llmgw's own pool, or aiohttp's client (which speaks to proxies)."""

    FAST = "fast"
    AIOHTTP = "aiohttp"


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
    # None: "fast" unless a proxy applies (decided when the transport is built).
    transport: TransportKind | None = None
    # None: from HTTPS_PROXY/HTTP_PROXY/NO_PROXY; "" = no proxy; else an http(s):// proxy URL.
    proxy: str | None = None
    # An upstream answer (decompressed) larger than this is refused.
    max_response_bytes: int = 67_108_864
    # Requests to this provider in flight at once (per process); 0: only server.max_in_flight bounds them.
    max_in_flight: int = 0
    # `llm.retry` with this provider's `retry` keys over it; None: `llm.retry` as it is.
    retry: RetryPolicy | None = None

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
    # `http.cors.allow_origins`: browser origins allowed to call the REST API (`*` for any); none by default.
    cors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    listen: ListenAddress = ListenAddress("", 50051)
    # A request message larger than this ends its call with RESOURCE_EXHAUSTED (gRPC's own default).
    max_message_bytes: int = 4_194_304
    # RST_STREAMs one client connection may send within 10 s; beyond: GOAWAY and close (rapid reset).
    max_client_resets: int = 1000


@dataclass(frozen=True, slots=True)
class HealthSettings:
    listen: ListenAddress = ListenAddress("", 8081)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    url: str = "sqlite:///./var/llmgw.db"
    retention_days: int = 30
    # Seconds any one store call may take (open, lookup, write) before it counts as failed.
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    workers: int = 1
    # Seconds in-flight requests get to finish after SIGTERM.
    shutdown_grace: float = 10.0
    # Chat and embeddings requests one process serves at once; beyond it, 429 `overloaded` at once.
    max_in_flight: int = 2000
    # Seconds a new connection's first request headers (gRPC: any header block) may take to arrive whole.
    header_timeout: float = 10.0
    # Seconds a connection with no request in flight stays open.
    idle_timeout: float = 120.0
    # Connections open at once on all of one process's ports; beyond it, new ones are closed at once.
    max_connections: int = 10_000


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    """`llm.circuit`: a deployment's circuit opens after `failures` consecutive failures, for `cooldown`
    seconds, then one probe request decides."""

    failures: int = 5
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """`[auth]`: API keys of our own, asked of every caller but health checks. `pepper` keys the hash of
    every stored secret; `admin_key` is the operator's first admin key (any secret of 32+ characters)."""

    enabled: bool = True
    pepper: str = field(default="", repr=False)
    admin_key: str = field(default="", repr=False)
    # Seconds a validated key is trusted without reading the store again (a change elsewhere takes this).
    cache_ttl: float = 5.0
    # Seconds a rotated key's old secret still works, unless the rotation says otherwise.
    rotation_grace: float = 86_400.0


#: For tests and embedding: every request let through as nobody's.
NO_AUTH = AuthSettings(enabled=False)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """`[cache]`: `redis_url` ("": none) shares key revocations between replicas."""

    redis_url: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """`[limits]`: the gateway-wide limits (`[limits.gateway]`) and how admission estimates and fails."""

    gateway: Limits = NO_LIMITS
    #: completion tokens reserved for a chat request that sets no max_tokens / max_completion_tokens
    default_max_tokens: int = 4096
    #: budgets while the limit store (Redis) is unreachable: refuse (closed) or let through (open)
    on_store_error: OnStoreError = OnStoreError.CLOSED
    #: rpm, tpm and max_parallel while it is unreachable
    on_store_error_rates: OnStoreError = OnStoreError.OPEN


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """`[metrics]`: Prometheus metrics at `/metrics` on the health port (and on the REST port with
    `on_http_port`). Key and team labels and budget gauges exist only for the ids in `label_keys` (key
    public ids and team ids), so the series stay bounded whatever the traffic; model labels beyond
    `max_model_labels` distinct ones (pass-through ids) count as `other`."""

    enabled: bool = True
    on_http_port: bool = False
    label_keys: tuple[str, ...] = ()
    max_model_labels: int = 200


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """`[tracing]`: OpenTelemetry traces, off unless `otlp_endpoint` or the standard
    `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable names a collector.
    Message content is never recorded unless `capture_content`."""

    otlp_endpoint: str = ""
    capture_content: bool = False
    service_name: str = "llmgw"
    #: the share of traces started here that are kept (a caller's sampled `traceparent` always is)
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """`[console]`: the web console at `/console/` on the REST port."""

    enabled: bool = True


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
    # `llm.retry`: every provider's retry policy, unless its own `retry` table overrides keys of it.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitSettings = CircuitSettings()
    auth: AuthSettings = AuthSettings()
    cache: CacheSettings = CacheSettings()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    console: ConsoleSettings = ConsoleSettings()
    # Config files that were actually read, in layer order.
    sources: tuple[str, ...] = ()
    # Keys the gateway does not know (typos, most likely): logged at start-up, errors for `config check`.
    warnings: tuple[ConfigProblem, ...] = ()
