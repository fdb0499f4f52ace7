"""Where each configuration key came from: the last config file or env var that set it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KeyPath = tuple[str, ...]
DEFAULT_SOURCE = "default"
MODELS_PATH: KeyPath = ("llm", "models")


def model_segment(model_id: str) -> str:
    """The key segment naming one catalog entry, so problems read `llm.models[dashscope/qwen-turbo].name`."""
    return f"[{model_id}]"


def render_key(path: KeyPath) -> str:
    rendered = ""
    for segment in path:
        if segment.startswith("["):
            rendered += segment
        else:
            rendered += f".{segment}" if rendered else segment
    return rendered


def normalise_keys(value: Any, path: KeyPath = ()) -> Any:
    """Plain dicts and lists with lower-case keys.

    dynaconf keeps top-level keys and env-only nested keys UPPERCASE. Header names keep their
    spelling: they go on the wire as written.
    """
    if isinstance(value, Mapping):
        keep_case = bool(path) and path[-1] == "headers"
        normalised: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key) if keep_case else str(key).lower()
            normalised[name] = normalise_keys(item, (*path, name))
        return normalised
    if isinstance(value, list | tuple):
        return [normalise_keys(item, path) for item in value]
    return value


class Provenance:
    """Origins of keys, fed one source at a time in layer order so later sources win."""

    def __init__(self) -> None:
        self._origins: dict[KeyPath, str] = {}
        self._raw_env: dict[KeyPath, str] = {}
        # (model id, source) for ids repeated within one source: a later layer may replace a
        # model, but the same file defining it twice is a mistake.
        self.duplicate_models: list[tuple[str, str]] = []

    def record(self, source: str, data: Mapping[str, Any], prefix: KeyPath = ()) -> None:
        """Note `source` as the origin of every key in `data` (keys already normalised)."""
        for key, value in data.items():
            path = (*prefix, key)
            self._origins[path] = source
            if path == MODELS_PATH and isinstance(value, list):
                self._record_models(source, value)
            elif isinstance(value, Mapping):
                self.record(source, value, path)

    def record_env(self, var: str, path: KeyPath, raw: str, parsed: Any) -> None:
        """Note an `LLMGW_...` override; `raw` is kept because dynaconf parses env values as TOML."""
        nested: Any = parsed
        for key in reversed(path[1:]):
            nested = {key: nested}
        self.record(f"env {var}", {path[0]: nested})
        if not isinstance(parsed, str):
            self._raw_env[path] = raw

    def origin(self, path: KeyPath) -> str:
        """The source of `path`, or of its nearest ancestor when the key itself is missing."""
        for end in range(len(path), 0, -1):
            source = self._origins.get(path[:end])
            if source is not None:
                return source
        return DEFAULT_SOURCE

    def raw_env(self, path: KeyPath) -> str | None:
        """The env var's text for a key an env var set to a non-string (`API_KEY=12345`)."""
        return self._raw_env.get(path)

    def _record_models(self, source: str, models: list[Any]) -> None:
        # Fields of a model are not recorded one by one: a later definition replaces the whole
        # entry, so every field of it comes from the source that defined it last.
        seen: set[str] = set()
        for entry in models:
            model_id = entry.get("id") if isinstance(entry, Mapping) else None
            if not isinstance(model_id, str):
                continue
            if model_id in seen:
                self.duplicate_models.append((model_id, source))
            seen.add(model_id)
            self._origins[(*MODELS_PATH, model_segment(model_id))] = source
