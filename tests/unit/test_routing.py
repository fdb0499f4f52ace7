"""Routing: a gateway model id finds its catalog entry or its provider, or is refused the way OpenAI would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmgw.application.routing import Router
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import (
    ChatCompletion,
    ChatRequest,
    Embeddings,
    EmbeddingsRequest,
    JSONObject,
)
from llmgw.domain.errors import InvalidRequest, NotFound


class FakeProvider:
    """Only a name: routing never calls a provider."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def has_credentials(self) -> bool:
        return True

    async def complete(self, model: ModelSpec, request: ChatRequest) -> ChatCompletion:
        raise AssertionError("routing must not call the provider")

    def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[list[JSONObject]]:
        raise AssertionError("routing must not call the provider")

    async def embed(self, model: ModelSpec, request: EmbeddingsRequest) -> Embeddings:
        raise AssertionError("routing must not call the provider")


OPENROUTER = FakeProvider("openrouter")
DASHSCOPE = FakeProvider("dashscope")
LOCAL = FakeProvider("local")

GPT4O = ModelSpec(
    id="openrouter/openai/gpt-4o",
    name="GPT-4o (OpenRouter)",
    provider="openrouter",
    upstream_model="openai/gpt-4o-2024-11-20",
    capabilities=frozenset({Capability.CHAT, Capability.VISION}),
)
# A catalog id whose prefix names another provider: the catalog's `provider` decides.
QWEN = ModelSpec(
    id="dashscope/qwen-plus",
    name="Qwen Plus via OpenRouter",
    provider="openrouter",
    upstream_model="qwen/qwen-plus",
    capabilities=frozenset({Capability.CHAT, Capability.REASONING}),
)
EMBEDDER = ModelSpec(
    id="text-embedding-v4",
    name="Embeddings",
    provider="dashscope",
    upstream_model="text-embedding-v4",
    capabilities=frozenset({Capability.EMBEDDINGS}),
)


@pytest.fixture
def router() -> Router:
    return Router(
        [GPT4O, QWEN, EMBEDDER],
        {"openrouter": OPENROUTER, "dashscope": DASHSCOPE, "local": LOCAL},
    )


def test_a_catalogued_model_routes_to_its_entry_and_provider(router: Router) -> None:
    route = router.route("openrouter/openai/gpt-4o", Capability.CHAT)

    assert route.model is GPT4O
    assert route.model.upstream_model == "openai/gpt-4o-2024-11-20"
    assert route.provider is OPENROUTER


def test_the_catalog_entry_wins_over_the_ids_provider_prefix(router: Router) -> None:
    route = router.route("dashscope/qwen-plus", Capability.CHAT)

    assert route.provider is OPENROUTER
    assert route.model.upstream_model == "qwen/qwen-plus"


def test_a_catalogued_id_without_a_slash_routes_by_its_entry(router: Router) -> None:
    route = router.route("text-embedding-v4", Capability.EMBEDDINGS)

    assert route.provider is DASHSCOPE
    assert route.model is EMBEDDER


@pytest.mark.parametrize(
    ("model_id", "provider", "upstream"),
    [
        ("openrouter/anthropic/claude-3.5-sonnet", OPENROUTER, "anthropic/claude-3.5-sonnet"),
        ("dashscope/qwen-max", DASHSCOPE, "qwen-max"),
        ("local/llama3.1:8b", LOCAL, "llama3.1:8b"),
        ("openrouter/openai/gpt-4o-mini", OPENROUTER, "openai/gpt-4o-mini"),
    ],
)
def test_an_uncatalogued_provider_model_id_routes_by_its_prefix_sending_the_rest_upstream(
    router: Router, model_id: str, provider: FakeProvider, upstream: str
) -> None:
    route = router.route(model_id, Capability.CHAT)

    assert route.provider is provider
    assert route.model.id == model_id
    assert route.model.provider == provider.name
    assert route.model.upstream_model == upstream


@pytest.mark.parametrize("capability", [Capability.CHAT, Capability.EMBEDDINGS])
def test_an_uncatalogued_model_is_left_to_the_upstream_to_judge(
    router: Router, capability: Capability
) -> None:
    route = router.route("local/some-model", capability)

    assert route.provider is LOCAL


@pytest.mark.parametrize(
    "model_id",
    [
        pytest.param("azure/gpt-4o", id="unknown-provider"),
        pytest.param("gpt-4o", id="no-slash"),
        pytest.param("openrouter", id="provider-name-alone"),
        pytest.param("openrouter/", id="nothing-after-the-slash"),
        pytest.param("/gpt-4o", id="nothing-before-the-slash"),
        pytest.param("OpenRouter/openai/gpt-4o", id="provider-case-differs"),
    ],
)
@pytest.mark.parametrize("capability", [Capability.CHAT, Capability.EMBEDDINGS])
def test_an_unknown_model_is_not_found(router: Router, model_id: str, capability: Capability) -> None:
    with pytest.raises(NotFound) as caught:
        router.route(model_id, capability)

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert model_id in caught.value.message


def test_a_catalogued_model_lacking_the_capability_is_refused_as_unsupported(router: Router) -> None:
    with pytest.raises(InvalidRequest) as caught:
        router.route("text-embedding-v4", Capability.CHAT)

    assert type(caught.value) is InvalidRequest
    assert caught.value.code == "model_not_supported"
    assert caught.value.param == "model"
    assert "chat" in caught.value.message


def test_a_chat_model_asked_for_embeddings_is_refused_as_unsupported(router: Router) -> None:
    with pytest.raises(InvalidRequest) as caught:
        router.route("openrouter/openai/gpt-4o", Capability.EMBEDDINGS)

    assert caught.value.code == "model_not_supported"
    assert "embeddings" in caught.value.message


def test_models_lists_the_catalog_in_order(router: Router) -> None:
    assert [model.id for model in router.models] == [
        "openrouter/openai/gpt-4o",
        "dashscope/qwen-plus",
        "text-embedding-v4",
    ]


def test_a_catalogued_model_is_found_by_id(router: Router) -> None:
    assert router.model("dashscope/qwen-plus") is QWEN


def test_looking_up_a_model_outside_the_catalog_is_not_found(router: Router) -> None:
    with pytest.raises(NotFound) as caught:
        router.model("openrouter/unknown/model")

    assert caught.value.code == "model_not_found"


def test_a_later_catalog_entry_with_the_same_id_replaces_the_earlier() -> None:
    replacement = ModelSpec(
        id=GPT4O.id,
        name="GPT-4o (direct)",
        provider="local",
        upstream_model="gpt-4o",
        capabilities=frozenset({Capability.CHAT}),
    )
    router = Router([GPT4O, replacement], {"openrouter": OPENROUTER, "local": LOCAL})

    assert router.route(GPT4O.id, Capability.CHAT).provider is LOCAL
    assert len(router.models) == 1
