"""Retries, circuit breakers and fallbacks in the config: `llm.retry`, a provider's `retry`,
`llm.circuit`, `fallbacks` and `fallbacks_on_context`; their defaults, and every mistake with its key."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from llmgw.application.gateway import RequestContext
from llmgw.application.retries import RetryPolicy
from llmgw.bootstrap import build_gateway
from llmgw.domain.chat import ChatRequest, parse_chat_request
from llmgw.domain.errors import UpstreamUnavailable
from llmgw.infrastructure.config.loader import ConfigError, effective_settings, load_settings
from llmgw.infrastructure.config.settings import NO_AUTH, CircuitSettings, Settings
from tests.config_files import write
from tests.fakes.ports import FakeProvider, FakeStore

PROVIDERS = """
[llm.providers.east]
kind = "openai"
base_url = "https://east.example/v1"
timeout = "20s"
[llm.providers.west]
kind = "openai"
base_url = "https://west.example/v1"
"""
MODELS = """
[[llm.models]]
id = "gpt-4o"
fallbacks = ["mini", "west/gpt-4o-2024"]
fallbacks_on_context = ["long"]
[[llm.models.deployments]]
provider = "east"
upstream_model = "gpt-4o"
[[llm.models]]
id = "mini"
provider = "west"
upstream_model = "gpt-4o-mini"
[[llm.models]]
id = "long"
provider = "west"
upstream_model = "gpt-4.1"
"""


def load(root: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    write(root, "default.toml", PROVIDERS + text)
    return load_settings("serve", config_path=str(root), environ=environ or {})


def problems(root: Path, text: str) -> list[tuple[str, str]]:
    write(root, "default.toml", PROVIDERS + text)
    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(root), environ={})
    return [(problem.key, problem.message) for problem in caught.value.problems]


def test_defaults_retry_three_times_with_a_budget_and_open_circuits_after_five_failures(
    tmp_path: Path,
) -> None:
    settings = load(tmp_path, "")
    assert settings.retry == RetryPolicy()
    assert (settings.retry.max_attempts, settings.retry.budget) == (3, 0.2)
    assert settings.circuit == CircuitSettings(failures=5, cooldown=30.0)
    assert settings.providers["east"].retry is None


def test_llm_retry_sets_every_providers_policy_and_a_providers_own_table_overrides_keys_of_it(
    tmp_path: Path,
) -> None:
    settings = load(
        tmp_path,
        """
[llm.retry]
max_attempts = 4
attempt_timeout = "15s"
backoff = "100ms"
backoff_max = "2s"
retry_after_max = "5s"
budget = 0.1
budget_window = "30s"
budget_floor = 3
[llm.providers.west.retry]
max_attempts = 1
""",
    )
    assert settings.retry == RetryPolicy(
        max_attempts=4,
        attempt_timeout=15.0,
        backoff=0.1,
        backoff_max=2.0,
        retry_after_max=5.0,
        budget=0.1,
        budget_window=30.0,
        budget_floor=3,
    )
    west = settings.providers["west"].retry
    assert west is not None
    assert (west.max_attempts, west.backoff, west.budget_floor) == (1, 0.1, 3)
    shown = effective_settings(settings)
    assert shown["llm"]["retry"]["max_attempts"] == 4
    assert shown["llm"]["providers"]["west"]["retry"]["max_attempts"] == 1
    assert shown["llm"]["providers"]["east"]["retry"] is None


def test_environment_variables_reach_the_retry_and_circuit_tables(tmp_path: Path) -> None:
    settings = load(
        tmp_path, "", {"LLMGW_LLM__RETRY__MAX_ATTEMPTS": "2", "LLMGW_LLM__CIRCUIT__COOLDOWN": "5s"}
    )
    assert settings.retry.max_attempts == 2
    assert settings.circuit.cooldown == 5.0


async def test_the_gateway_gets_each_providers_policy_with_its_own_timeout_as_the_deadline(
    tmp_path: Path,
) -> None:
    settings = load(
        tmp_path,
        MODELS + "[llm.retry]\nbackoff = 0\n[llm.providers.west.retry]\nmax_attempts = 1\n",
    )
    east, west = FakeProvider("east"), FakeProvider("west")
    down = UpstreamUnavailable("down", status=503)
    settings = replace(settings, auth=NO_AUTH)
    async with build_gateway(settings, store=FakeStore(), providers={"east": east, "west": west}) as gateway:
        east.will_answer(down)
        before = asyncio.get_running_loop().time()
        await gateway.create_chat_completion(chat("gpt-4o"), RequestContext("r"))
        after = asyncio.get_running_loop().time()
        assert (len(east.calls), len(west.calls)) == (1, 1), "then the fallback, on west"
        deadline = east.calls[0].deadline
        assert deadline is not None
        assert before <= deadline - 20.0 <= after, "east's own timeout is the request's deadline"
        assert west.calls[0].deadline == deadline, "one deadline across the attempts"

        west.will_answer(down)
        with pytest.raises(UpstreamUnavailable):
            await gateway.create_chat_completion(chat("mini"), RequestContext("r"))
        assert len(west.calls) == 2, "west's own policy: one attempt"


def chat(model: str) -> ChatRequest:
    return parse_chat_request({"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_fallbacks_load_in_order(tmp_path: Path) -> None:
    gpt4o = load(tmp_path, MODELS).models[0]
    assert gpt4o.fallbacks == ("mini", "west/gpt-4o-2024")
    assert gpt4o.fallbacks_on_context == ("long",)
    shown = effective_settings(load(tmp_path, MODELS))["llm"]["models"][0]
    assert (shown["fallbacks"], shown["fallbacks_on_context"]) == (["mini", "west/gpt-4o-2024"], ["long"])


def test_every_bad_value_is_reported_with_its_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[llm.retry]
max_attempts = 0
backoff = "soon"
budget = -1
[llm.circuit]
failures = 0
[llm.providers.east.retry]
budget_floor = -2
[[llm.models]]
id = "gpt-4o"
provider = "east"
upstream_model = "gpt-4o"
fallbacks = ["gpt-4o", "nowhere", "ghost/model"]
fallbacks_on_context = "long"
""",
    )
    assert {key for key, _ in found} == {
        "llm.retry.max_attempts",
        "llm.retry.backoff",
        "llm.retry.budget",
        "llm.circuit.failures",
        "llm.providers.east.retry.budget_floor",
        "llm.models[gpt-4o].fallbacks",
        "llm.models[gpt-4o].fallbacks_on_context",
    }
    assert [message for key, message in found if key == "llm.models[gpt-4o].fallbacks"] == [
        "'gpt-4o': a model cannot be its own fallback",
        "'nowhere': not a catalog model id, nor provider/model of a declared provider",
        "'ghost/model': not a catalog model id, nor provider/model of a declared provider",
    ]
