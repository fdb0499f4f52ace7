"""Aliases and deployments in the config: `[[llm.models.deployments]]`, its defaults, and every mistake
reported with its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.infrastructure.config.loader import ConfigError, ConfigProblem, effective_settings, load_settings
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.model_json import model_json
from tests.config_files import write

PROVIDERS = """
[llm.providers.openai-east]
kind = "openai"
base_url = "https://east.example/v1"
[llm.providers.openrouter]
base_url = "https://openrouter.example/api/v1"
"""
GPT_4O = """
[[llm.models]]
id = "gpt-4o"
capabilities = ["chat", "tools"]
[[llm.models.deployments]]
provider = "openai-east"
upstream_model = "gpt-4o"
weight = 2
[[llm.models.deployments]]
provider = "openrouter"
upstream_model = "openai/gpt-4o"
weight = 1
priority = 1
"""


def load(root: Path, text: str) -> Settings:
    write(root, "default.toml", text)
    return load_settings("serve", config_path=str(root), environ={})


def model(root: Path, text: str) -> ModelSpec:
    [spec] = load(root, PROVIDERS + text).models
    return spec


def problems_of(root: Path, text: str) -> list[ConfigProblem]:
    write(root, "default.toml", PROVIDERS + text)
    with pytest.raises(ConfigError) as caught:
        load_settings("serve", config_path=str(root), environ={})
    return list(caught.value.problems)


def test_an_alias_with_deployments_loads_each_with_its_provider_model_weight_and_priority(
    tmp_path: Path,
) -> None:
    spec = model(tmp_path, GPT_4O)

    assert spec.id == "gpt-4o"
    assert spec.capabilities == {Capability.CHAT, Capability.TOOLS}
    assert spec.deployments == (
        Deployment("openai-east", "gpt-4o", weight=2, priority=0),
        Deployment("openrouter", "openai/gpt-4o", weight=1, priority=1),
    )


def test_a_deployment_has_weight_1_and_priority_0_unless_set(tmp_path: Path) -> None:
    spec = model(
        tmp_path,
        '[[llm.models]]\nid = "fast"\n[[llm.models.deployments]]\nprovider = "openrouter"\n'
        'upstream_model = "openai/gpt-4o-mini"\n',
    )

    assert spec.deployments == (Deployment("openrouter", "openai/gpt-4o-mini", weight=1, priority=0),)


def test_a_deployments_upstream_model_defaults_to_the_id_minus_its_provider(tmp_path: Path) -> None:
    spec = model(
        tmp_path,
        '[[llm.models]]\nid = "openrouter/openai/gpt-4o"\n'
        '[[llm.models.deployments]]\nprovider = "openrouter"\n'
        '[[llm.models.deployments]]\nprovider = "openai-east"\nupstream_model = "gpt-4o"\n',
    )

    assert [d.upstream_model for d in spec.deployments] == ["openai/gpt-4o", "gpt-4o"]


def test_a_model_without_deployments_is_one_deployment_of_its_provider(tmp_path: Path) -> None:
    spec = model(tmp_path, '[[llm.models]]\nid = "openrouter/openai/gpt-4o"\n')

    assert spec.deployments == (Deployment("openrouter", "openai/gpt-4o"),)
    assert (spec.provider, spec.upstream_model, spec.owned_by) == (
        "openrouter",
        "openai/gpt-4o",
        "openrouter",
    )


def test_an_alias_may_name_one_provider_instead_of_deployments(tmp_path: Path) -> None:
    spec = model(
        tmp_path, '[[llm.models]]\nid = "gpt-4o"\nprovider = "openai-east"\nupstream_model = "gpt-4o"\n'
    )

    assert spec.deployments == (Deployment("openai-east", "gpt-4o"),)


def test_an_alias_lists_as_its_own_id_owned_by_its_first_deployments_provider(tmp_path: Path) -> None:
    listed = model_json(model(tmp_path, GPT_4O))

    assert (listed["id"], listed["owned_by"], listed["provider"]) == ("gpt-4o", "openai-east", "openai-east")


def test_an_alias_lists_with_the_owner_its_entry_sets(tmp_path: Path) -> None:
    spec = model(tmp_path, GPT_4O.replace('capabilities = ["chat", "tools"]', 'owned_by = "openai"'))

    assert model_json(spec)["owned_by"] == "openai"


def test_config_show_lists_every_deployment(tmp_path: Path) -> None:
    shown = effective_settings(load(tmp_path, PROVIDERS + GPT_4O))

    [listed] = shown["llm"]["models"]
    assert listed["deployments"] == [
        {"provider": "openai-east", "upstream_model": "gpt-4o", "weight": 2, "priority": 0},
        {"provider": "openrouter", "upstream_model": "openai/gpt-4o", "weight": 1, "priority": 1},
    ]
    assert json.loads(json.dumps(shown)) == shown


def test_a_later_layer_replaces_an_alias_with_its_own_deployments(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", PROVIDERS + GPT_4O)
    write(
        tmp_path,
        "prod.toml",
        '[[llm.models]]\nid = "gpt-4o"\n[[llm.models.deployments]]\nprovider = "openrouter"\n'
        'upstream_model = "openai/gpt-4o"\n',
    )

    [spec] = load_settings("serve", config_path=str(tmp_path), mode="prod", environ={}).models

    assert spec.deployments == (Deployment("openrouter", "openai/gpt-4o"),)


DEPLOYMENT = '[[llm.models]]\nid = "gpt-4o"\n[[llm.models.deployments]]\nprovider = "openrouter"\n'
BAD = [
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\n',
        "llm.models[gpt-4o].id",
        "provider/model",
        id="alias-without-provider",
    ),
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\nprovider = "openrouter"\n'
        '[[llm.models.deployments]]\nprovider = "openai-east"\nupstream_model = "gpt-4o"\n',
        "llm.models[gpt-4o].provider",
        "set provider on each deployment, not beside deployments",
        id="provider-and-deployments",
    ),
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\nupstream_model = "gpt-4o"\n'
        '[[llm.models.deployments]]\nprovider = "openai-east"\nupstream_model = "gpt-4o"\n',
        "llm.models[gpt-4o].upstream_model",
        "set upstream_model on each deployment, not beside deployments",
        id="upstream-model-and-deployments",
    ),
    pytest.param(
        DEPLOYMENT.replace('"openrouter"', '"azure"') + 'upstream_model = "gpt-4o"\n',
        "llm.models[gpt-4o].deployments[0].provider",
        "no provider named 'azure'; configured: openai-east, openrouter",
        id="unknown-provider",
    ),
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\n[[llm.models.deployments]]\nupstream_model = "gpt-4o"\n',
        "llm.models[gpt-4o].deployments[0].provider",
        "is required",
        id="provider-missing",
    ),
    pytest.param(
        DEPLOYMENT,
        "llm.models[gpt-4o].deployments[0].upstream_model",
        "is required when the id does not start with 'openrouter/'",
        id="upstream-missing",
    ),
    pytest.param(
        DEPLOYMENT + 'upstream_model = ""\n',
        "llm.models[gpt-4o].deployments[0].upstream_model",
        "must not be empty",
        id="upstream-empty",
    ),
    pytest.param(
        DEPLOYMENT + 'upstream_model = "x"\nweight = 0\n',
        "llm.models[gpt-4o].deployments[0].weight",
        "at least 1",
        id="weight-zero",
    ),
    pytest.param(
        DEPLOYMENT + 'upstream_model = "x"\nweight = 1.5\n',
        "llm.models[gpt-4o].deployments[0].weight",
        "must be an integer",
        id="weight-float",
    ),
    pytest.param(
        DEPLOYMENT + 'upstream_model = "x"\npriority = -1\n',
        "llm.models[gpt-4o].deployments[0].priority",
        "at least 0",
        id="priority-negative",
    ),
    pytest.param(
        DEPLOYMENT + 'upstream_model = "x"\npriority = "high"\n',
        "llm.models[gpt-4o].deployments[0].priority",
        "must be an integer",
        id="priority-type",
    ),
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\ndeployments = []\n',
        "llm.models[gpt-4o].deployments",
        "non-empty list of tables",
        id="deployments-empty",
    ),
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\ndeployments = "openrouter"\n',
        "llm.models[gpt-4o].deployments",
        "non-empty list of tables",
        id="deployments-not-list",
    ),
    pytest.param(
        '[[llm.models]]\nid = "gpt-4o"\ndeployments = ["openrouter"]\n',
        "llm.models[gpt-4o].deployments[0]",
        "must be a table",
        id="deployment-not-table",
    ),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD)
def test_each_deployment_mistake_is_reported_with_its_key_and_file(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    [problem] = problems_of(tmp_path, text)

    assert problem.key == key
    assert message in problem.message
    assert problem.source == str(tmp_path / "default.toml")


def test_every_bad_deployment_is_reported_at_once(tmp_path: Path) -> None:
    text = GPT_4O.replace("weight = 2", "weight = 0").replace("priority = 1", "priority = -1")
    text = text.replace('provider = "openrouter"', 'provider = "azure"')

    problems = problems_of(tmp_path, text)

    assert sorted(problem.key for problem in problems) == [
        "llm.models[gpt-4o].deployments[0].weight",
        "llm.models[gpt-4o].deployments[1].priority",
        "llm.models[gpt-4o].deployments[1].provider",
    ]


def test_an_unknown_deployment_key_is_a_warning_naming_it(tmp_path: Path) -> None:
    settings = load(tmp_path, PROVIDERS + GPT_4O.replace("weight = 2", "weight = 2\nregion = 'east'"))

    assert [warning.key for warning in settings.warnings] == ["llm.models[gpt-4o].deployments[0].region"]
