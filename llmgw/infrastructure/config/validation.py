"""Typed settings from the merged config: every value checked, every problem kept with its key and source.

Checking goes on after a problem, so one run reports every problem in the config; a key the
gateway does not know is a warning. A key that is absent or wrong gets the settings' default.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from llmgw.application.limit_fields import LIMIT_FIELDS, changed_limits
from llmgw.application.limits import OnStoreError
from llmgw.application.retries import RetryPolicy
from llmgw.domain.catalog import Capability, Deployment, ModelSpec, Pricing
from llmgw.domain.errors import InvalidRequest
from llmgw.domain.limits import NO_LIMITS, Limits
from llmgw.infrastructure.config.settings import (
    AuthSettings,
    CacheSettings,
    CircuitSettings,
    ConfigError,
    ConfigProblem,
    ConsoleSettings,
    GrpcSettings,
    HealthSettings,
    HttpSettings,
    LimitsSettings,
    ListenAddress,
    LogFormat,
    LogSettings,
    MetricsSettings,
    ProviderKind,
    ProviderSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    TracingSettings,
    TransportKind,
)

E = TypeVar("E", bound=enum.Enum)
KeyPath = tuple[str, ...]
Parse = Callable[[Any], Any]

MODELS_PATH: Final[KeyPath] = ("llm", "models")
DASHSCOPE_REGION_URLS: Final = {
    "beijing": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "international": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    "us": "https://dashscope-us.aliyuncs.com/compatible-mode/v1",
}
_CAPABILITIES = [capability.value for capability in Capability]
_OPENROUTER_HEADERS = {"referer": "HTTP-Referer", "title": "X-Title"}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST = re.compile(r"[A-Za-z0-9._-]*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Origins:
    """Which config file or env var last changed each key; the loader fills it (and says why dynaconf can't)."""

    keys: dict[KeyPath, str] = field(default_factory=dict)
    # An env var's own text where dynaconf parsed it into a non-string (`..._API_KEY=1e3` is a float).
    env_text: dict[KeyPath, str] = field(default_factory=dict)
    # Found while reading, before any value is checked: a model id repeated within one source.
    problems: list[ConfigProblem] = field(default_factory=list)

    def of(self, path: KeyPath) -> str:
        """The source of `path`, or of its nearest ancestor when the key itself is missing."""
        for end in range(len(path), 0, -1):
            if (source := self.keys.get(path[:end])) is not None:
                return source
        return "default"


def parse_duration(value: object) -> float:
    """Seconds for "20s", "1500ms", "2m", "1h", "1m30s" or a plain number of seconds."""
    # bool is an int subclass, but `timeout = true` is a mistake, not one second.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = value.strip().lower() if isinstance(value, str) else ""
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _DURATION.fullmatch(text):
        expected = 'a duration like "20s", "1500ms", "2m", "1m30s" or a number of seconds'
        raise ValueError(f"must be {expected}, got {value!r}")
    return sum(float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(text))


def duration(*, allow_zero: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise ValueError(f"must be {'at least' if allow_zero else 'longer than'} zero, got {value!r}")
        return seconds

    return parse


def at_least(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return float(value)


def as_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def non_empty(value: Any) -> str:
    if not as_text(value).strip():
        raise ValueError("must not be empty")
    return str(value)


def one_line(value: Any) -> str:
    text = as_text(value)
    # A line break would let a config value inject headers of its own.
    if "\r" in text or "\n" in text:
        raise ValueError("must not contain line breaks")
    return text


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")

    return parse


def member(kind: type[E]) -> Callable[[Any], E]:
    choose = one_of(*(item.value for item in kind))
    return lambda value: kind(choose(value))


def parse_listen(value: Any) -> ListenAddress:
    """`":8080"`, `"127.0.0.1:8080"`, `"[::1]:8080"` or `"localhost:0"`."""
    expected = f'must be host:port like ":8080", "127.0.0.1:8080" or "[::1]:8080", got {value!r}'
    if not isinstance(value, str):
        raise ValueError(expected)
    host, colon, port = value.strip().rpartition(":")
    if not colon or not port.isdigit() or not port.isascii():
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]") and len(host) > 2:
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{expected} (IPv6 hosts go in brackets)")
    elif not _HOST.fullmatch(host):
        raise ValueError(expected)
    if int(port) > 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return ListenAddress(host, int(port))


def http_url(value: Any) -> str:
    text = as_text(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    # Providers append paths such as "/chat/completions"; a trailing slash would double up.
    return text.rstrip("/")


def proxy_url(value: Any) -> str:
    """`""` (no proxy, whatever the environment says) or `http://[user:password@]host[:port]`."""
    text = as_text(value).strip()
    try:
        parts = urlsplit(text)
        valid = not text or (parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0)
    except ValueError:  # a port that is not a number
        valid = False
    if valid:
        return text
    # A proxy URL may carry a password: echo it only when it cannot.
    shown = "" if "@" in text else f", got {value!r}"
    raise ValueError(f'must be "" (no proxy) or an http:// or https:// proxy URL{shown}')


def storage_url(value: Any) -> str:
    """`memory://`, `sqlite:///path` (relative paths allowed) or `postgresql://…`."""
    text = as_text(value).strip()
    if text == "memory://" or (text.startswith("sqlite:///") and len(text) > len("sqlite:///")):
        return text
    parts = urlsplit(text)
    if parts.scheme in ("postgresql", "postgres") and (parts.netloc or parts.path.strip("/")):
        return text
    # A DSN may carry a password: echo it only when it cannot.
    shown = "" if "@" in text else f", got {value!r}"
    raise ValueError(f"must be memory://, sqlite:///path or postgresql://...{shown}")


_ORIGIN = re.compile(r"\*|https?://[^/\s]+/?")


def cors_origins(value: Any) -> tuple[str, ...]:
    """`[http.cors]`: `allow_origins`, a list of `scheme://host[:port]` origins or `"*"`."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a table with allow_origins")
    unknown = sorted(set(value) - {"allow_origins"})
    if unknown:
        raise ValueError(f"unknown key {', '.join(unknown)}; expected allow_origins")
    origins = value.get("allow_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) and _ORIGIN.fullmatch(o) for o in origins):
        raise ValueError('allow_origins must be a list of origins like "https://app.example.com", or ["*"]')
    return tuple(origin.rstrip("/") for origin in origins)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def secret(min_length: int) -> Callable[[Any], str]:
    """A secret of at least `min_length` characters; "" leaves it unset. Never echoed in a problem."""

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        if value and len(value) < min_length:
            raise ValueError(f"must be at least {min_length} characters (got {len(value)})")
        return value

    return parse


def redis_url(value: Any) -> str:
    text = as_text(value).strip()
    if text and urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        shown = "" if "@" in text else f", got {value!r}"
        raise ValueError(f'must be "" or a redis://, rediss:// or unix:// URL{shown}')
    return text


def model_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError("must be a list of model ids")
    return tuple(value)


def ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError("must be a list of key public ids and team ids")
    return tuple(item.strip() for item in value)


def otlp_url(value: Any) -> str:
    text = as_text(value).strip()
    if text and urlsplit(text).scheme not in ("http", "https"):
        raise ValueError(f'must be "" or an http(s):// URL of an OTLP collector, got {value!r}')
    return text


def ratio(value: Any) -> float:
    number = non_negative_number(value)
    if number > 1:
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return number


def capabilities(value: Any) -> frozenset[Capability]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of: {', '.join(_CAPABILITIES)}")
    unknown = [item for item in value if not (isinstance(item, str) and item.lower() in _CAPABILITIES)]
    if unknown:
        names = ", ".join(repr(item) for item in unknown)
        raise ValueError(f"unknown capability {names}; expected {', '.join(_CAPABILITIES)}")
    return frozenset(Capability(item.lower()) for item in value)


# Each section's keys and how to read them; a key left out gets the settings class's default.
_SECTIONS: dict[str, tuple[Callable[..., Any], dict[str, Parse]]] = {
    "log": (LogSettings, {"level": one_of("debug", "info", "warning", "error"), "format": member(LogFormat)}),
    "http": (HttpSettings, {"listen": parse_listen, "max_body_bytes": at_least(1), "cors": cors_origins}),
    "grpc": (
        GrpcSettings,
        {"listen": parse_listen, "max_message_bytes": at_least(1), "max_client_resets": at_least(1)},
    ),
    "health": (HealthSettings, {"listen": parse_listen}),
    "storage": (StorageSettings, {"url": storage_url, "retention_days": at_least(0), "timeout": duration()}),
    "auth": (
        AuthSettings,
        {
            "enabled": boolean,
            "pepper": secret(32),
            "admin_key": secret(32),
            "cache_ttl": duration(allow_zero=True),
            "rotation_grace": duration(allow_zero=True),
        },
    ),
    "cache": (CacheSettings, {"redis_url": redis_url}),
    "metrics": (
        MetricsSettings,
        {"enabled": boolean, "on_http_port": boolean, "label_keys": ids, "max_model_labels": at_least(0)},
    ),
    "tracing": (
        TracingSettings,
        {
            "otlp_endpoint": otlp_url,
            "capture_content": boolean,
            "service_name": non_empty,
            "sample_ratio": ratio,
        },
    ),
    "console": (ConsoleSettings, {"enabled": boolean}),
    # A grace of zero stops at once without waiting for in-flight requests.
    "server": (
        ServerSettings,
        {
            "workers": at_least(1),
            "shutdown_grace": duration(allow_zero=True),
            "max_in_flight": at_least(1),
            "header_timeout": duration(),
            "idle_timeout": duration(),
            "max_connections": at_least(1),
        },
    ),
}
_LIMITS_FIELDS: dict[str, Parse] = {
    "default_max_tokens": at_least(1),
    "on_store_error": member(OnStoreError),
    "on_store_error_rates": member(OnStoreError),
}
_PROVIDER_FIELDS: dict[str, Parse] = {
    "kind": member(ProviderKind),
    "base_url": http_url,
    # A DashScope key works in one region only; `region` names it instead of spelling out the URL.
    "region": one_of(*DASHSCOPE_REGION_URLS),
    **dict.fromkeys(("timeout", "connect_timeout", "first_token_timeout", "idle_timeout"), duration()),
    "max_connections": at_least(1),
    "transport": member(TransportKind),
    "proxy": proxy_url,
    "max_response_bytes": at_least(1),
    "max_in_flight": at_least(0),
}
_PROVIDER_KEYS = {*_PROVIDER_FIELDS, "api_key", "headers", "retry", *_OPENROUTER_HEADERS}
_MODEL_FIELDS: dict[str, Parse] = {
    **dict.fromkeys(("name", "provider", "owned_by"), as_text),
    "upstream_model": non_empty,
    "capabilities": capabilities,
    "created": at_least(0),
}
_DEPLOYMENT_FIELDS: dict[str, Parse] = {
    "provider": non_empty,
    "upstream_model": non_empty,
    "weight": at_least(1),
    "priority": at_least(0),
}
_RETRY_FIELDS: dict[str, Parse] = {
    "max_attempts": at_least(1),
    **dict.fromkeys(
        ("attempt_timeout", "backoff", "backoff_max", "retry_after_max"), duration(allow_zero=True)
    ),
    "budget": non_negative_number,
    "budget_window": duration(),
    "budget_floor": at_least(0),
}
_CIRCUIT_FIELDS: dict[str, Parse] = {"failures": at_least(1), "cooldown": duration(allow_zero=True)}
_FALLBACK_KEYS = ("fallbacks", "fallbacks_on_context")
_PRICES = dict.fromkeys(("prompt", "completion", "cached_prompt"), non_negative_number)


#: The config's top-level tables.
TOP_LEVEL = frozenset({"llm", "limits", *_SECTIONS})


def build_settings(
    data: Mapping[str, Any], origins: Origins, environ: Mapping[str, str], sources: tuple[str, ...]
) -> Settings:
    """Settings from the merged, lower-cased config; raise ConfigError naming every problem."""
    check = Checker(origins)
    check.warn_unknown(data, (), TOP_LEVEL)
    llm = check.table(data, ("llm",))
    check.warn_unknown(llm, ("llm",), {"providers", "models", "retry", "circuit"})
    retry = RetryPolicy(**check.section(llm, ("llm", "retry"), _RETRY_FIELDS))
    circuit = CircuitSettings(**check.section(llm, ("llm", "circuit"), _CIRCUIT_FIELDS))
    providers = _providers(llm, check, environ, retry)
    models = _models(llm, check)
    sections = {
        name: make(**check.section(data, (name,), parsers)) for name, (make, parsers) in _SECTIONS.items()
    }
    limits = limits_settings(data, check)
    if check.problems:
        raise ConfigError(check.problems, check.warnings)
    return Settings(
        providers,
        models,
        **sections,
        retry=retry,
        circuit=circuit,
        limits=limits,
        sources=sources,
        warnings=tuple(check.warnings),
    )


class Checker:
    """Reads values out of raw tables; a bad value becomes a problem and is left out."""

    def __init__(self, origins: Origins) -> None:
        self.origins = origins
        self.problems: list[ConfigProblem] = list(origins.problems)
        self.warnings: list[ConfigProblem] = []

    def fail(self, path: KeyPath, message: str) -> None:
        self.problems.append(ConfigProblem(render_key(path), self.origins.of(path), message))

    def warn_unknown(self, table: Mapping[str, Any], path: KeyPath, known: Collection[str]) -> None:
        message = f"unknown key; expected one of: {', '.join(sorted(known))}"
        for key in table:
            if key not in known:
                key_path = (*path, key)
                self.warnings.append(ConfigProblem(render_key(key_path), self.origins.of(key_path), message))

    def table(self, data: Mapping[str, Any], path: KeyPath) -> dict[str, Any]:
        """The table at `path` inside `data` (whose own path is `path[:-1]`); {} when absent."""
        value = data.get(path[-1])
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a table, got {value!r}")
            return {}
        return dict(value)

    def parse(self, table: Mapping[str, Any], path: KeyPath, parsers: Mapping[str, Parse]) -> dict[str, Any]:
        """The parsed values of the keys of `parsers` that `table` sets."""
        values: dict[str, Any] = {}
        for key, parse in parsers.items():
            if table.get(key) is not None:
                try:
                    values[key] = parse(table[key])
                except ValueError as exc:
                    self.fail((*path, key), str(exc))
        return values

    def section(self, data: Mapping[str, Any], path: KeyPath, parsers: Mapping[str, Parse]) -> dict[str, Any]:
        """The parsed values of the table at `path`, whose keys are those of `parsers`."""
        table = self.table(data, path)
        self.warn_unknown(table, path, parsers)
        return self.parse(table, path, parsers)

    def secret_text(self, value: Any, path: KeyPath) -> str | None:
        """A secret-like string; numbers are kept as written (env values are parsed as TOML)."""
        if isinstance(value, str):
            return value
        if (raw := self.origins.env_text.get(path)) is not None:
            return raw
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        # The type only: the value may be (part of) a secret.
        self.fail(path, f"must be a string, got {type(value).__name__}")
        return None


def render_key(path: KeyPath) -> str:
    """`("llm", "models", "[x]", "name")` -> `llm.models[x].name`."""
    return "".join(part if part.startswith("[") or not i else f".{part}" for i, part in enumerate(path))


def api_key_env_var(provider: str) -> str:
    """`DASHSCOPE_API_KEY` for `dashscope`, `MY_VLLM_API_KEY` for `my-vllm`."""
    return re.sub(r"[^A-Za-z0-9]", "_", provider).upper() + "_API_KEY"


def _providers(
    llm: Mapping[str, Any], check: Checker, environ: Mapping[str, str], retry: RetryPolicy
) -> dict[str, ProviderSettings]:
    providers: dict[str, ProviderSettings] = {}
    for name, table in check.table(llm, ("llm", "providers")).items():
        path = ("llm", "providers", name)
        if isinstance(table, Mapping):
            providers[name] = _provider(name, table, path, check, environ=environ, retry=retry)
        else:
            check.fail(path, f"must be a table, got {table!r}")
    return providers


def _provider(
    name: str,
    table: Mapping[str, Any],
    path: KeyPath,
    check: Checker,
    *,
    environ: Mapping[str, str],
    retry: RetryPolicy,
) -> ProviderSettings:
    check.warn_unknown(table, path, _PROVIDER_KEYS)
    fields = check.parse(table, path, _PROVIDER_FIELDS)
    kinds = [kind.value for kind in ProviderKind]
    if table.get("kind") is None and name not in kinds:
        message = f"kind required: {name!r} is not a provider kind, set one of {', '.join(kinds)}"
        check.fail((*path, "kind"), message)
    kind = fields.setdefault("kind", ProviderKind(name) if name in kinds else ProviderKind.OPENAI)
    if table.get("region") is not None:
        if kind is not ProviderKind.DASHSCOPE:
            check.fail((*path, "region"), "only providers of kind dashscope have regions; set base_url")
        elif table.get("base_url") is not None:
            check.fail((*path, "region"), "set base_url or region, not both")
        fields["base_url"] = DASHSCOPE_REGION_URLS.get(fields.pop("region", ""), "")
    elif table.get("base_url") is None:
        check.fail((*path, "base_url"), "is required")
    if fields.get("transport") is TransportKind.FAST and fields.get("proxy"):
        hint = 'use transport = "aiohttp" or leave transport unset'
        check.fail((*path, "transport"), f"the fast transport does not speak to proxies; {hint}")
    api_key, api_key_source = _api_key(name, table, path, check, environ)
    headers = _headers(kind, table, path, check)
    own_retry = check.section(table, (*path, "retry"), _RETRY_FIELDS) if "retry" in table else {}
    return ProviderSettings(
        name=name,
        api_key=api_key,
        api_key_source=api_key_source,
        headers=headers,
        retry=replace(retry, **own_retry) if own_retry else None,
        **{"base_url": "", **fields},
    )


def _api_key(
    name: str, table: Mapping[str, Any], path: KeyPath, check: Checker, environ: Mapping[str, str]
) -> tuple[str, str]:
    value = table.get("api_key")
    if value is not None and (configured := check.secret_text(value, (*path, "api_key"))):
        return configured, "config"
    var = api_key_env_var(name)
    if environ.get(var):
        return environ[var], f"env {var}"
    # No key is fine: local OpenAI-compatible servers need none.
    return "", ""


def _headers(kind: ProviderKind, table: Mapping[str, Any], path: KeyPath, check: Checker) -> dict[str, str]:
    """`headers`, plus OpenRouter's app attribution: `referer` and `title` become `HTTP-Referer`, `X-Title`."""
    headers: dict[str, str] = {}
    for header, value in check.table(table, (*path, "headers")).items():
        value_path = (*path, "headers", header)
        if not _HEADER_NAME.fullmatch(header):
            check.fail(value_path, f"{header!r} is not a valid HTTP header name")
        elif (text := check.secret_text(value, value_path)) is not None:
            try:
                headers[header] = one_line(text)
            except ValueError as exc:
                check.fail(value_path, str(exc))
    attribution = check.parse(table, path, dict.fromkeys(_OPENROUTER_HEADERS, one_line))
    for key, header in _OPENROUTER_HEADERS.items():
        if key in table and kind is not ProviderKind.OPENROUTER:
            check.fail((*path, key), f"only valid for kind openrouter, this provider is kind {kind.value}")
        elif attribution.get(key):
            headers[header] = attribution[key]
    return headers


def _models(llm: Mapping[str, Any], check: Checker) -> tuple[ModelSpec, ...]:
    entries = llm.get("models")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        check.fail(MODELS_PATH, "must be a list of tables ([[llm.models]] in TOML)")
        return ()
    # Every declared provider counts, even one with problems of its own: those are reported
    # already and should not come back once per model.
    declared = llm.get("providers")
    providers = frozenset(declared) if isinstance(declared, Mapping) else frozenset()
    # dynaconf's merge appends a later layer's models: a repeated id replaces the entry where it stood.
    by_id: dict[object, Any] = {}
    for index, entry in enumerate(entries):
        model_id = entry.get("id") if isinstance(entry, Mapping) else None
        by_id[model_id if isinstance(model_id, str) else index] = entry
    models = (_model(entry, index, check, providers) for index, entry in enumerate(by_id.values()))
    catalog = tuple(model for model in models if model is not None)
    _check_fallbacks(catalog, check, providers)
    return catalog


def _check_fallbacks(catalog: tuple[ModelSpec, ...], check: Checker, providers: frozenset[str]) -> None:
    """Each fallback names another model: a catalog id, or `provider/model` of a declared provider."""
    ids = {model.id for model in catalog}
    for model in catalog:
        for key in _FALLBACK_KEYS:
            for fallback in getattr(model, key):
                prefix, sep, rest = fallback.partition("/")
                if fallback == model.id:
                    problem = "a model cannot be its own fallback"
                elif fallback in ids or (sep and rest and prefix in providers):
                    continue
                else:
                    problem = "not a catalog model id, nor provider/model of a declared provider"
                check.fail((*MODELS_PATH, f"[{model.id}]", key), f"{fallback!r}: {problem}")


def _model(entry: Any, index: int, check: Checker, providers: frozenset[str]) -> ModelSpec | None:
    anonymous: KeyPath = (*MODELS_PATH, f"[#{index}]")
    if not isinstance(entry, Mapping):
        check.fail(anonymous, f"must be a table, got {entry!r}")
        return None
    model_id: str | None = check.parse(entry, anonymous, {"id": non_empty}).get("id")
    if model_id is None:
        if entry.get("id") is None:
            check.fail((*anonymous, "id"), "is required")
        return None
    path = (*MODELS_PATH, f"[{model_id}]")
    check.warn_unknown(
        entry, path, {"id", "pricing", "deployments", "limits", *_FALLBACK_KEYS, *_MODEL_FIELDS}
    )
    fields = check.parse(entry, path, _MODEL_FIELDS)
    if entry.get("deployments") is not None:
        for key in ("provider", "upstream_model"):
            if entry.get(key) is not None:
                check.fail((*path, key), f"set {key} on each deployment, not beside deployments")
        deployments = _deployments(entry["deployments"], model_id, path, check, providers)
    else:
        deployments = _single_deployment(entry, fields, model_id, path, check=check, providers=providers)
    first = deployments[0] if deployments else Deployment("", "")
    fallbacks = check.parse(entry, path, dict.fromkeys(_FALLBACK_KEYS, model_ids))
    return ModelSpec(
        fallbacks=fallbacks.get("fallbacks", ()),
        fallbacks_on_context=fallbacks.get("fallbacks_on_context", ()),
        id=model_id,
        name=fields.get("name", model_id),
        deployments=deployments or (first,),
        capabilities=fields.get("capabilities", frozenset({Capability.CHAT})),
        pricing=_pricing(entry, path, check),
        limits=limits_table(entry, "limits", path, check),
        created=fields.get("created", 0),
        owned_by=fields.get("owned_by", first.provider),
    )


def _single_deployment(
    entry: Mapping[str, Any],
    fields: Mapping[str, Any],
    model_id: str,
    path: KeyPath,
    *,
    check: Checker,
    providers: frozenset[str],
) -> tuple[Deployment, ...]:
    """A model without `deployments`: `provider` (or the id's prefix) and `upstream_model`."""
    prefix, slash, rest = model_id.partition("/")
    explicit = entry.get("provider") is not None
    if not explicit and not (prefix and slash and rest):
        expected = (
            "must be provider/model like 'dashscope/qwen-turbo', or an alias with provider or deployments"
        )
        check.fail((*path, "id"), f"{expected}; got {model_id!r}")
        return ()
    # Provider tables are keyed in lower case (see the loader), so references are too.
    provider: str = (fields.get("provider", "") if explicit else prefix).lower()
    upstream = _upstream_model(
        entry, fields, model_id, provider, path, check=check, providers=providers, explicit=explicit
    )
    return (Deployment(provider, upstream),)


def _deployments(
    value: Any, model_id: str, path: KeyPath, check: Checker, providers: frozenset[str]
) -> tuple[Deployment, ...]:
    """`[[llm.models.deployments]]`: each a provider, its upstream model, a weight and a priority."""
    list_path = (*path, "deployments")
    if not isinstance(value, list) or not value:
        check.fail(list_path, "must be a non-empty list of tables ([[llm.models.deployments]] in TOML)")
        return ()
    deployments: list[Deployment] = []
    for index, table in enumerate(value):
        item_path = (*list_path, f"[{index}]")
        if not isinstance(table, Mapping):
            check.fail(item_path, f"must be a table, got {table!r}")
            continue
        check.warn_unknown(table, item_path, _DEPLOYMENT_FIELDS)
        fields = check.parse(table, item_path, _DEPLOYMENT_FIELDS)
        if table.get("provider") is None:
            check.fail((*item_path, "provider"), "is required")
            continue
        provider: str = fields.get("provider", "").lower()
        upstream = _upstream_model(
            table, fields, model_id, provider, item_path, check=check, providers=providers, explicit=True
        )
        deployments.append(Deployment(provider, upstream, fields.get("weight", 1), fields.get("priority", 0)))
    return tuple(deployments)


def _upstream_model(
    table: Mapping[str, Any],
    fields: Mapping[str, Any],
    model_id: str,
    provider: str,
    path: KeyPath,
    *,
    check: Checker,
    providers: frozenset[str],
    explicit: bool,
) -> str:
    """`upstream_model` as set, else the id minus `provider/`; checks that `provider` exists."""
    if provider and provider not in providers:
        where = "" if explicit else " (taken from the id's prefix)"
        configured = ", ".join(sorted(providers)) or "none"
        check.fail((*path, "provider"), f"no provider named {provider!r}{where}; configured: {configured}")
    if table.get("upstream_model") is not None:
        return str(fields.get("upstream_model", ""))
    if model_id.startswith(f"{provider}/"):
        return model_id[len(provider) + 1 :]
    if provider in providers:
        # Not for an unknown provider: that is reported already.
        check.fail((*path, "upstream_model"), f"is required when the id does not start with '{provider}/'")
    return ""


def _pricing(entry: Mapping[str, Any], path: KeyPath, check: Checker) -> Pricing | None:
    """USD per million tokens."""
    if entry.get("pricing") is None:
        return None
    pricing_path = (*path, "pricing")
    prices = check.section(entry, pricing_path, _PRICES)
    if not isinstance(entry["pricing"], Mapping):
        return None
    for key in ("prompt", "completion"):
        if entry["pricing"].get(key) is None:
            check.fail((*pricing_path, key), "is required")
    return Pricing(**{"prompt": 0.0, "completion": 0.0, **prices})


def limits_table(parent: Mapping[str, Any], key: str, parent_path: KeyPath, check: Checker) -> Limits:
    """The limit fields (`rpm`, `tpm`, `max_parallel`, `budget_usd`, `budget_period`, `soft_budget_usd`)
    of the table `parent[key]`, checked as the admin API checks a key's."""
    path = (*parent_path, key)
    table = parent.get(key)
    if table is None:
        return NO_LIMITS
    if not isinstance(table, Mapping):
        check.fail(path, f"must be a table, got {table!r}")
        return NO_LIMITS
    check.warn_unknown(table, path, LIMIT_FIELDS)
    try:
        return changed_limits(NO_LIMITS, table) or NO_LIMITS
    except InvalidRequest as exc:
        check.fail((*path, exc.param or ""), exc.message)
        return NO_LIMITS


def limits_settings(data: Mapping[str, Any], check: Checker) -> LimitsSettings:
    """`[limits]`: its settings, and the gateway-wide limits in `[limits.gateway]`."""
    path: KeyPath = ("limits",)
    table = check.table(data, path)
    check.warn_unknown(table, path, {*_LIMITS_FIELDS, "gateway"})
    fields = check.parse(table, path, _LIMITS_FIELDS)
    return LimitsSettings(gateway=limits_table(table, "gateway", path, check), **fields)
