"""Load settings: dynaconf reads and merges the layered config files and `LLMGW_` variables, then
everything is validated at once into frozen `Settings`.

dynaconf records no per-key history: its `loaded_by_loaders` keeps the merged result after each
source, not what that source itself set, so it cannot say which file or variable a bad key came
from. The loader therefore compares the merged values before and after each source and names the
source of every key it changed (a source that repeats a value unchanged is not named for it).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf
from dynaconf.utils.parse_conf import DynaconfFormatError, DynaconfParseError, boolean_fix

from llmgw.infrastructure.config.settings import ConfigError, ConfigProblem, Settings
from llmgw.infrastructure.config.show import effective_settings
from llmgw.infrastructure.config.validation import MODELS_PATH, TOP_LEVEL, KeyPath, Origins, build_settings

__all__ = ["ConfigError", "ConfigProblem", "effective_settings", "layer_files", "load_settings"]

ENV_PREFIX = "LLMGW_"
EXTENSIONS = ("toml", "yaml", "yml")
_LAYER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# dynaconf takes its own knobs (SETTINGS_FILE_FOR_DYNACONF, MERGE_ENABLED_FOR_DYNACONF, ...) from
# the process environment, and they beat the arguments we construct it with.
_DYNACONF_KNOB = re.compile(r".+_FOR_DYNACONF")
# What a source may fail with while dynaconf parses it: tomllib errors are ValueErrors, a YAML file
# whose top level is not a mapping raises AttributeError inside dynaconf, and `@int x`-style values
# raise dynaconf's own errors. ruamel's YAMLError is looked up at run time: mypy cannot parse
# dynaconf's vendored copy.
_YAML_ERROR: type[Exception] = importlib.import_module("dynaconf.vendor.ruamel.yaml").YAMLError
_PARSE_ERRORS = (OSError, ValueError, AttributeError, DynaconfParseError, DynaconfFormatError, _YAML_ERROR)
_UNSET = object()


def load_settings(
    command: str,
    *,
    config_path: str | None = None,
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the config layers for `command` (`serve`, `grpc`, `http`); raise ConfigError listing every problem.

    Keys the gateway does not know are not problems: they come back in `Settings.warnings`.
    `config_path` defaults to `CONFIG_PATH` or `./configs`, `mode` to `MODE`; `environ` (default
    `os.environ`) is the only environment consulted for overrides and API keys. The process
    environment is looked at only to refuse dynaconf's own `*_FOR_DYNACONF` variables.
    """
    env = os.environ if environ is None else environ
    config_dir, dir_source = _config_dir(config_path, env)
    mode, mode_source = (env.get("MODE") or None, "env MODE") if mode is None else (mode or None, "argument")
    problems = _preflight(config_dir, dir_source, command, mode, mode_source)
    if problems:
        raise ConfigError(problems)
    files = layer_files(config_dir, command, mode)
    data, origins = _read(config_dir, files, env)
    return build_settings(data, origins, env, tuple(files))


def layer_files(config_dir: str, command: str, mode: str | None) -> list[str]:
    """The config files that exist for these layers, in load order (later wins)."""
    stems = ["default"]
    if command:
        stems.append(f"{command}/default")
    if mode:
        stems.append(mode)
        if command:
            stems.append(f"{command}/{mode}")
    candidates = (os.path.join(config_dir, f"{stem}.{ext}") for stem in stems for ext in EXTENSIONS)
    # dict.fromkeys: MODE=default must not read default.toml twice.
    return [path for path in dict.fromkeys(candidates) if os.path.isfile(path)]


def _config_dir(config_path: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    if config_path is not None:
        return config_path, "argument"
    if env.get("CONFIG_PATH"):
        return env["CONFIG_PATH"], "env CONFIG_PATH"
    return "./configs", "default"


def _preflight(
    config_dir: str, dir_source: str, command: str, mode: str | None, mode_source: str
) -> list[ConfigProblem]:
    problems = [
        ConfigProblem(var, f"env {var}", "changes how dynaconf loads the config layers; unset it")
        for var in sorted(os.environ)
        if _DYNACONF_KNOB.fullmatch(var)
    ]
    if not Path(config_dir).is_dir():
        problems.append(ConfigProblem("config_path", dir_source, f"{config_dir!r} is not a directory"))
    # Both name files under the config directory; path separators would escape it.
    if command and not _LAYER_NAME.fullmatch(command):
        problems.append(ConfigProblem("command", "argument", f"{command!r} is not a valid command name"))
    if mode and not _LAYER_NAME.fullmatch(mode):
        problems.append(ConfigProblem("MODE", mode_source, f"{mode!r} is not a valid mode name"))
    return problems


def _read(config_dir: str, files: list[str], env: Mapping[str, str]) -> tuple[Mapping[str, Any], Origins]:
    """The merged config of `files` and then the `LLMGW_` variables of `env`, and where each key came from.

    dynaconf's env loader reads only `os.environ`; each variable of `env` is handed to dynaconf's
    `set(..., tomlfy=True)` instead, which parses and nests it the way that loader does.
    """
    dynaconf = Dynaconf(
        settings_files=[],
        environments=False,
        merge_enabled=True,
        nested_separator="__",
        loaders=[],
        core_loaders=["TOML", "YAML"],
        includes=[],
        preload=[],
        root_path=os.path.abspath(config_dir),
    )
    origins = Origins()
    problems: list[ConfigProblem] = []
    merged: Mapping[str, Any] = {}
    for path in files:
        try:
            dynaconf.load_file(path=os.path.abspath(path), silent=False)
            merged = _credit(path, merged, _lower_keys(dynaconf.as_dict()), origins)
        except _PARSE_ERRORS as exc:
            # dynaconf's AttributeError ("'list' object has no attribute 'get'") helps nobody.
            reason = "the top level must be a table of keys" if isinstance(exc, AttributeError) else exc
            problems.append(ConfigProblem("", path, f"cannot read file: {reason}"))
    # Sorted so that LLMGW_LOG='{...}' lands before the more specific LLMGW_LOG__LEVEL.
    for var in sorted(var for var in env if var.startswith(ENV_PREFIX)):
        key = tuple(part.lower() for part in var[len(ENV_PREFIX) :].split("__"))
        if not all(key) or (len(key) == 1 and key[0] not in TOP_LEVEL):
            # Not nested and not a section: another tool's variable (LLMGW_API_KEY of the client,
            # LLMGW_TEST_POSTGRES_DSN of the tests), not a typo in ours.
            continue
        try:
            dynaconf.set(var[len(ENV_PREFIX) :], boolean_fix(env[var]), loader_identifier=var, tomlfy=True)
            merged = _credit(f"env {var}", merged, _lower_keys(dynaconf.as_dict()), origins)
        except _PARSE_ERRORS as exc:
            problems.append(ConfigProblem(".".join(key), f"env {var}", f"cannot read value: {exc}"))
            continue
        # Read only where dynaconf turned the text into something else (`..._API_KEY=1e3`).
        origins.env_text[key] = env[var]
    if problems:
        raise ConfigError(problems)
    return merged, origins


def _credit(
    source: str, before: Any, after: Mapping[str, Any], origins: Origins, at: KeyPath = ()
) -> Mapping[str, Any]:
    """Name `source` as the origin of every key whose value differs from `before`; return `after`."""
    old_table = before if isinstance(before, Mapping) else {}
    for key, value in after.items():
        path = (*at, key)
        old = old_table.get(key, _UNSET)
        if value == old:
            continue
        origins.keys[path] = source
        if path == MODELS_PATH and isinstance(value, list):
            _credit_models(source, old if isinstance(old, list) else [], value, origins)
        elif isinstance(value, Mapping):
            _credit(source, old, value, origins, path)
    return after


def _credit_models(source: str, before: list[Any], after: list[Any], origins: Origins) -> None:
    # dynaconf's merge appends a source's [[llm.models]] to the list so far. Fields are credited to
    # the whole entry: a later entry with the same id replaces it entirely.
    added = after[len(before) :] if after[: len(before)] == before else after
    seen: set[str] = set()
    for entry in added:
        model_id = entry.get("id") if isinstance(entry, Mapping) else None
        if not isinstance(model_id, str):
            continue
        if model_id in seen:
            # A later layer may replace a model; the same source defining it twice is a mistake.
            message = f"id defined more than once in {source}"
            origins.problems.append(ConfigProblem(f"llm.models[{model_id}]", source, message))
        seen.add(model_id)
        origins.keys[(*MODELS_PATH, f"[{model_id}]")] = source


def _lower_keys(value: Any, header_names: bool = False) -> Any:
    """Plain dicts and lists with lower-case keys.

    dynaconf keeps top-level keys and env-only nested keys UPPERCASE. Header names keep their
    spelling: they go on the wire as written.
    """
    if isinstance(value, Mapping):
        return {
            (str(key) if header_names else str(key).lower()): _lower_keys(item, str(key).lower() == "headers")
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_lower_keys(item) for item in value]
    return value
