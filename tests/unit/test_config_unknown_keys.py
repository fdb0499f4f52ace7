"""Unknown config keys (typos, most likely): a warning naming the key and its file or env var, never a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, ConfigProblem, load_settings
from tests.config_files import PROVIDER, write


def warnings_of(root: Path, mode: str | None = None, **environ: str) -> list[ConfigProblem]:
    return list(load_settings("serve", config_path=str(root), mode=mode, environ=environ).warnings)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param('[htpp]\nlisten = ":80"', "htpp", id="section"),
        pytest.param("[log]\ncolour = true", "log.colour", id="log"),
        pytest.param('[http]\nlistn = ":80"', "http.listn", id="http"),
        pytest.param("[server]\nworker = 2", "server.worker", id="server"),
        pytest.param("[llm]\nprovider = {}", "llm.provider", id="llm"),
        pytest.param(PROVIDER + 'timout = "5s"', "llm.providers.dashscope.timout", id="provider"),
        pytest.param(
            PROVIDER + '[[llm.models]]\nid = "dashscope/x"\ncapabilites = ["chat"]',
            "llm.models[dashscope/x].capabilites",
            id="model",
        ),
        pytest.param(
            PROVIDER
            + '[[llm.models]]\nid = "dashscope/x"\npricing = { prompt = 1, completion = 1, input = 2 }',
            "llm.models[dashscope/x].pricing.input",
            id="pricing",
        ),
    ],
)
def test_an_unknown_key_in_a_file_loads_with_a_warning_naming_the_file(
    tmp_path: Path, text: str, key: str
) -> None:
    path = write(tmp_path, "default.toml", text + "\n")

    (warning,) = warnings_of(tmp_path)

    assert (warning.key, warning.source) == (key, str(path))
    assert "unknown key; expected one of:" in warning.message
    assert str(warning).endswith(f"(from {path})")


def test_the_warning_lists_the_keys_that_would_have_been_right(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", '[http]\nlistn = ":80"\n')

    (warning,) = warnings_of(tmp_path)

    assert warning.message == "unknown key; expected one of: cors, listen, max_body_bytes"


def test_an_unknown_env_var_loads_with_a_warning_naming_the_variable(tmp_path: Path) -> None:
    settings = load_settings("serve", config_path=str(tmp_path), environ={"LLMGW_HTTP__LISTN": '":9090"'})

    (warning,) = settings.warnings
    assert (warning.key, warning.source) == ("http.listn", "env LLMGW_HTTP__LISTN")
    assert settings.http.listen.port == 8080


def test_an_unknown_provider_key_from_env_names_the_variable(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER)

    (warning,) = warnings_of(tmp_path, LLMGW_LLM__PROVIDERS__DASHSCOPE__TIMOUT="5s")

    assert warning.key == "llm.providers.dashscope.timout"
    assert warning.source == "env LLMGW_LLM__PROVIDERS__DASHSCOPE__TIMOUT"


def test_a_warning_names_the_layer_that_brought_the_unknown_key(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + 'timeout = "5s"\n')
    layer = write(tmp_path, "serve/prod.yaml", "llm:\n  providers:\n    dashscope:\n      timout: 9s\n")

    (warning,) = warnings_of(tmp_path, mode="prod")

    assert (warning.key, warning.source) == ("llm.providers.dashscope.timout", str(layer))


def test_known_keys_give_no_warnings_whatever_layer_or_env_var_sets_them(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + '[[llm.models]]\nid = "dashscope/x"\n')
    write(tmp_path, "serve/default.yaml", "log:\n  level: debug\n")

    assert (
        warnings_of(tmp_path, LLMGW_LLM__PROVIDERS__DASHSCOPE__HEADERS__X_TEAM="a", LLMGW_LOG__FORMAT="json")
        == []
    )


def test_unknown_keys_come_with_the_error_when_there_are_problems_too(tmp_path: Path) -> None:
    path = write(
        tmp_path, "default.toml", '[llm.providers.dashscope]\nbase_ur1 = "https://typo.example/v1"\n'
    )

    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(tmp_path), environ={})

    assert [(p.key, p.message) for p in caught.value.problems] == [
        ("llm.providers.dashscope.base_url", "is required")
    ]
    assert [(w.key, w.source) for w in caught.value.warnings] == [
        ("llm.providers.dashscope.base_ur1", str(path))
    ]


def test_other_tools_llmgw_variables_that_are_not_nested_are_neither_config_nor_warnings(
    tmp_path: Path,
) -> None:
    """The client library reads LLMGW_API_KEY and the test suite LLMGW_TEST_POSTGRES_DSN: a variable that
    names no config section and nests nothing is not a typo of ours."""
    assert (
        warnings_of(tmp_path, LLMGW_API_KEY="sk-llmgw-x", LLMGW_TEST_POSTGRES_DSN="postgresql://h/db") == []
    )


def test_a_nested_variable_under_an_unknown_section_still_warns(tmp_path: Path) -> None:
    (warning,) = warnings_of(tmp_path, LLMGW_LOGG__LEVEL="debug")

    assert warning.source == "env LLMGW_LOGG__LEVEL"
