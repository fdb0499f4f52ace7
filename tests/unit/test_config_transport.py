"""Provider keys `transport`, `proxy` and `max_response_bytes`: defaults, accepted values, each refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, ConfigProblem, effective_settings, load_settings
from llmgw.infrastructure.config.settings import ProviderSettings, Settings, TransportKind

TABLE = '[llm.providers.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:8000/v1"\n'


def load(tmp_path: Path, lines: str = "", **environ: str) -> Settings:
    (tmp_path / "default.toml").write_text(TABLE + lines + "\n", encoding="utf-8")
    return load_settings("serve", config_path=str(tmp_path), environ=environ)


def provider(tmp_path: Path, lines: str = "", **environ: str) -> ProviderSettings:
    return load(tmp_path, lines, **environ).providers["local"]


def only_problem(tmp_path: Path, lines: str) -> ConfigProblem:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, lines)
    (problem,) = caught.value.problems
    assert problem.source == str(tmp_path / "default.toml")
    return problem


def test_by_default_the_transport_and_proxy_are_left_to_the_environment_and_answers_cap_at_64_mib(
    tmp_path: Path,
) -> None:
    local = provider(tmp_path)

    assert (local.transport, local.proxy, local.max_response_bytes) == (None, None, 64 * 1024 * 1024)


@pytest.mark.parametrize(
    ("lines", "transport", "proxy"),
    [
        ('transport = "fast"', TransportKind.FAST, None),
        ('transport = "AIOHTTP"', TransportKind.AIOHTTP, None),
        (
            'transport = "aiohttp"\nproxy = "http://proxy.internal:3128"',
            TransportKind.AIOHTTP,
            "http://proxy.internal:3128",
        ),
        ('proxy = "https://user:pw@proxy.internal"', None, "https://user:pw@proxy.internal"),
        ('proxy = ""', None, ""),
        ('transport = "fast"\nproxy = ""', TransportKind.FAST, ""),
    ],
)
def test_transport_and_proxy_values_are_read(
    tmp_path: Path, lines: str, transport: TransportKind | None, proxy: str | None
) -> None:
    local = provider(tmp_path, lines)

    assert (local.transport, local.proxy) == (transport, proxy)


def test_max_response_bytes_is_read(tmp_path: Path) -> None:
    assert provider(tmp_path, "max_response_bytes = 1_048_576").max_response_bytes == 1_048_576


def test_the_three_keys_can_come_from_env_vars(tmp_path: Path) -> None:
    local = provider(
        tmp_path,
        LLMGW_LLM__PROVIDERS__LOCAL__TRANSPORT="aiohttp",
        LLMGW_LLM__PROVIDERS__LOCAL__PROXY="http://proxy:3128",
        LLMGW_LLM__PROVIDERS__LOCAL__MAX_RESPONSE_BYTES="4096",
    )

    assert (local.transport, local.proxy, local.max_response_bytes) == (
        TransportKind.AIOHTTP,
        "http://proxy:3128",
        4096,
    )


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        pytest.param(
            'transport = "httpx"', "transport", "must be one of fast, aiohttp", id="transport-unknown"
        ),
        pytest.param("transport = 1", "transport", "must be one of fast, aiohttp", id="transport-type"),
        pytest.param(
            'proxy = "socks5://proxy:1080"', "proxy", "http:// or https:// proxy URL", id="proxy-scheme"
        ),
        pytest.param('proxy = "http://"', "proxy", "http:// or https:// proxy URL", id="proxy-no-host"),
        pytest.param('proxy = "proxy:3128"', "proxy", "http:// or https:// proxy URL", id="proxy-no-scheme"),
        pytest.param(
            'proxy = "http://proxy:port"', "proxy", "http:// or https:// proxy URL", id="proxy-bad-port"
        ),
        pytest.param("proxy = 3128", "proxy", "must be a string", id="proxy-type"),
        pytest.param("max_response_bytes = 0", "max_response_bytes", "at least 1", id="max-zero"),
        pytest.param("max_response_bytes = -1", "max_response_bytes", "at least 1", id="max-negative"),
        pytest.param(
            'max_response_bytes = "64MiB"', "max_response_bytes", "must be an integer", id="max-size"
        ),
        pytest.param("max_response_bytes = 1.5", "max_response_bytes", "must be an integer", id="max-float"),
    ],
)
def test_each_bad_value_is_reported_with_its_key(tmp_path: Path, line: str, key: str, message: str) -> None:
    problem = only_problem(tmp_path, line)

    assert problem.key == f"llm.providers.local.{key}"
    assert message in problem.message


def test_a_proxy_password_is_not_echoed_in_the_problem(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, 'proxy = "socks5://user:hunter2@proxy:1080"')

    assert "hunter2" not in str(problem)


def test_the_fast_transport_with_an_explicit_proxy_is_refused(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, 'transport = "fast"\nproxy = "http://proxy:3128"')

    assert problem.key == "llm.providers.local.transport"
    assert problem.message == (
        'the fast transport does not speak to proxies; use transport = "aiohttp" or leave transport unset'
    )


def test_config_show_has_the_three_keys_with_the_proxy_password_masked(tmp_path: Path) -> None:
    settings = load(tmp_path, 'transport = "aiohttp"\nproxy = "http://gw:hunter2@proxy:3128"')

    shown = effective_settings(settings)["llm"]["providers"]["local"]

    assert shown["transport"] == "aiohttp"
    assert shown["proxy"] == "http://gw:***@proxy:3128"
    assert shown["max_response_bytes"] == 67_108_864
