"""Config layering: files per command and MODE, TOML and YAML, env overrides, sources, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgw.domain.catalog import Capability, Pricing
from llmgw.infrastructure.config.loader import effective_settings, load_settings
from llmgw.infrastructure.config.settings import ListenAddress, LogFormat, ProviderKind, Settings
from llmgw.infrastructure.config.validation import parse_duration
from tests.config_files import PROVIDER, write

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def load(root: Path, command: str = "serve", mode: str | None = None, **environ: str) -> Settings:
    return load_settings(command, config_path=str(root), mode=mode, environ=environ)


LAYERS = [
    ("default.toml", "error"),
    ("serve/default.toml", "warning"),
    ("prod.toml", "info"),
    ("serve/prod.toml", "debug"),
]


@pytest.mark.parametrize("present", [1, 2, 3, 4])
def test_each_layer_overrides_the_layers_before_it(tmp_path: Path, present: int) -> None:
    for name, level in LAYERS[:present]:
        write(tmp_path, name, f'[log]\nlevel = "{level}"\n')

    settings = load(tmp_path, mode="prod")

    assert settings.log.level == LAYERS[present - 1][1]
    assert settings.sources == tuple(str(tmp_path / name) for name, _ in LAYERS[:present])


def test_a_later_layer_wins_even_when_an_earlier_one_set_the_key_too(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", '[log]\nlevel = "error"\n')
    write(tmp_path, "serve/prod.toml", '[log]\nlevel = "debug"\n')

    assert load(tmp_path, mode="prod").log.level == "debug"


def test_layers_of_another_command_or_mode_are_not_read(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", '[log]\nlevel = "error"\n')
    write(tmp_path, "grpc/default.toml", '[log]\nlevel = "debug"\n')
    write(tmp_path, "staging.toml", '[log]\nlevel = "debug"\n')

    settings = load(tmp_path, mode="prod")

    assert settings.log.level == "error"
    assert settings.sources == (str(tmp_path / "default.toml"),)


def test_mode_comes_from_the_MODE_env_var_unless_given(tmp_path: Path) -> None:
    write(tmp_path, "prod.toml", '[log]\nlevel = "warning"\n')
    write(tmp_path, "dev.toml", '[log]\nlevel = "debug"\n')

    assert load(tmp_path, MODE="prod").log.level == "warning"
    assert load(tmp_path, mode="dev", MODE="prod").log.level == "debug"
    assert load(tmp_path).log.level == "info"


def test_config_path_comes_from_CONFIG_PATH_unless_given(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", '[log]\nformat = "json"\n')

    settings = load_settings("serve", environ={"CONFIG_PATH": str(tmp_path)})

    assert settings.log.format is LogFormat.JSON
    assert settings.sources == (str(tmp_path / "default.toml"),)


def test_tables_deep_merge_across_layers(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        PROVIDER + 'timeout = "20s"\nheaders = { "X-Team" = "search" }\n',
    )
    write(
        tmp_path,
        "prod.toml",
        '[llm.providers.dashscope]\nconnect_timeout = "2s"\nheaders = { "X-Env" = "prod" }\n',
    )

    provider = load(tmp_path, mode="prod").providers["dashscope"]

    assert provider.base_url == "https://dashscope.example/v1"
    assert provider.timeout == 20.0
    assert provider.connect_timeout == 2.0
    assert provider.headers == {"X-Team": "search", "X-Env": "prod"}


def test_a_provider_gets_the_documented_defaults(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER)

    provider = load(tmp_path).providers["dashscope"]

    assert provider.kind is ProviderKind.DASHSCOPE
    assert (provider.timeout, provider.connect_timeout) == (60.0, 5.0)
    assert (provider.first_token_timeout, provider.idle_timeout) == (30.0, 30.0)
    assert provider.max_connections == 100
    assert provider.headers == {}
    assert (provider.api_key, provider.api_key_source) == ("", "")


TOML_CONFIG = """
[log]
level = "debug"
format = "json"
[http]
listen = "127.0.0.1:9000"
max_body_bytes = 1_048_576
[storage]
url = "memory://"
retention_days = 7
[server]
workers = 2
shutdown_grace = "1m30s"
[llm.providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
timeout = "1500ms"
headers = { "X-Team" = "search" }
[[llm.models]]
id = "local/llama-3-8b"
name = "Llama 3 8B"
capabilities = ["chat", "tools"]
pricing = { prompt = 0.1, completion = 0.2 }
"""

YAML_CONFIG = """
log:
  level: debug
  format: json
http:
  listen: "127.0.0.1:9000"
  max_body_bytes: 1048576
storage:
  url: "memory://"
  retention_days: 7
server:
  workers: 2
  shutdown_grace: 1m30s
llm:
  providers:
    local:
      kind: openai
      base_url: http://127.0.0.1:8000/v1
      timeout: 1500ms
      headers:
        X-Team: search
  models:
    - id: local/llama-3-8b
      name: Llama 3 8B
      capabilities: [chat, tools]
      pricing: {prompt: 0.1, completion: 0.2}
"""


@pytest.mark.parametrize(("name", "text"), [("default.toml", TOML_CONFIG), ("default.yaml", YAML_CONFIG)])
def test_toml_and_yaml_configs_load_to_the_same_settings(tmp_path: Path, name: str, text: str) -> None:
    write(tmp_path, name, text)

    settings = load(tmp_path)

    assert settings.log.level == "debug"
    assert settings.log.format is LogFormat.JSON
    assert settings.http.listen == ListenAddress("127.0.0.1", 9000)
    assert settings.http.max_body_bytes == 1_048_576
    assert (settings.storage.url, settings.storage.retention_days) == ("memory://", 7)
    assert (settings.server.workers, settings.server.shutdown_grace) == (2, 90.0)
    local = settings.providers["local"]
    assert (local.kind, local.timeout, local.headers) == (ProviderKind.OPENAI, 1.5, {"X-Team": "search"})
    (model,) = settings.models
    assert (model.id, model.name, model.provider, model.upstream_model) == (
        "local/llama-3-8b",
        "Llama 3 8B",
        "local",
        "llama-3-8b",
    )
    assert model.capabilities == {Capability.CHAT, Capability.TOOLS}
    assert model.pricing == Pricing(prompt=0.1, completion=0.2)


def test_toml_yaml_and_yml_layers_mix_and_merge(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + 'timeout = "20s"\n[log]\nlevel = "error"\n')
    write(tmp_path, "serve/default.yaml", "llm:\n  providers:\n    dashscope:\n      idle_timeout: 2m\n")
    write(tmp_path, "prod.yml", "log:\n  format: json\n")

    settings = load(tmp_path, mode="prod")

    provider = settings.providers["dashscope"]
    assert (provider.timeout, provider.idle_timeout) == (20.0, 120.0)
    assert (settings.log.level, settings.log.format) == ("error", LogFormat.JSON)
    assert settings.sources == (
        str(tmp_path / "default.toml"),
        str(tmp_path / "serve/default.yaml"),
        str(tmp_path / "prod.yml"),
    )


def test_sources_lists_every_file_read_in_layer_order(tmp_path: Path) -> None:
    for name in ["serve/prod.yaml", "prod.toml", "default.yml", "default.toml", "serve/default.toml"]:
        write(tmp_path, name, "")

    settings = load(tmp_path, mode="prod")

    assert settings.sources == tuple(
        str(tmp_path / name)
        for name in ["default.toml", "default.yml", "serve/default.toml", "prod.toml", "serve/prod.yaml"]
    )


def test_an_empty_config_directory_gives_the_built_in_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.providers == {}
    assert settings.models == ()
    assert settings.sources == ()
    assert settings.http.listen == ListenAddress("", 8080)
    assert settings.grpc.listen == ListenAddress("", 50051)
    assert settings.health.listen == ListenAddress("", 8081)


MODELS = """
[[llm.models]]
id = "dashscope/qwen-turbo"
capabilities = ["chat", "tools"]
pricing = { prompt = 0.05, completion = 0.2 }

[[llm.models]]
id = "dashscope/qwen-max"
"""


def test_a_later_layer_replaces_a_model_with_the_same_id_entirely_and_in_place(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + MODELS)
    write(
        tmp_path,
        "prod.toml",
        '[[llm.models]]\nid = "dashscope/qwen-turbo"\nname = "Turbo"\n'
        '[[llm.models]]\nid = "dashscope/qwen-plus"\n',
    )

    models = load(tmp_path, mode="prod").models

    assert [model.id for model in models] == [
        "dashscope/qwen-turbo",
        "dashscope/qwen-max",
        "dashscope/qwen-plus",
    ]
    turbo = models[0]
    assert turbo.name == "Turbo"
    assert turbo.capabilities == {Capability.CHAT}
    assert turbo.pricing is None


def test_model_fields_default_from_the_id(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        '[llm.providers.openrouter]\nbase_url = "https://openrouter.example/api/v1"\n'
        '[[llm.models]]\nid = "openrouter/openai/gpt-4o"\n',
    )

    (model,) = load(tmp_path).models

    assert model.provider == "openrouter"
    assert model.upstream_model == "openai/gpt-4o"
    assert model.name == "openrouter/openai/gpt-4o"
    assert model.owned_by == "openrouter"
    assert model.capabilities == {Capability.CHAT}
    assert model.created == 0


def test_a_model_may_alias_a_provider_model_under_another_prefix(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        PROVIDER
        + '[[llm.models]]\nid = "fast/chat"\nprovider = "dashscope"\nupstream_model = "qwen-turbo"\n',
    )

    (model,) = load(tmp_path).models

    assert (model.provider, model.upstream_model) == ("dashscope", "qwen-turbo")


def test_env_vars_override_every_file_layer_with_double_underscore_nesting(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER)
    write(tmp_path, "serve/prod.toml", '[log]\nformat = "text"\nlevel = "error"\n[http]\nlisten = ":8000"\n')

    settings = load(
        tmp_path,
        mode="prod",
        LLMGW_LOG__FORMAT="json",
        LLMGW_HTTP__LISTEN='":9090"',
        LLMGW_LLM__PROVIDERS__DASHSCOPE__TIMEOUT="5s",
    )

    assert settings.log.format is LogFormat.JSON
    assert settings.log.level == "error"
    assert settings.http.listen == ListenAddress("", 9090)
    assert settings.providers["dashscope"].timeout == 5.0
    assert settings.providers["dashscope"].base_url == "https://dashscope.example/v1"


def test_a_numeric_api_key_from_env_stays_the_string_it_was(tmp_path: Path) -> None:
    write(
        tmp_path, "default.toml", '[llm.providers.openrouter]\nbase_url = "https://openrouter.example/v1"\n'
    )

    provider = load(tmp_path, LLMGW_LLM__PROVIDERS__OPENROUTER__API_KEY="0012345").providers["openrouter"]
    assert (provider.api_key, provider.api_key_source) == ("0012345", "config")

    exponent = load(tmp_path, LLMGW_LLM__PROVIDERS__OPENROUTER__API_KEY="1e3").providers["openrouter"]
    assert exponent.api_key == "1e3"


def test_a_provider_defined_only_in_env_is_read_in_lower_case(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        LLMGW_LLM__PROVIDERS__LOCAL__KIND="openai",
        LLMGW_LLM__PROVIDERS__LOCAL__BASE_URL="http://127.0.0.1:8000/v1",
        LLMGW_LLM__PROVIDERS__LOCAL__MAX_CONNECTIONS="8",
    )

    local = settings.providers["local"]
    assert (local.kind, local.base_url, local.max_connections) == (
        ProviderKind.OPENAI,
        "http://127.0.0.1:8000/v1",
        8,
    )


def test_a_whole_table_can_come_from_one_env_var_as_toml(tmp_path: Path) -> None:
    settings = load(tmp_path, LLMGW_LOG='{ level = "warning", format = "json" }', LLMGW_LOG__LEVEL="debug")

    assert (settings.log.level, settings.log.format) == ("debug", LogFormat.JSON)


def test_only_the_given_environ_is_consulted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "default.toml", PROVIDER)
    monkeypatch.setenv("LLMGW_LOG__LEVEL", "debug")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-process")
    monkeypatch.setenv("MODE", "prod")
    write(tmp_path, "prod.toml", '[log]\nformat = "json"\n')

    settings = load(tmp_path)

    assert settings.log.level == "info"
    assert settings.log.format is LogFormat.TEXT
    assert settings.providers["dashscope"].api_key == ""


def test_an_empty_api_key_falls_back_to_the_providers_env_var(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + 'api_key = ""\n')

    provider = load(tmp_path, DASHSCOPE_API_KEY="sk-dash").providers["dashscope"]

    assert (provider.api_key, provider.api_key_source) == ("sk-dash", "env DASHSCOPE_API_KEY")
    assert provider.has_credentials


def test_a_configured_api_key_beats_the_env_fallback(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDER + 'api_key = "sk-config"\n')

    provider = load(tmp_path, DASHSCOPE_API_KEY="sk-dash").providers["dashscope"]

    assert (provider.api_key, provider.api_key_source) == ("sk-config", "config")


def test_the_env_fallback_name_replaces_non_alphanumerics(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        '[llm.providers.my-vllm]\nkind = "openai"\nbase_url = "http://vllm:8000/v1"\n',
    )

    provider = load(tmp_path, MY_VLLM_API_KEY="token").providers["my-vllm"]

    assert (provider.api_key, provider.api_key_source) == ("token", "env MY_VLLM_API_KEY")


def test_openrouter_referer_and_title_become_attribution_headers(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        '[llm.providers.openrouter]\nbase_url = "https://openrouter.ai/api/v1"\n'
        'referer = "https://example.com"\ntitle = "Example"\nheaders = { "X-Extra" = "1" }\n',
    )

    headers = load(tmp_path).providers["openrouter"].headers

    assert headers == {"X-Extra": "1", "HTTP-Referer": "https://example.com", "X-Title": "Example"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ('"20s"', 20.0),
        ('"1500ms"', 1.5),
        ('"2m"', 120.0),
        ('"1h"', 3600.0),
        ('"1m30s"', 90.0),
        ('"0.5s"', 0.5),
        ('"45"', 45.0),
        ("45", 45.0),
        ("2.5", 2.5),
    ],
)
def test_durations_accept_units_and_plain_seconds(tmp_path: Path, text: str, seconds: float) -> None:
    write(tmp_path, "default.toml", PROVIDER + f"first_token_timeout = {text}\n")

    assert load(tmp_path).providers["dashscope"].first_token_timeout == seconds


@pytest.mark.parametrize("value", ["", "5x", "s", "1m30", "1.5.2s", "-1s", "fast"])
def test_parse_duration_rejects_what_is_not_a_duration(value: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (":8080", ListenAddress("", 8080)),
        ("127.0.0.1:8080", ListenAddress("127.0.0.1", 8080)),
        ("[::1]:8080", ListenAddress("::1", 8080)),
        ("[::]:65535", ListenAddress("::", 65535)),
        ("localhost:0", ListenAddress("localhost", 0)),
    ],
)
def test_listen_addresses_parse_to_host_and_port(tmp_path: Path, text: str, address: ListenAddress) -> None:
    write(tmp_path, "default.toml", f'[grpc]\nlisten = "{text}"\n[health]\nlisten = "{text}"\n')

    settings = load(tmp_path)

    assert settings.grpc.listen == address
    assert settings.health.listen == address


@pytest.mark.parametrize(
    "url",
    ["memory://", "sqlite:///./var/llmgw.db", "sqlite:////var/lib/llmgw.db", "postgresql://u:p@db/llmgw"],
)
def test_storage_urls_of_each_backend_are_accepted(tmp_path: Path, url: str) -> None:
    write(tmp_path, "default.toml", f'[storage]\nurl = "{url}"\n')

    assert load(tmp_path).storage.url == url


def test_unknown_top_level_keys_load_with_a_warning_each(tmp_path: Path) -> None:
    path = write(tmp_path, "default.toml", '[authz]\nmode = "none"\n[something_else]\nx = 1\n')

    settings = load(tmp_path)

    assert settings.providers == {}
    assert [(w.key, w.source) for w in settings.warnings] == [
        ("authz", str(path)),
        ("something_else", str(path)),
    ]


def test_the_shipped_default_config_loads_cleanly_with_the_six_seed_models() -> None:
    settings = load_settings("serve", config_path=str(REPO_CONFIGS), environ={})

    assert set(settings.providers) == {"dashscope", "openrouter"}
    assert settings.providers["dashscope"].timeout == 20.0
    assert settings.providers["openrouter"].timeout == 60.0
    assert [model.id for model in settings.models] == [
        "dashscope/qwen-turbo",
        "dashscope/qwen-vl-max",
        "dashscope/qwen-vl-plus",
        "dashscope/text-embedding-v3",
        "openrouter/openai/gpt-4o",
        "openrouter/anthropic/claude-3.5-sonnet",
    ]
    by_id = {model.id: model for model in settings.models}
    gpt = by_id["openrouter/openai/gpt-4o"]
    assert (gpt.name, gpt.upstream_model) == ("GPT-4o (OpenRouter)", "openai/gpt-4o")
    assert gpt.capabilities == {Capability.CHAT, Capability.VISION, Capability.TOOLS}
    assert by_id["dashscope/text-embedding-v3"].capabilities == {Capability.EMBEDDINGS}
    assert all(model.pricing is not None for model in settings.models)
    assert settings.storage.url == "sqlite:///./var/llmgw.db"
    assert (settings.log.level, settings.log.format) == ("info", LogFormat.TEXT)
    assert settings.http.listen == ListenAddress("", 8080)
    assert settings.grpc.listen == ListenAddress("", 50051)
    assert settings.health.listen == ListenAddress("", 8081)
    assert settings.server.workers == 1
    assert settings.warnings == ()


def test_effective_settings_masks_every_api_key_and_secret_header(tmp_path: Path) -> None:
    write(
        tmp_path,
        "default.toml",
        PROVIDER
        + 'api_key = "sk-dashscope-0123456789abcdef"\n'
        + 'headers = { Authorization = "Bearer secret-token-123", "api-key" = "key-abcdef-123", "X-Team" = "x" }\n'
        + '[llm.providers.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        + '[storage]\nurl = "postgresql://gw:hunter2hunter2@db:5432/llmgw"\n',
    )
    settings = load(tmp_path, LLMGW_LLM__PROVIDERS__LOCAL__API_KEY="12345")

    shown = effective_settings(settings)
    text = json.dumps(shown)

    providers = shown["llm"]["providers"]
    assert providers["dashscope"]["api_key"] == "sk-d…"
    assert providers["local"]["api_key"] == "1…"
    assert providers["dashscope"]["headers"]["X-Team"] == "x"
    for secret in ["sk-dashscope-0123456789abcdef", "secret-token-123", "key-abcdef-123", "12345", "hunter2"]:
        assert secret not in text
    assert shown["storage"]["url"] == "postgresql://gw:***@db:5432/llmgw"


def test_effective_settings_shows_the_merged_values_and_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "default.toml", PROVIDER + '[[llm.models]]\nid = "dashscope/qwen-turbo"\n')

    shown = effective_settings(load(tmp_path, LLMGW_HTTP__LISTEN="[::1]:9090"))

    assert shown["sources"] == [str(path)]
    assert shown["http"]["listen"] == "[::1]:9090"
    assert shown["grpc"]["listen"] == ":50051"
    assert shown["llm"]["providers"]["dashscope"]["api_key"] == ""
    assert shown["llm"]["providers"]["dashscope"]["timeout"] == 60.0
    assert shown["llm"]["models"][0]["capabilities"] == ["chat"]
    assert json.loads(json.dumps(shown)) == shown
