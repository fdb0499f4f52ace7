"""The `llmgw` command's inspection subcommands: config show, models, and start-up errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgw.cli import main

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
    assert lines[0].split() == ["ID", "PROVIDER", "UPSTREAM", "MODEL", "CAPABILITIES"]
    ids = [line.split()[0] for line in lines[1:]]
    assert "openrouter/anthropic/claude-3.5-sonnet" in ids
    assert len(ids) == 6


def test_an_invalid_config_exits_2_listing_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "default.toml").write_text('[log]\nlevel = "loud"\n[http]\nlisten = "nowhere"\n')
    assert main(["serve", "--config-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "log.level" in err
    assert "http.listen" in err
    assert str(tmp_path / "default.toml") in err
