"""The `llm.models` catalog entries, deduplicated by id across layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgw.domain.catalog import Capability, ModelSpec, Pricing
from llmgw.infrastructure.config.provenance import MODELS_PATH, KeyPath, model_segment
from llmgw.infrastructure.config.validation import REQUIRED, Checker, non_negative_number

_KEYS = frozenset(
    {"id", "name", "provider", "upstream_model", "capabilities", "pricing", "created", "owned_by"}
)
_PRICING_KEYS = frozenset({"prompt", "completion", "cached_prompt"})
_CAPABILITIES = [capability.value for capability in Capability]


def dedupe_models(entries: list[Any]) -> list[Any]:
    """A later entry with an id seen before replaces that entry where it stood.

    dynaconf's merge appends a later layer's `[[llm.models]]` to the earlier list.
    """
    result: list[Any] = []
    position: dict[str, int] = {}
    for entry in entries:
        model_id = entry.get("id") if isinstance(entry, Mapping) else None
        if isinstance(model_id, str) and model_id in position:
            result[position[model_id]] = entry
            continue
        if isinstance(model_id, str):
            position[model_id] = len(result)
        result.append(entry)
    return result


def build_models(llm: Mapping[str, Any], check: Checker) -> tuple[ModelSpec, ...]:
    # Every declared provider counts, even one with problems of its own: those are reported
    # already and should not come back once per model.
    declared = llm.get("providers")
    providers = frozenset(declared) if isinstance(declared, Mapping) else frozenset()
    entries = llm.get("models")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        check.fail(MODELS_PATH, "must be a list of tables ([[llm.models]] in TOML)")
        return ()
    for model_id, source in check.provenance.duplicate_models:
        check.fail((*MODELS_PATH, model_segment(model_id)), f"id defined more than once in {source}")
    models = (_model(entry, index, check, providers) for index, entry in enumerate(dedupe_models(entries)))
    return tuple(model for model in models if model is not None)


def _model(entry: Any, index: int, check: Checker, providers: frozenset[str]) -> ModelSpec | None:
    anonymous: KeyPath = (*MODELS_PATH, f"[#{index}]")
    if not isinstance(entry, Mapping):
        check.fail(anonymous, f"must be a table, got {entry!r}")
        return None
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not model_id.strip():
        check.fail((*anonymous, "id"), _id_problem(model_id))
        return None
    path = (*MODELS_PATH, model_segment(model_id))
    check.reject_unknown(entry, path, _KEYS)
    prefix, slash, rest = model_id.partition("/")
    if not (prefix and slash and rest):
        check.fail((*path, "id"), f"must be provider/model like 'dashscope/qwen-turbo', got {model_id!r}")
    provider = _provider(entry, path, prefix if slash else "", check, providers)
    return ModelSpec(
        id=model_id,
        name=check.text(entry, path, "name", default=model_id),
        provider=provider,
        upstream_model=_upstream_model(entry, path, model_id, provider, check, known=provider in providers),
        capabilities=_capabilities(entry, path, check),
        pricing=_pricing(entry, path, check),
        created=check.integer(entry, path, "created", 0, minimum=0),
        owned_by=check.text(entry, path, "owned_by", default=provider),
    )


def _id_problem(model_id: object) -> str:
    if model_id is None:
        return "is required"
    if isinstance(model_id, str):
        return "must not be empty"
    return f"must be a string, got {model_id!r}"


def _provider(
    entry: Mapping[str, Any],
    path: KeyPath,
    prefix: str,
    check: Checker,
    providers: frozenset[str],
) -> str:
    explicit = entry.get("provider") is not None
    # Provider tables are keyed in lower case (see normalise_keys), so references are too.
    name = (check.text(entry, path, "provider") if explicit else prefix).lower()
    if name and name not in providers:
        configured = ", ".join(sorted(providers)) or "none"
        where = "" if explicit else " (taken from the id's prefix)"
        check.fail((*path, "provider"), f"no provider named {name!r}{where}; configured: {configured}")
    return name


def _upstream_model(
    entry: Mapping[str, Any], path: KeyPath, model_id: str, provider: str, check: Checker, *, known: bool
) -> str:
    if entry.get("upstream_model") is not None:
        upstream = check.text(entry, path, "upstream_model")
        if not upstream.strip():
            check.fail((*path, "upstream_model"), "must not be empty")
        return upstream
    if model_id.startswith(f"{provider}/"):
        return model_id[len(provider) + 1 :]
    # An unknown provider is reported already; no second problem for the same mistake.
    if known:
        check.fail((*path, "upstream_model"), f"is required when the id does not start with '{provider}/'")
    return ""


def _capabilities(entry: Mapping[str, Any], path: KeyPath, check: Checker) -> frozenset[Capability]:
    value = entry.get("capabilities")
    if value is None:
        return frozenset({Capability.CHAT})
    if not isinstance(value, list) or not value:
        check.fail((*path, "capabilities"), f"must be a non-empty list of: {', '.join(_CAPABILITIES)}")
        return frozenset({Capability.CHAT})
    capabilities: set[Capability] = set()
    for item in value:
        if isinstance(item, str) and item.lower() in _CAPABILITIES:
            capabilities.add(Capability(item.lower()))
        else:
            check.fail(
                (*path, "capabilities"), f"unknown capability {item!r}; expected {', '.join(_CAPABILITIES)}"
            )
    return frozenset(capabilities)


def _pricing(entry: Mapping[str, Any], path: KeyPath, check: Checker) -> Pricing | None:
    """USD per million tokens."""
    if entry.get("pricing") is None:
        return None
    pricing_path = (*path, "pricing")
    table = check.table(entry, pricing_path)
    if not isinstance(entry["pricing"], Mapping):
        return None
    check.reject_unknown(table, pricing_path, _PRICING_KEYS)
    cached: float | None = None
    if table.get("cached_prompt") is not None:
        cached = check.read(
            table, pricing_path, "cached_prompt", non_negative_number, default=REQUIRED, fallback=0.0
        )
    return Pricing(
        prompt=check.read(table, pricing_path, "prompt", non_negative_number, default=REQUIRED, fallback=0.0),
        completion=check.read(
            table, pricing_path, "completion", non_negative_number, default=REQUIRED, fallback=0.0
        ),
        cached_prompt=cached,
    )
