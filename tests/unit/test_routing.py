"""Routing: a gateway model id finds its catalog entry (and one of its deployments) or its provider, or is
refused the way OpenAI would."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llmgw.application.routing import Route, Router
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
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

    async def complete(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> ChatCompletion:
        raise AssertionError("routing must not call the provider")

    def stream(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> AsyncIterator[list[JSONObject]]:
        raise AssertionError("routing must not call the provider")

    async def embed(
        self, model: ModelSpec, request: EmbeddingsRequest, *, deadline: float | None = None
    ) -> Embeddings:
        raise AssertionError("routing must not call the provider")


def first_route(router: Router, model_id: str, capability: Capability) -> Route:
    """Where a request's first attempt goes, for a model without fallbacks (as `Failover.first` does)."""
    model = router.resolve(model_id, capability)
    return router.route_to(model, router.choose(model.deployments))


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
    route = first_route(router, "openrouter/openai/gpt-4o", Capability.CHAT)

    assert route.model is GPT4O
    assert route.model.upstream_model == "openai/gpt-4o-2024-11-20"
    assert route.provider is OPENROUTER


def test_the_catalog_entry_wins_over_the_ids_provider_prefix(router: Router) -> None:
    route = first_route(router, "dashscope/qwen-plus", Capability.CHAT)

    assert route.provider is OPENROUTER
    assert route.model.upstream_model == "qwen/qwen-plus"


def test_a_catalogued_id_without_a_slash_routes_by_its_entry(router: Router) -> None:
    route = first_route(router, "text-embedding-v4", Capability.EMBEDDINGS)

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
    route = first_route(router, model_id, Capability.CHAT)

    assert route.provider is provider
    assert route.model.id == model_id
    assert route.model.provider == provider.name
    assert route.model.upstream_model == upstream


@pytest.mark.parametrize("capability", [Capability.CHAT, Capability.EMBEDDINGS])
def test_an_uncatalogued_model_is_left_to_the_upstream_to_judge(
    router: Router, capability: Capability
) -> None:
    route = first_route(router, "local/some-model", capability)

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
        first_route(router, model_id, capability)

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert model_id in caught.value.message


def test_a_catalogued_model_lacking_the_capability_is_refused_as_unsupported(router: Router) -> None:
    with pytest.raises(InvalidRequest) as caught:
        first_route(router, "text-embedding-v4", Capability.CHAT)

    assert type(caught.value) is InvalidRequest
    assert caught.value.code == "model_not_supported"
    assert caught.value.param == "model"
    assert "chat" in caught.value.message


def test_a_chat_model_asked_for_embeddings_is_refused_as_unsupported(router: Router) -> None:
    with pytest.raises(InvalidRequest) as caught:
        first_route(router, "openrouter/openai/gpt-4o", Capability.EMBEDDINGS)

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

    assert first_route(router, GPT4O.id, Capability.CHAT).provider is LOCAL
    assert len(router.models) == 1


# Aliases and deployments

EAST = FakeProvider("openai-east")
OPENROUTER_GPT = Deployment("openrouter", "openai/gpt-4o", weight=1, priority=1)
ALIAS = ModelSpec(
    id="gpt-4o",
    name="GPT-4o",
    deployments=(
        Deployment("openai-east", "gpt-4o", weight=2),
        Deployment("local", "gpt-4o-local", weight=1),
        OPENROUTER_GPT,
    ),
    capabilities=frozenset({Capability.CHAT, Capability.TOOLS}),
)


class Draws:
    """A random source that walks evenly through [0, 1): `n` draws land in proportion to the weights."""

    def __init__(self, n: int) -> None:
        self._points = iter([(i + 0.5) / n for i in range(n)])

    def __call__(self) -> float:
        return next(self._points)


def alias_router(draw: Callable[[], float], **options: Any) -> Router:
    providers = {"openai-east": EAST, "openrouter": OPENROUTER, "local": LOCAL}
    return Router([ALIAS, GPT4O], providers, draw=draw, **options)


def test_an_alias_routes_to_one_of_its_deployments_keeping_its_own_id() -> None:
    route = first_route(alias_router(Draws(1)), "gpt-4o", Capability.CHAT)

    assert route.model is ALIAS
    assert route.deployment in ALIAS.deployments
    assert route.provider.name == route.deployment.provider
    assert route.target.id == "gpt-4o"
    assert route.target.upstream_model == route.deployment.upstream_model


def test_the_preferred_deployments_share_requests_by_weight() -> None:
    draws = 3000
    router = alias_router(Draws(draws))

    seen = Counter(first_route(router, "gpt-4o", Capability.CHAT).provider.name for _ in range(draws))

    assert seen == {"openai-east": 2000, "local": 1000}


def test_weights_hold_over_many_random_draws_within_tolerance() -> None:
    rng = random.Random(12)
    router = alias_router(rng.random)

    seen = Counter(first_route(router, "gpt-4o", Capability.CHAT).provider.name for _ in range(6000))

    assert "openrouter" not in seen
    assert seen["openai-east"] / 6000 == pytest.approx(2 / 3, abs=0.03)
    assert seen["local"] / 6000 == pytest.approx(1 / 3, abs=0.03)


def test_a_lower_priority_number_is_preferred_whatever_the_weights() -> None:
    preferred = Deployment("openai-east", "gpt-4o", weight=1, priority=0)
    backup = Deployment("openrouter", "openai/gpt-4o", weight=100, priority=1)
    model = ModelSpec(
        id="m", name="m", deployments=(backup, preferred), capabilities=frozenset({Capability.CHAT})
    )
    router = Router([model], {"openai-east": EAST, "openrouter": OPENROUTER}, draw=Draws(50))

    assert {first_route(router, "m", Capability.CHAT).deployment for _ in range(50)} == {preferred}


def test_when_no_preferred_deployment_is_available_the_next_priority_serves() -> None:
    router = alias_router(Draws(10), is_available=lambda d: d.provider == "openrouter")

    routes = [first_route(router, "gpt-4o", Capability.CHAT) for _ in range(10)]

    assert {route.deployment for route in routes} == {OPENROUTER_GPT}
    assert {route.target.upstream_model for route in routes} == {"openai/gpt-4o"}


def test_when_no_deployment_is_available_routing_still_picks_a_preferred_one() -> None:
    router = alias_router(Draws(3), is_available=lambda d: False)

    chosen = {first_route(router, "gpt-4o", Capability.CHAT).provider.name for _ in range(3)}

    assert chosen == {"openai-east", "local"}


def test_a_single_deployment_model_is_its_own_one_deployment(router: Router) -> None:
    route = first_route(router, "openrouter/openai/gpt-4o", Capability.CHAT)

    assert GPT4O.deployments == (Deployment("openrouter", "openai/gpt-4o-2024-11-20"),)
    assert route.deployment == GPT4O.deployments[0]
    assert route.target is GPT4O


def test_a_single_deployment_model_never_draws() -> None:
    def no_draw() -> float:
        raise AssertionError("one deployment needs no random choice")

    router = Router([GPT4O], {"openrouter": OPENROUTER}, draw=no_draw)

    assert first_route(router, GPT4O.id, Capability.CHAT).provider is OPENROUTER


def test_a_provider_model_id_without_an_entry_still_routes_by_prefix_beside_aliases() -> None:
    route = first_route(alias_router(Draws(1)), "openrouter/anthropic/claude-3.5-sonnet", Capability.CHAT)

    assert route.provider is OPENROUTER
    assert route.deployment == Deployment("openrouter", "anthropic/claude-3.5-sonnet")
    assert route.target.upstream_model == "anthropic/claude-3.5-sonnet"


def test_an_alias_lacking_the_capability_is_refused_before_any_choice() -> None:
    with pytest.raises(InvalidRequest) as caught:
        first_route(alias_router(Draws(0)), "gpt-4o", Capability.EMBEDDINGS)

    assert caught.value.code == "model_not_supported"


def test_when_no_deployment_is_available_the_one_that_opened_first_is_tried() -> None:
    local = ALIAS.deployments[1]
    router = alias_router(Draws(3), is_available=lambda d: False, opened_first=lambda ds: ds[1])

    chosen = {first_route(router, "gpt-4o", Capability.CHAT).deployment for _ in range(3)}

    assert chosen == {local}


def test_the_chosen_deployment_is_claimed_and_the_route_says_whether_it_holds_the_probe() -> None:
    claimed: list[Deployment] = []

    def claim(deployment: Deployment) -> bool:
        claimed.append(deployment)
        return deployment.provider == "local"

    router = alias_router(Draws(3), claim=claim)

    routes = [first_route(router, "gpt-4o", Capability.CHAT) for _ in range(3)]

    assert claimed == [route.deployment for route in routes]
    assert [route.probe for route in routes] == [r.deployment.provider == "local" for r in routes]
    assert any(route.probe for route in routes)
