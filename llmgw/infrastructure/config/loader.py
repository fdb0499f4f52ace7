"""Load settings: dynaconf reads the layered config files, `LLMGW_` env vars override them,
and everything is validated at once into frozen `Settings`.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf
from dynaconf.loaders.base import SourceMetadata
from dynaconf.utils.parse_conf import boolean_fix, parse_conf_data

from llmgw.infrastructure.config.effective import effective_settings
from llmgw.infrastructure.config.models import build_models
from llmgw.infrastructure.config.problems import ConfigError, ConfigProblem
from llmgw.infrastructure.config.provenance import Provenance, normalise_keys
from llmgw.infrastructure.config.providers import build_providers
from llmgw.infrastructure.config.sections import (
    build_grpc,
    build_health,
    build_http,
    build_log,
    build_server,
    build_storage,
)
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.config.validation import Checker

__all__ = ["ConfigError", "ConfigProblem", "effective_settings", "layer_files", "load_settings"]

ENV_PREFIX = "LLMGW_"
EXTENSIONS = ("toml", "yaml", "yml")
_LAYER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# dynaconf takes its own knobs (SETTINGS_FILE_FOR_DYNACONF, MERGE_ENABLED_FOR_DYNACONF, ...) from
# the process environment, and they beat the arguments we construct it with.
_DYNACONF_KNOB = re.compile(r".+_FOR_DYNACONF")
# What a config file may fail with while dynaconf parses it: tomllib errors are ValueErrors,
# and a YAML file whose top level is not a mapping raises AttributeError inside dynaconf.
# ruamel's YAMLError is looked up at run time: mypy cannot parse dynaconf's vendored copy.
_YAML_ERROR: type[Exception] = importlib.import_module("dynaconf.vendor.ruamel.yaml").YAMLError
_PARSE_ERRORS = (OSError, ValueError, AttributeError, _YAML_ERROR)


def load_settings(
    command: str,
    *,
    config_path: str | None = None,
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the config layers for `command` (`serve`, `grpc`, `http`); raise ConfigError listing every problem.

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

    provenance = Provenance()
    dynaconf = _new_dynaconf(config_dir)
    sources, parse_problems = _load_files(dynaconf, layer_files(config_dir, command, mode), provenance)
    if parse_problems:
        raise ConfigError(parse_problems)
    _apply_env_overrides(dynaconf, env, provenance)
    data = normalise_keys(_as_dict(dynaconf))

    check = Checker(provenance)
    settings = _build(data, check, env, sources)
    if check.problems:
        raise ConfigError(check.problems)
    return settings


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


def _new_dynaconf(config_dir: str, *, merge: bool = True) -> Any:
    return Dynaconf(
        settings_files=[],
        environments=False,
        merge_enabled=merge,
        envvar_prefix=ENV_PREFIX.rstrip("_"),
        nested_separator="__",
        # No env loader: LLMGW_ overrides come from the caller's environ mapping
        # (_apply_env_overrides), so tests stay hermetic whatever the process environment holds.
        loaders=[],
        core_loaders=["TOML", "YAML"],
        load_dotenv=False,
        includes=[],
        preload=[],
        root_path=os.path.abspath(config_dir),
    )


def _load_files(
    dynaconf: Any, files: list[str], provenance: Provenance
) -> tuple[tuple[str, ...], list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    for path in files:
        try:
            dynaconf.load_file(path=os.path.abspath(path), silent=False)
            alone = _read_alone(path)
        except _PARSE_ERRORS as exc:
            # dynaconf's AttributeError ("'list' object has no attribute 'get'") helps nobody.
            reason = "the top level must be a table of keys" if isinstance(exc, AttributeError) else exc
            problems.append(ConfigProblem("", path, f"cannot read file: {reason}"))
            continue
        provenance.record(path, normalise_keys(alone))
    return tuple(files), problems


def _read_alone(path: str) -> dict[str, Any]:
    """One file's own keys, to know which layer set what: the merged view cannot tell."""
    alone = _new_dynaconf(os.path.dirname(os.path.abspath(path)), merge=False)
    alone.load_file(path=os.path.abspath(path), silent=False)
    return _as_dict(alone)


def _apply_env_overrides(dynaconf: Any, env: Mapping[str, str], provenance: Provenance) -> None:
    """`LLMGW_LOG__FORMAT=json` and friends, parsed and merged the way dynaconf's env loader does."""
    overrides: dict[str, Any] = {}
    # Sorted so that LLMGW_LOG='{...}' lands before the more specific LLMGW_LOG__LEVEL.
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        key = var[len(ENV_PREFIX) :]
        path = tuple(part.lower() for part in key.split("__"))
        if not all(path):
            continue
        value = parse_conf_data(boolean_fix(env[var]), tomlfy=True, box_settings=dynaconf)
        overrides[key] = value
        provenance.record_env(var, path, env[var], normalise_keys(value, path))
    if overrides:
        dynaconf.update(overrides, loader_identifier=SourceMetadata("env", ENV_PREFIX.rstrip("_"), "global"))


def _as_dict(dynaconf: Any) -> dict[str, Any]:
    data: dict[str, Any] = dynaconf.as_dict()
    return data


def _build(
    data: dict[str, Any], check: Checker, env: Mapping[str, str], sources: tuple[str, ...]
) -> Settings:
    llm = check.table(data, ("llm",))
    check.reject_unknown(llm, ("llm",), {"providers", "models"})
    providers = build_providers(llm, check, env)
    return Settings(
        providers=providers,
        models=build_models(llm, check),
        log=build_log(data, check),
        http=build_http(data, check),
        grpc=build_grpc(data, check),
        health=build_health(data, check),
        storage=build_storage(data, check),
        server=build_server(data, check),
        sources=sources,
    )
