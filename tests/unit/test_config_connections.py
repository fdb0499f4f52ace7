"""Connection limits in the config: `grpc.max_message_bytes`, `grpc.max_client_resets`, `server.header_timeout`,
`server.idle_timeout` and `server.max_connections` load from files and env with their defaults, are validated
with the key and source named, appear in `config show`, and the shipped defaults document them."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, effective_settings, load_settings
from llmgw.infrastructure.config.settings import GrpcSettings, ServerSettings
from tests.config_files import write

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_defaults_are_grpcs_own_message_size_and_bounds_fit_for_one_process(tmp_path: Path) -> None:
    settings = load_settings("serve", config_path=str(tmp_path), environ={})

    assert settings.grpc.max_message_bytes == 4_194_304
    assert settings.grpc.max_client_resets == 1000
    assert settings.server.header_timeout == 10.0
    assert settings.server.idle_timeout == 120.0
    assert settings.server.max_connections == 10_000


def test_the_shipped_default_toml_sets_each_key_to_its_default() -> None:
    settings = load_settings("serve", config_path=str(REPO_CONFIGS), environ={})

    assert settings.grpc == GrpcSettings()
    assert (
        settings.server.header_timeout,
        settings.server.idle_timeout,
        settings.server.max_connections,
    ) == (ServerSettings().header_timeout, ServerSettings().idle_timeout, ServerSettings().max_connections)


def test_files_and_env_set_them_with_durations_in_any_unit(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        '[grpc]\nmax_message_bytes = 1_048_576\n[server]\nheader_timeout = "1500ms"\nidle_timeout = "2m"\n',
    )

    settings = load_settings(
        "serve",
        config_path=str(tmp_path),
        environ={"LLMGW_SERVER__MAX_CONNECTIONS": "500", "LLMGW_GRPC__MAX_CLIENT_RESETS": "50"},
    )

    assert settings.grpc.max_message_bytes == 1_048_576
    assert settings.grpc.max_client_resets == 50
    assert settings.server.header_timeout == 1.5
    assert settings.server.idle_timeout == 120.0
    assert settings.server.max_connections == 500


BAD = [
    pytest.param("[grpc]\nmax_message_bytes = 0", "grpc.max_message_bytes", "at least 1", id="message-zero"),
    pytest.param('[grpc]\nmax_message_bytes = "4MB"', "grpc.max_message_bytes", "integer", id="message-text"),
    pytest.param("[grpc]\nmax_client_resets = 0", "grpc.max_client_resets", "at least 1", id="resets-zero"),
    pytest.param(
        "[server]\nheader_timeout = 0", "server.header_timeout", "longer than zero", id="header-zero"
    ),
    pytest.param('[server]\nidle_timeout = "soon"', "server.idle_timeout", "duration", id="idle-format"),
    pytest.param("[server]\nmax_connections = 0", "server.max_connections", "at least 1", id="connections"),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD)
def test_a_bad_value_is_a_problem_naming_its_key_and_file(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    path = write(tmp_path, "default.toml", text + "\n")

    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(tmp_path), environ={})

    (problem,) = caught.value.problems
    assert (problem.key, problem.source) == (key, str(path))
    assert message in problem.message


def test_every_bad_value_is_reported_at_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        "[grpc]\nmax_message_bytes = 0\nmax_client_resets = 0\n"
        "[server]\nheader_timeout = 0\nidle_timeout = 0\nmax_connections = 0\n",
    )

    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(tmp_path), environ={})

    assert {problem.key for problem in caught.value.problems} == {
        "grpc.max_message_bytes",
        "grpc.max_client_resets",
        "server.header_timeout",
        "server.idle_timeout",
        "server.max_connections",
    }


def test_config_show_lists_them(tmp_path: Path) -> None:
    shown = effective_settings(load_settings("serve", config_path=str(tmp_path), environ={}))

    assert shown["grpc"]["max_message_bytes"] == 4_194_304
    assert shown["grpc"]["max_client_resets"] == 1000
    assert shown["server"]["header_timeout"] == 10.0
    assert shown["server"]["idle_timeout"] == 120.0
    assert shown["server"]["max_connections"] == 10_000
