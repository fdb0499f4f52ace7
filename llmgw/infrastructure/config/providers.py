"""The `llm.providers` tables: upstream endpoints, their API keys, timeouts and extra headers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmgw.infrastructure.config.provenance import KeyPath
from llmgw.infrastructure.config.settings import ProviderKind, ProviderSettings
from llmgw.infrastructure.config.validation import REQUIRED, Checker, http_url
from llmgw.infrastructure.providers.dashscope import REGION_BASE_URLS

PROVIDERS_PATH: KeyPath = ("llm", "providers")
_KINDS = [kind.value for kind in ProviderKind]
_OPENROUTER_HEADERS = {"referer": "HTTP-Referer", "title": "X-Title"}
_KEYS = frozenset(
    {
        "kind",
        "base_url",
        "api_key",
        "timeout",
        "connect_timeout",
        "first_token_timeout",
        "idle_timeout",
        "max_connections",
        "headers",
        "region",
        *_OPENROUTER_HEADERS,
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def api_key_env_var(provider: str) -> str:
    """`DASHSCOPE_API_KEY` for `dashscope`, `MY_VLLM_API_KEY` for `my-vllm`."""
    return re.sub(r"[^A-Za-z0-9]", "_", provider).upper() + "_API_KEY"


def build_providers(
    llm: Mapping[str, Any], check: Checker, environ: Mapping[str, str]
) -> dict[str, ProviderSettings]:
    providers: dict[str, ProviderSettings] = {}
    for name, table in check.table(llm, PROVIDERS_PATH).items():
        path = (*PROVIDERS_PATH, name)
        if not isinstance(table, Mapping):
            check.fail(path, f"must be a table, got {table!r}")
            continue
        providers[name] = _provider(name, table, path, check, environ)
    return providers


def _provider(
    name: str, table: Mapping[str, Any], path: KeyPath, check: Checker, environ: Mapping[str, str]
) -> ProviderSettings:
    check.reject_unknown(table, path, _KEYS)
    kind = _kind(name, table, path, check)
    api_key, api_key_source = _api_key(name, table, path, check, environ)
    headers = _headers(table, path, check)
    headers.update(_openrouter_headers(kind, table, path, check))
    return ProviderSettings(
        name=name,
        kind=kind,
        base_url=_base_url(kind, table, path, check),
        api_key=api_key,
        api_key_source=api_key_source,
        timeout=check.duration(table, path, "timeout", "60s"),
        connect_timeout=check.duration(table, path, "connect_timeout", "5s"),
        first_token_timeout=check.duration(table, path, "first_token_timeout", "30s"),
        idle_timeout=check.duration(table, path, "idle_timeout", "30s"),
        max_connections=check.integer(table, path, "max_connections", 100, minimum=1),
        headers=headers,
    )


def _base_url(kind: ProviderKind, table: Mapping[str, Any], path: KeyPath, check: Checker) -> str:
    """`base_url`, or for DashScope its `region` (beijing, international, us): a key works in one region only."""
    if table.get("region") is None:
        return str(check.read(table, path, "base_url", http_url, default=REQUIRED, fallback=""))
    if kind is not ProviderKind.DASHSCOPE:
        check.fail((*path, "region"), "only providers of kind dashscope have regions; set base_url")
        return ""
    if table.get("base_url") is not None:
        check.fail((*path, "region"), "set base_url or region, not both")
        return ""
    region = check.choice(table, path, "region", "beijing", sorted(REGION_BASE_URLS))
    return REGION_BASE_URLS.get(region, "")


def _kind(name: str, table: Mapping[str, Any], path: KeyPath, check: Checker) -> ProviderKind:
    if table.get("kind") is None:
        if name in _KINDS:
            return ProviderKind(name)
        check.fail(
            (*path, "kind"), f"kind required: {name!r} is not a provider kind, set one of {', '.join(_KINDS)}"
        )
        return ProviderKind.OPENAI
    return ProviderKind(check.choice(table, path, "kind", ProviderKind.OPENAI.value, _KINDS))


def _api_key(
    name: str, table: Mapping[str, Any], path: KeyPath, check: Checker, environ: Mapping[str, str]
) -> tuple[str, str]:
    value = table.get("api_key")
    configured = "" if value is None else check.secret_text(value, (*path, "api_key"))
    if configured:
        return configured, "config"
    var = api_key_env_var(name)
    if environ.get(var):
        return environ[var], f"env {var}"
    # No key is fine: local OpenAI-compatible servers need none.
    return "", ""


def _headers(table: Mapping[str, Any], path: KeyPath, check: Checker) -> dict[str, str]:
    headers_path = (*path, "headers")
    headers: dict[str, str] = {}
    for header, value in check.table(table, headers_path).items():
        value_path = (*headers_path, header)
        if not _HEADER_NAME.fullmatch(header):
            check.fail(value_path, f"{header!r} is not a valid HTTP header name")
            continue
        text = check.secret_text(value, value_path)
        if text is not None and _valid_header_value(text, value_path, check):
            headers[header] = text
    return headers


def _openrouter_headers(
    kind: ProviderKind, table: Mapping[str, Any], path: KeyPath, check: Checker
) -> dict[str, str]:
    """OpenRouter's app attribution: `referer` and `title` become `HTTP-Referer` and `X-Title`."""
    headers: dict[str, str] = {}
    for key, header in _OPENROUTER_HEADERS.items():
        if key not in table:
            continue
        if kind is not ProviderKind.OPENROUTER:
            check.fail((*path, key), f"only valid for kind openrouter, this provider is kind {kind.value}")
            continue
        text = check.text(table, path, key, default="")
        if text and _valid_header_value(text, (*path, key), check):
            headers[header] = text
    return headers


def _valid_header_value(text: str, path: KeyPath, check: Checker) -> bool:
    # A line break would let a config value inject headers of its own.
    if "\r" in text or "\n" in text:
        check.fail(path, "must not contain line breaks")
        return False
    return True
