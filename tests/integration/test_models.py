"""Models on both fronts, from the one catalog: OpenAI's shape on REST, `Model` messages on gRPC."""

from __future__ import annotations

import aiohttp
import pytest
from grpclib import GRPCError, Status

from llmgw.infrastructure.grpc.messages import v1
from tests.harness import Running


async def test_rest_lists_every_catalog_model_in_openai_shape(gw: Running) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{gw.rest_url}/v1/models") as response:
        assert response.status == 200
        body = await response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [m.id for m in gw.settings.models]
    gpt = next(m for m in body["data"] if m["id"] == "openrouter/openai/gpt-4o")
    assert gpt == {
        "id": "openrouter/openai/gpt-4o",
        "object": "model",
        "created": 0,
        "owned_by": "openrouter",
        "name": "openrouter/openai/gpt-4o",
        "provider": "openrouter",
        "capabilities": ["chat", "vision", "tools"],
    }


async def test_rest_gets_a_model_whose_id_contains_slashes(gw: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.rest_url}/v1/models/openrouter/openai/gpt-4o") as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["id"] == "openrouter/openai/gpt-4o"
    assert body["object"] == "model"


async def test_rest_answers_an_unknown_model_with_404_in_openai_error_shape(gw: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.rest_url}/v1/models/nope/nothing") as response,
    ):
        assert response.status == 404
        body = await response.json()
    assert body == {
        "error": {
            "message": "The model 'nope/nothing' does not exist.",
            "type": "not_found_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


async def test_grpc_lists_the_same_models_as_rest(gw: Running) -> None:
    response = await gw.grpc.list_models(v1.ListModelsRequest())
    assert response.object == "list"
    assert [m.id for m in response.data] == [m.id for m in gw.settings.models]
    first = response.data[0]
    assert (first.object, first.owned_by, first.provider) == ("model", "dashscope", "dashscope")
    assert first.capabilities == ["chat", "vision", "tools"]


async def test_grpc_gets_one_model_and_answers_not_found_for_unknown_ids(gw: Running) -> None:
    model = await gw.grpc.get_model(v1.GetModelRequest(id="openrouter/openai/gpt-4o"))
    assert model.id == "openrouter/openai/gpt-4o"
    with pytest.raises(GRPCError) as caught:
        await gw.grpc.get_model(v1.GetModelRequest(id="nope/nothing"))
    assert caught.value.status is Status.NOT_FOUND
    assert "nope/nothing" in (caught.value.message or "")
