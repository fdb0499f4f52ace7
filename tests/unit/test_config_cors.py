"""`http.cors.allow_origins`: none by default, a list of origins or `*`, every mistake reported with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, effective_settings, load_settings
from tests.config_files import write


def test_no_origin_is_allowed_by_default(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", "")
    assert load_settings("serve", config_path=str(tmp_path), environ={}).http.cors == ()


def test_origins_load_from_the_file_and_the_environment(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        '[http.cors]\nallow_origins = ["https://app.example.com/", "http://localhost:3000"]\n',
    )
    settings = load_settings("serve", config_path=str(tmp_path), environ={})
    assert settings.http.cors == ("https://app.example.com", "http://localhost:3000")
    assert effective_settings(settings)["http"]["cors"] == {
        "allow_origins": ["https://app.example.com", "http://localhost:3000"]
    }
    # Like every list in the layers, the environment's adds to the file's.
    environ = {"LLMGW_HTTP__CORS__ALLOW_ORIGINS": '["*"]'}
    assert load_settings("serve", config_path=str(tmp_path), environ=environ).http.cors[-1] == "*"


@pytest.mark.parametrize(
    "text",
    [
        '[http.cors]\nallow_origins = "https://a.example"',
        '[http.cors]\nallow_origins = ["app.example"]',
        "[http.cors]\norigins = []",
    ],
)
def test_a_bad_value_is_reported_with_its_key(tmp_path: Path, text: str) -> None:
    write(tmp_path, "default.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(tmp_path), environ={})
    assert [problem.key for problem in caught.value.problems] == ["http.cors"]
