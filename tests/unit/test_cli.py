"""The `llmgw` command's inspection subcommands (config show, config check, models) and start-up checks."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgw import cli
from llmgw.cli import main
from llmgw.infrastructure.config.settings import Settings

REPO_CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


def test_config_show_prints_the_merged_settings_with_secrets_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-very-secret-key")
    monkeypatch.setenv("LLMGW_LOG__FORMAT", "json")
    assert main(["--config-path", REPO_CONFIGS, "config", "show"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert "very-secret" not in out
    assert shown["llm"]["providers"]["openrouter"]["api_key"].startswith("sk-o")
    assert shown["log"]["format"] == "json"
    assert shown["sources"] == [str(Path(REPO_CONFIGS) / "default.toml")]


def test_models_prints_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--config-path", REPO_CONFIGS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "UPSTREAM", "MODEL", "CAPABILITIES", "FALLBACKS"]
    ids = [line.split()[0] for line in lines[1:]]
    assert "openrouter/anthropic/claude-3.5-sonnet" in ids
    assert len(ids) == 6


def test_models_prints_every_deployment_of_an_alias_and_its_fallbacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "default.toml").write_text(
        """
[llm.providers.east]
kind = "openai"
base_url = "https://east.example/v1"
[llm.providers.openrouter]
base_url = "https://openrouter.example/api/v1"
[[llm.models]]
id = "gpt-4o"
fallbacks = ["openrouter/openai/gpt-4o-mini"]
[[llm.models.deployments]]
provider = "east"
upstream_model = "gpt-4o"
weight = 2
[[llm.models.deployments]]
provider = "openrouter"
upstream_model = "openai/gpt-4o"
priority = 1
"""
    )
    assert main(["models", "--config-path", str(tmp_path)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert lines == [
        [
            "gpt-4o",
            "east",
            "gpt-4o",
            "(weight",
            "2,",
            "priority",
            "0)",
            "chat",
            "openrouter/openai/gpt-4o-mini",
        ],
        ["openrouter", "openai/gpt-4o", "(weight", "1,", "priority", "1)"],
    ]


def test_an_invalid_config_exits_2_listing_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "default.toml").write_text('[log]\nlevel = "loud"\n[http]\nlisten = "nowhere"\n')
    assert main(["serve", "--config-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "log.level" in err
    assert "http.listen" in err
    assert str(tmp_path / "default.toml") in err


def test_config_check_exits_0_with_an_ok_line_on_a_good_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--config-path", REPO_CONFIGS]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["ok: the serve configuration is valid (1 file(s) read)"]


def test_config_check_exits_1_on_unknown_keys_naming_each_file_and_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "default.toml"
    path.write_text('[llm.providers.dashscope]\nbase_url = "https://dashscope.example/v1"\ntimout = "5s"\n')
    monkeypatch.setenv("LLMGW_HTTP__LISTN", ":9090")

    assert main(["config", "check", "--config-path", str(tmp_path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("warning: llm.providers.dashscope.timout: unknown key")
    assert lines[0].endswith(f"(from {path})")
    assert lines[1].startswith("warning: http.listn: unknown key")
    assert lines[1].endswith("(from env LLMGW_HTTP__LISTN)")
    assert lines[2] == "llmgw config check: 0 problem(s), 2 unknown key(s)"


def test_config_check_exits_1_on_bad_values_listing_each_with_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "default.toml"
    path.write_text('[log]\nlevel = "loud"\ncolour = true\n')
    monkeypatch.setenv("LLMGW_HTTP__LISTEN", "nowhere")

    assert main(["config", "check", "--config-path", str(tmp_path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[:2] for line in lines[:3]] == [
        ["error", " log.level"],
        ["error", " http.listen"],
        ["warning", " log.colour"],
    ]
    assert lines[0].endswith(f"(from {path})")
    assert lines[1].endswith("(from env LLMGW_HTTP__LISTEN)")
    assert lines[3] == "llmgw config check: 2 problem(s), 1 unknown key(s)"


def test_config_check_reads_the_layers_of_the_command_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "grpc").mkdir()
    (tmp_path / "grpc" / "default.toml").write_text("[grpc]\nlisen = ':1'\n")

    assert main(["config", "check", "--config-path", str(tmp_path)]) == 0
    assert main(["config", "check", "--for", "grpc", "--config-path", str(tmp_path)]) == 1
    assert "grpc.lisen" in capsys.readouterr().out


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


@pytest.mark.usefixtures("restore_logging")
def test_serving_starts_despite_an_unknown_key_and_logs_a_warning_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "default.toml"
    path.write_text('[http]\nlistn = ":9090"\n')
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    served: list[tuple[Settings, str]] = []
    monkeypatch.setattr(cli, "run_loop", lambda settings, command: served.append((settings, command)))

    assert main(["http", "--config-path", str(tmp_path)]) == 0

    assert [command for _, command in served] == ["http"]
    (line,) = stderr.getvalue().splitlines()
    assert " WARNING llmgw.config " in line
    assert line.endswith(
        f"http.listn: unknown key; expected one of: cors, listen, max_body_bytes (from {path})"
    )


def test_config_show_still_prints_json_and_warns_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "default.toml").write_text("[server]\nworker = 2\n")

    assert main(["config", "show", "--config-path", str(tmp_path)]) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out)["server"]["workers"] == 1
    assert captured.err.startswith("llmgw: warning: server.worker: unknown key")
