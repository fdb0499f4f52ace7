"""The merged settings as plain JSON-able data for `config show`, with every secret masked."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmgw.application.retries import RetryPolicy
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.infrastructure.config.settings import ListenAddress, ProviderSettings, Settings

_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|password|session", re.IGNORECASE)


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting after layering and defaults; durations in seconds, listen addresses as written."""
    return {
        "llm": {
            "providers": {name: _provider(provider) for name, provider in settings.providers.items()},
            "models": [_model(model) for model in settings.models],
            "retry": _retry(settings.retry),
            "circuit": {"failures": settings.circuit.failures, "cooldown": settings.circuit.cooldown},
        },
        "log": {"level": settings.log.level, "format": settings.log.format.value},
        "http": {
            "listen": format_listen(settings.http.listen),
            "max_body_bytes": settings.http.max_body_bytes,
            "cors": {"allow_origins": list(settings.http.cors)},
        },
        "grpc": {
            "listen": format_listen(settings.grpc.listen),
            "max_message_bytes": settings.grpc.max_message_bytes,
            "max_client_resets": settings.grpc.max_client_resets,
        },
        "health": {"listen": format_listen(settings.health.listen)},
        "storage": {
            "url": mask_url_password(settings.storage.url),
            "retention_days": settings.storage.retention_days,
            "timeout": settings.storage.timeout,
        },
        "server": {
            "workers": settings.server.workers,
            "shutdown_grace": settings.server.shutdown_grace,
            "max_in_flight": settings.server.max_in_flight,
            "header_timeout": settings.server.header_timeout,
            "idle_timeout": settings.server.idle_timeout,
            "max_connections": settings.server.max_connections,
        },
        "auth": {
            "enabled": settings.auth.enabled,
            "pepper": mask_secret(settings.auth.pepper),
            "admin_key": mask_secret(settings.auth.admin_key),
            "cache_ttl": settings.auth.cache_ttl,
            "rotation_grace": settings.auth.rotation_grace,
        },
        "cache": {"redis_url": mask_url_password(settings.cache.redis_url)},
        "metrics": {
            "enabled": settings.metrics.enabled,
            "on_http_port": settings.metrics.on_http_port,
            "label_keys": list(settings.metrics.label_keys),
            "max_model_labels": settings.metrics.max_model_labels,
        },
        "tracing": {
            "otlp_endpoint": mask_url_password(settings.tracing.otlp_endpoint),
            "capture_content": settings.tracing.capture_content,
            "service_name": settings.tracing.service_name,
            "sample_ratio": settings.tracing.sample_ratio,
        },
        "console": {"enabled": settings.console.enabled},
        "sources": list(settings.sources),
    }


def mask_secret(value: str) -> str:
    """`"sk-a…"`: enough to tell keys apart, never the key; short keys show less, empty stays empty."""
    if not value:
        return ""
    return value[: min(4, len(value) // 4)] + "…"


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def format_listen(address: ListenAddress) -> str:
    if not address.host:
        return f":{address.port}"
    if ":" in address.host:
        return f"[{address.host}]:{address.port}"
    return f"{address.host}:{address.port}"


def _provider(provider: ProviderSettings) -> dict[str, Any]:
    return {
        "kind": provider.kind.value,
        "base_url": provider.base_url,
        "api_key": mask_secret(provider.api_key),
        "api_key_source": provider.api_key_source,
        "timeout": provider.timeout,
        "connect_timeout": provider.connect_timeout,
        "first_token_timeout": provider.first_token_timeout,
        "idle_timeout": provider.idle_timeout,
        "max_connections": provider.max_connections,
        "headers": {
            name: mask_secret(value) if _SENSITIVE_HEADER.search(name) else value
            for name, value in provider.headers.items()
        },
        "transport": None if provider.transport is None else provider.transport.value,
        "proxy": None if provider.proxy is None else mask_url_password(provider.proxy),
        "max_response_bytes": provider.max_response_bytes,
        "max_in_flight": provider.max_in_flight,
        "retry": None if provider.retry is None else _retry(provider.retry),
    }


def _retry(policy: RetryPolicy) -> dict[str, Any]:
    """The policy's keys as configured (its `timeout` is the provider's, shown there)."""
    return {name: value for name, value in asdict(policy).items() if name != "timeout"}


def _model(model: ModelSpec) -> dict[str, Any]:
    pricing = model.pricing
    return {
        "id": model.id,
        "name": model.name,
        "provider": model.provider,
        "upstream_model": model.upstream_model,
        # Every model has at least one: a model configured with `provider` alone has that one.
        "deployments": [
            {
                "provider": deployment.provider,
                "upstream_model": deployment.upstream_model,
                "weight": deployment.weight,
                "priority": deployment.priority,
            }
            for deployment in model.deployments
        ],
        "capabilities": [capability.value for capability in Capability if capability in model.capabilities],
        "pricing": None
        if pricing is None
        else {
            "prompt": pricing.prompt,
            "completion": pricing.completion,
            "cached_prompt": pricing.cached_prompt,
        },
        "created": model.created,
        "owned_by": model.owned_by,
        "fallbacks": list(model.fallbacks),
        "fallbacks_on_context": list(model.fallbacks_on_context),
    }
