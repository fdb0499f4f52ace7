"""`[metrics]`, `[tracing]` and `[console]`: their defaults, values from the file, and each mistake reported
with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, effective_settings, load_settings
from llmgw.infrastructure.config.settings import ConsoleSettings, MetricsSettings, TracingSettings
from tests.config_files import write


def test_metrics_on_tracing_off_and_the_console_on_by_default(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", "")
    settings = load_settings("serve", config_path=str(tmp_path), environ={})
    assert settings.metrics == MetricsSettings(
        enabled=True, on_http_port=False, label_keys=(), max_model_labels=200
    )
    assert settings.tracing == TracingSettings(otlp_endpoint="", capture_content=False, sample_ratio=1.0)
    assert settings.console == ConsoleSettings(enabled=True)


def test_values_load_and_show_with_the_collector_password_masked(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        '[metrics]\non_http_port = true\nlabel_keys = ["abc123", "team-a"]\nmax_model_labels = 5\n'
        '[tracing]\notlp_endpoint = "https://u:secret@collector:4318"\ncapture_content = true\n'
        'service_name = "gw-eu"\nsample_ratio = 0.25\n'
        "[console]\nenabled = false\n",
    )
    settings = load_settings("serve", config_path=str(tmp_path), environ={})
    assert settings.metrics.label_keys == ("abc123", "team-a")
    assert settings.metrics.on_http_port
    assert settings.tracing.sample_ratio == 0.25
    assert settings.tracing.service_name == "gw-eu"
    assert not settings.console.enabled
    shown = effective_settings(settings)
    assert "secret" not in shown["tracing"]["otlp_endpoint"]
    assert shown["metrics"]["label_keys"] == ["abc123", "team-a"]
    assert shown["console"] == {"enabled": False}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[metrics]\nlabel_keys = "abc"', "metrics.label_keys"),
        ("[metrics]\nenabled = 3", "metrics.enabled"),
        ('[tracing]\notlp_endpoint = "collector:4318"', "tracing.otlp_endpoint"),
        ("[tracing]\nsample_ratio = 1.5", "tracing.sample_ratio"),
        ('[tracing]\nservice_name = ""', "tracing.service_name"),
        ('[console]\nenabled = "maybe"', "console.enabled"),
    ],
)
def test_a_bad_value_is_reported_with_its_key(tmp_path: Path, text: str, key: str) -> None:
    write(tmp_path, "default.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(tmp_path), environ={})
    assert [problem.key for problem in caught.value.problems] == [key]
