"""Config validation: every rule, each problem naming its key and source, all reported at once.

Unknown keys are warnings, not problems: see test_config_unknown_keys.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, ConfigProblem, load_settings
from tests.config_files import PROVIDER, write


def problems_of(root: Path, mode: str | None = None, **environ: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(root), mode=mode, environ=environ)
    return list(caught.value.problems)


def only_problem(root: Path, text: str) -> ConfigProblem:
    path = write(root, "default.toml", text)
    problems = problems_of(root)
    assert len(problems) == 1, problems
    assert problems[0].source == str(path)
    return problems[0]


PROVIDER_CASES = [
    pytest.param('kind = "azure"', "kind", "must be one of openai, dashscope, openrouter", id="kind-unknown"),
    pytest.param(
        'base_url = "ftp://files.example"', "base_url", "http:// or https:// URL", id="base-url-scheme"
    ),
    pytest.param('base_url = "https://"', "base_url", "http:// or https:// URL", id="base-url-no-host"),
    pytest.param("api_key = [1, 2]", "api_key", "must be a string, got list", id="api-key-type"),
    pytest.param('timeout = "fast"', "timeout", "must be a duration", id="timeout-format"),
    pytest.param("timeout = 0", "timeout", "longer than zero", id="timeout-zero"),
    pytest.param('connect_timeout = "0s"', "connect_timeout", "longer than zero", id="connect-timeout-zero"),
    pytest.param(
        "first_token_timeout = -5", "first_token_timeout", "longer than zero", id="first-token-negative"
    ),
    pytest.param("idle_timeout = true", "idle_timeout", "must be a duration", id="idle-timeout-bool"),
    pytest.param("max_connections = 0", "max_connections", "at least 1", id="max-connections-zero"),
    pytest.param(
        'max_connections = "ten"', "max_connections", "must be an integer", id="max-connections-type"
    ),
    pytest.param('headers = "X-A: b"', "headers", "must be a table", id="headers-not-table"),
    pytest.param(
        'headers = { "Bad Header" = "x" }', "headers.Bad Header", "valid HTTP header name", id="hdr-name"
    ),
    pytest.param(
        'headers = { "X-A" = "a\\r\\nX-B: b" }', "headers.X-A", "line breaks", id="header-injection"
    ),
    pytest.param('headers = { "X-A" = ["a"] }', "headers.X-A", "must be a string", id="header-value-type"),
    pytest.param(
        'referer = "https://example.com"', "referer", "only valid for kind openrouter", id="referer-kind"
    ),
]


@pytest.mark.parametrize(("line", "key", "message"), PROVIDER_CASES)
def test_each_bad_provider_value_is_reported_with_its_key(
    tmp_path: Path, line: str, key: str, message: str
) -> None:
    base_url = "" if line.startswith("base_url") else 'base_url = "https://dashscope.example/v1"\n'
    problem = only_problem(tmp_path, "[llm.providers.dashscope]\n" + base_url + line + "\n")

    assert problem.key == f"llm.providers.dashscope.{key}"
    assert message in problem.message


def test_a_provider_without_base_url_is_reported(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[llm.providers.dashscope]\ntimeout = "5s"\n')

    assert (problem.key, problem.message) == ("llm.providers.dashscope.base_url", "is required")


def test_a_provider_named_after_no_kind_needs_an_explicit_kind(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[llm.providers.local]\nbase_url = "http://127.0.0.1:8000/v1"\n')

    assert problem.key == "llm.providers.local.kind"
    assert "kind required" in problem.message


def test_a_provider_that_is_not_a_table_is_reported(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[llm.providers]\ndashscope = "https://dashscope.example/v1"\n')

    assert problem.key == "llm.providers.dashscope"
    assert "must be a table" in problem.message


MODEL_CASES = [
    pytest.param('id = "qwen-turbo"', "llm.models[qwen-turbo].id", "provider/model", id="id-no-slash"),
    pytest.param('id = "dashscope/"', "llm.models[dashscope/].id", "provider/model", id="id-no-model"),
    pytest.param('name = "x"', "llm.models[#0].id", "is required", id="id-missing"),
    pytest.param("id = 7", "llm.models[#0].id", "must be a string", id="id-type"),
    pytest.param('id = " "', "llm.models[#0].id", "must not be empty", id="id-empty"),
    pytest.param(
        'id = "dashscope/x"\nprovider = "openai"',
        "llm.models[dashscope/x].provider",
        "no provider",
        id="provider",
    ),
    pytest.param(
        'id = "acme/x"', "llm.models[acme/x].provider", "taken from the id's prefix", id="prefix-unknown"
    ),
    pytest.param(
        'id = "fast/x"\nprovider = "dashscope"',
        "llm.models[fast/x].upstream_model",
        "is required when the id does not start with 'dashscope/'",
        id="alias-needs-upstream",
    ),
    pytest.param(
        'id = "dashscope/x"\ncapabilities = []',
        "llm.models[dashscope/x].capabilities",
        "non-empty",
        id="caps-empty",
    ),
    pytest.param(
        'id = "dashscope/x"\ncapabilities = "chat"',
        "llm.models[dashscope/x].capabilities",
        "list",
        id="caps-str",
    ),
    pytest.param(
        'id = "dashscope/x"\ncapabilities = ["chat", "audio"]',
        "llm.models[dashscope/x].capabilities",
        "unknown capability 'audio'",
        id="caps-unknown",
    ),
    pytest.param(
        'id = "dashscope/x"\npricing = { prompt = -1, completion = 1 }',
        "llm.models[dashscope/x].pricing.prompt",
        "must not be negative",
        id="price-negative",
    ),
    pytest.param(
        'id = "dashscope/x"\npricing = { prompt = 1 }',
        "llm.models[dashscope/x].pricing.completion",
        "is required",
        id="price-missing",
    ),
    pytest.param(
        'id = "dashscope/x"\npricing = { prompt = 1, completion = "free" }',
        "llm.models[dashscope/x].pricing.completion",
        "must be a number",
        id="price-type",
    ),
    pytest.param(
        'id = "dashscope/x"\npricing = 3',
        "llm.models[dashscope/x].pricing",
        "must be a table",
        id="price-not-table",
    ),
    pytest.param(
        'id = "dashscope/x"\ncreated = -1', "llm.models[dashscope/x].created", "at least 0", id="created"
    ),
    pytest.param(
        'id = "dashscope/x"\nname = 5', "llm.models[dashscope/x].name", "must be a string", id="name-type"
    ),
    pytest.param(
        'id = "dashscope/x"\nowned_by = false',
        "llm.models[dashscope/x].owned_by",
        "must be a string",
        id="owned-by",
    ),
]


@pytest.mark.parametrize(("body", "key", "message"), MODEL_CASES)
def test_each_bad_model_value_is_reported_with_its_key(
    tmp_path: Path, body: str, key: str, message: str
) -> None:
    problem = only_problem(tmp_path, PROVIDER + "[[llm.models]]\n" + body + "\n")

    assert problem.key == key
    assert message in problem.message


def test_a_broken_provider_is_reported_once_not_again_for_each_of_its_models(tmp_path: Path) -> None:
    text = '[llm.providers.dashscope]\ntimeout = "5s"\n[[llm.models]]\nid = "dashscope/a"\n'
    text += '[[llm.models]]\nid = "dashscope/b"\n'

    problem = only_problem(tmp_path, text)

    assert problem.key == "llm.providers.dashscope.base_url"


def test_models_must_be_a_list_of_tables(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, PROVIDER + '[llm]\nmodels = "dashscope/qwen-turbo"\n')

    assert problem.key == "llm.models"
    assert "list of tables" in problem.message


def test_the_same_model_id_twice_in_one_file_is_reported(tmp_path: Path) -> None:
    text = PROVIDER + '[[llm.models]]\nid = "dashscope/x"\n[[llm.models]]\nid = "dashscope/x"\n'

    problem = only_problem(tmp_path, text)

    assert problem.key == "llm.models[dashscope/x]"
    assert "more than once" in problem.message


SECTION_CASES = [
    pytest.param('[log]\nlevel = "verbose"', "log.level", "debug, info, warning, error", id="log-level"),
    pytest.param('[log]\nformat = "xml"', "log.format", "text, json", id="log-format"),
    pytest.param('[http]\nlisten = "8080"', "http.listen", "host:port", id="listen-no-colon"),
    pytest.param("[http]\nlisten = 8080", "http.listen", "host:port", id="listen-int"),
    pytest.param('[http]\nlisten = ":99999"', "http.listen", "0-65535", id="listen-port-range"),
    pytest.param('[grpc]\nlisten = "::1:50051"', "grpc.listen", "brackets", id="listen-bare-ipv6"),
    pytest.param('[health]\nlisten = "[::1]"', "health.listen", "host:port", id="listen-no-port"),
    pytest.param('[health]\nlisten = "my host:80"', "health.listen", "host:port", id="listen-bad-host"),
    pytest.param("[http]\nmax_body_bytes = 0", "http.max_body_bytes", "at least 1", id="max-body"),
    pytest.param(
        '[storage]\nurl = "mysql://db/llmgw"', "storage.url", "memory://, sqlite:///path", id="storage-url"
    ),
    pytest.param(
        '[storage]\nurl = "sqlite:///"', "storage.url", "sqlite:///path", id="storage-sqlite-no-path"
    ),
    pytest.param("[storage]\nretention_days = -1", "storage.retention_days", "at least 0", id="retention"),
    pytest.param("[server]\nworkers = 0", "server.workers", "at least 1", id="workers"),
    pytest.param('[server]\nshutdown_grace = "soon"', "server.shutdown_grace", "duration", id="grace"),
    pytest.param('log = "debug"', "log", "must be a table", id="section-not-table"),
]


@pytest.mark.parametrize(("text", "key", "message"), SECTION_CASES)
def test_each_bad_section_value_is_reported_with_its_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    problem = only_problem(tmp_path, text + "\n")

    assert problem.key == key
    assert message in problem.message


def test_a_storage_dsn_with_a_password_is_not_echoed_in_the_problem(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[storage]\nurl = "postgresq://gw:hunter2@db/llmgw"\n')

    assert problem.key == "storage.url"
    assert "hunter2" not in str(problem)


def test_a_problem_names_the_layer_file_that_set_the_key_last(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + '[log]\nlevel = "info"\n')
    layer = write(tmp_path, "serve/prod.yaml", "log:\n  level: chatty\n")

    (problem,) = problems_of(tmp_path, mode="prod")

    assert (problem.key, problem.source) == ("log.level", str(layer))


def test_a_problem_from_an_env_override_names_the_env_var(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER)

    (problem,) = problems_of(tmp_path, LLMGW_LLM__PROVIDERS__DASHSCOPE__TIMEOUT="forever")

    assert problem.key == "llm.providers.dashscope.timeout"
    assert problem.source == "env LLMGW_LLM__PROVIDERS__DASHSCOPE__TIMEOUT"


def test_a_missing_key_is_blamed_on_the_last_source_that_defined_its_table(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", '[llm.providers.local]\nkind = "openai"\n')
    layer = write(tmp_path, "prod.toml", '[llm.providers.local]\ntimeout = "5s"\n')

    (problem,) = problems_of(tmp_path, mode="prod")

    assert (problem.key, problem.message, problem.source) == (
        "llm.providers.local.base_url",
        "is required",
        str(layer),
    )


def test_a_replaced_model_is_blamed_on_the_layer_that_replaced_it(tmp_path: Path) -> None:
    write(
        tmp_path, "default.toml", PROVIDER + '[[llm.models]]\nid = "dashscope/x"\ncapabilities = ["chat"]\n'
    )
    layer = write(
        tmp_path, "serve/default.toml", '[[llm.models]]\nid = "dashscope/x"\ncapabilities = ["sing"]\n'
    )

    (problem,) = problems_of(tmp_path)

    assert (problem.key, problem.source) == ("llm.models[dashscope/x].capabilities", str(layer))


def test_every_problem_is_reported_at_once_with_its_key_and_source(tmp_path: Path) -> None:
    default = write(
        tmp_path,
        "default.toml",
        PROVIDER
        + 'timeout = "soon"\nbase_ur1 = "https://x.example"\n'
        + '[llm.providers.local]\nbase_url = "http://127.0.0.1:8000/v1"\n'
        + '[[llm.models]]\nid = "nowhere/model"\n'
        + '[http]\nlisten = "8080"\n',
    )
    layer = write(tmp_path, "serve/default.yaml", "storage:\n  url: mysql://db\nserver:\n  workers: 0\n")

    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(tmp_path), environ={"LLMGW_LOG__FORMAT": "xml"})

    found = {(problem.key, problem.source) for problem in caught.value.problems}
    assert found == {
        ("llm.providers.dashscope.timeout", str(default)),
        ("llm.providers.local.kind", str(default)),
        ("llm.models[nowhere/model].provider", str(default)),
        ("http.listen", str(default)),
        ("storage.url", str(layer)),
        ("server.workers", str(layer)),
        ("log.format", "env LLMGW_LOG__FORMAT"),
    }
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid configuration: 7 problems"
    for problem in caught.value.problems:
        assert any(problem.key in line and problem.source in line for line in lines[1:])
    # The typo that explains nothing else is wrong still reaches whoever reads the error.
    (warning,) = caught.value.warnings
    assert (warning.key, warning.source) == ("llm.providers.dashscope.base_ur1", str(default))
    assert lines[-1] == f"  warning: {warning}"


@pytest.mark.parametrize(
    ("name", "text"),
    [("default.toml", "[log\nlevel = 1\n"), ("default.yaml", "log: [\n"), ("default.yml", "- a\n- b\n")],
)
def test_a_file_that_cannot_be_parsed_is_reported_by_path(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)

    (problem,) = problems_of(tmp_path)

    assert problem.source == str(path)
    assert "cannot read file" in problem.message


def test_a_missing_config_directory_is_reported(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope")

    assert (problem.key, problem.source) == ("config_path", "argument")


def test_a_missing_config_directory_from_CONFIG_PATH_names_the_env_var(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings("serve", environ={"CONFIG_PATH": str(tmp_path / "nope")})

    assert [(p.key, p.source) for p in caught.value.problems] == [("config_path", "env CONFIG_PATH")]


def test_a_mode_that_would_escape_the_config_directory_is_refused(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, MODE="../etc/prod")

    assert (problem.key, problem.source) == ("MODE", "env MODE")


def test_dynaconf_knobs_in_the_process_environment_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dynaconf would let this beat merge_enabled=True and silently stop tables merging.
    monkeypatch.setenv("MERGE_ENABLED_FOR_DYNACONF", "false")

    (problem,) = problems_of(tmp_path)

    assert (problem.key, problem.source) == ("MERGE_ENABLED_FOR_DYNACONF", "env MERGE_ENABLED_FOR_DYNACONF")


def test_an_env_value_dynaconf_cannot_parse_is_reported_with_its_variable(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, LLMGW_SERVER__WORKERS="@int two")

    assert (problem.key, problem.source) == ("server.workers", "env LLMGW_SERVER__WORKERS")
    assert "cannot read value" in problem.message
