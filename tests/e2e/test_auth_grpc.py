"""Keys on the gRPC front, with the generated grpclib stub and a plain grpcio client: UNAUTHENTICATED for a
missing or bad key, PERMISSION_DENIED for a key without the scope or the model, NOT_FOUND for another
key's generation, health open, and nothing refused ever reaching an upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpclib import GRPCError, Status
from grpclib.health.v1 import health_pb2
from grpclib.health.v1.health_grpc import HealthStub

from llmgw.infrastructure.grpc.messages import v1
from tests.auth_setup import (
    ADMIN,
    ADMIN_KEY,
    ALLOWED_MODEL,
    DISALLOWED_MODEL,
    INFERENCE,
    LOCAL_MODELS,
    LOCAL_ONLY,
    USAGE_READ,
    Authed,
    authed_gateway,
    disable,
    malformed_keys,
    new_key,
    new_team,
    rotate,
    unknown_key,
    with_wrong_secret,
)
from tests.e2e.conftest import GrpcioStubs
from tests.fakes.upstream import FakeUpstream
from tests.harness import catalog

SERVICE = "llmgateway.v1.LLMGatewayService"
CATALOG_IDS = {model.id for model in catalog()}


@pytest.fixture
async def authed(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Authed]:
    async with authed_gateway(fakes) as running:
        yield running


def hello(model: str = ALLOWED_MODEL) -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(
        model=model, messages=[v1.ChatMessage(role="user", content="Say hello.")]
    )


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def chat(authed: Authed, key: str, model: str = ALLOWED_MODEL) -> str:
    completion = await authed.gw.grpc.create_chat_completion(hello(model), metadata=bearer(key), timeout=5)
    assert completion.id.startswith("gen-")
    return completion.id


async def refused_chat(authed: Authed, metadata: dict[str, str], model: str = ALLOWED_MODEL) -> GRPCError:
    with pytest.raises(GRPCError) as refused:
        await authed.gw.grpc.create_chat_completion(hello(model), metadata=metadata, timeout=5)
    return refused.value


async def refused_stream(authed: Authed, metadata: dict[str, str], model: str = ALLOWED_MODEL) -> GRPCError:
    with pytest.raises(GRPCError) as refused:
        async for _ in authed.gw.grpc.create_chat_completion_stream(
            hello(model), metadata=metadata, timeout=5
        ):
            pass
    return refused.value


def assert_unauthenticated(exc: GRPCError, message: str | None = None) -> None:
    assert exc.status is Status.UNAUTHENTICATED, exc
    if message is not None:
        assert exc.message == message


def assert_denied(exc: GRPCError) -> None:
    assert exc.status is Status.PERMISSION_DENIED, exc


# Missing, malformed, unknown, wrong secret


async def test_no_key_is_refused_on_every_rpc(authed: Authed) -> None:
    stub = authed.gw.grpc
    calls = [
        stub.list_models(v1.ListModelsRequest(), timeout=5),
        stub.get_model(v1.GetModelRequest(id=ALLOWED_MODEL), timeout=5),
        stub.create_chat_completion(hello(), timeout=5),
        stub.create_embeddings(v1.CreateEmbeddingsRequest(model="local/embed", input=["hi"]), timeout=5),
        stub.get_generation(v1.GetGenerationRequest(id="gen-0123456789abcdef"), timeout=5),
    ]
    for pending in calls:
        with pytest.raises(GRPCError) as refused:
            await pending
        assert_unauthenticated(refused.value)
        assert refused.value.message is not None
        assert "Missing API key" in refused.value.message
    assert_unauthenticated(await refused_stream(authed, {}))
    assert authed.sent_upstream() == 0


@pytest.mark.parametrize("kind", sorted(malformed_keys()))
async def test_a_malformed_key_is_refused(authed: Authed, kind: str) -> None:
    key = malformed_keys()[kind]
    assert_unauthenticated(await refused_chat(authed, bearer(key)), "Invalid API key.")
    assert_unauthenticated(await refused_chat(authed, {"x-api-key": key}), "Invalid API key.")
    assert_unauthenticated(await refused_stream(authed, bearer(key)))
    assert authed.sent_upstream() == 0


async def test_an_unknown_key_and_a_wrong_secret_are_refused_and_the_real_key_works(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE)
    for bad in (unknown_key(), with_wrong_secret(key.text)):
        assert_unauthenticated(await refused_chat(authed, bearer(bad)), "Invalid API key.")
        with pytest.raises(GRPCError) as listing:
            await authed.gw.grpc.list_models(metadata={"x-api-key": bad}, timeout=5)
        assert_unauthenticated(listing.value)
    assert authed.sent_upstream() == 0
    await chat(authed, key.text)
    completion = await authed.gw.grpc.create_chat_completion(
        hello(), metadata={"x-api-key": key.text}, timeout=5
    )
    assert completion.model == ALLOWED_MODEL
    assert authed.sent_upstream() == 2


# Expired, disabled, rotated


async def test_expired_and_disabled_keys_are_refused(authed: Authed) -> None:
    expired = await authed.put_key(expires_at=time.time() - 1)
    written_disabled = await authed.put_key(disabled=True)
    for key in (expired, written_disabled):
        assert_unauthenticated(await refused_chat(authed, bearer(key)))
    live = await new_key(authed.gw, scopes=INFERENCE)
    await chat(authed, live.text)
    await disable(authed.gw, live.id)
    assert_unauthenticated(await refused_chat(authed, bearer(live.text)), "This API key is disabled.")
    assert_unauthenticated(await refused_stream(authed, bearer(live.text)))
    assert authed.sent_upstream() == 1


async def test_a_rotated_key_old_secret_works_within_the_grace_and_not_after(
    fakes: dict[str, FakeUpstream],
) -> None:
    async with authed_gateway(fakes, cache_ttl=0.2) as authed:
        old = await new_key(authed.gw, scopes=INFERENCE)
        new = await rotate(authed.gw, old.id, grace_seconds=0.5)
        await chat(authed, old.text)
        await chat(authed, new.text)
        assert authed.sent_upstream() == 2
        await asyncio.sleep(0.7)
        assert_unauthenticated(await refused_chat(authed, bearer(old.text)), "Invalid API key.")
        assert authed.sent_upstream() == 2
        await chat(authed, new.text)
        assert authed.sent_upstream() == 3


# Scopes and models


async def test_a_usage_read_key_may_not_call_inference_rpcs(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=USAGE_READ)
    assert_denied(await refused_chat(authed, bearer(key.text)))
    assert_denied(await refused_stream(authed, bearer(key.text)))
    for pending in (
        authed.gw.grpc.list_models(metadata=bearer(key.text), timeout=5),
        authed.gw.grpc.create_embeddings(
            v1.CreateEmbeddingsRequest(model="local/embed", input=["hi"]),
            metadata=bearer(key.text),
            timeout=5,
        ),
    ):
        with pytest.raises(GRPCError) as refused:
            await pending
        assert_denied(refused.value)
        assert refused.value.message == "This API key lacks the 'inference' scope."
    assert authed.sent_upstream() == 0


async def test_a_key_limited_to_some_models_sees_and_uses_only_those(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE, models=LOCAL_ONLY)
    metadata = bearer(key.text)
    listed = await authed.gw.grpc.list_models(metadata=metadata, timeout=5)
    assert {model.id for model in listed.data} == LOCAL_MODELS
    shown = await authed.gw.grpc.get_model(v1.GetModelRequest(id=ALLOWED_MODEL), metadata=metadata, timeout=5)
    assert shown.id == ALLOWED_MODEL
    with pytest.raises(GRPCError) as hidden:
        await authed.gw.grpc.get_model(v1.GetModelRequest(id=DISALLOWED_MODEL), metadata=metadata, timeout=5)
    assert_denied(hidden.value)

    for refused in (
        await refused_chat(authed, metadata, DISALLOWED_MODEL),
        await refused_stream(authed, metadata, DISALLOWED_MODEL),
    ):
        assert_denied(refused)
        assert refused.message is not None
        assert DISALLOWED_MODEL in refused.message
        assert not [other for other in CATALOG_IDS - {DISALLOWED_MODEL} if other in refused.message]
    with pytest.raises(GRPCError) as embed_refused:
        await authed.gw.grpc.create_embeddings(
            v1.CreateEmbeddingsRequest(model="dashscope/text-embedding-v3", input=["hi"]),
            metadata=metadata,
            timeout=5,
        )
    assert_denied(embed_refused.value)
    assert authed.sent_upstream() == 0
    await chat(authed, key.text)
    assert authed.sent_upstream() == 1


# Generations


async def test_a_generation_is_read_by_its_key_its_team_readers_and_admins_only(authed: Authed) -> None:
    team = await new_team(authed.gw)
    owner = await new_key(authed.gw, scopes=INFERENCE, team_id=team)
    reader = await new_key(authed.gw, scopes=USAGE_READ, team_id=team)
    teammate = await new_key(authed.gw, scopes=INFERENCE, team_id=team)
    stranger = await new_key(authed.gw, scopes=[*INFERENCE, *USAGE_READ])
    admin = await new_key(authed.gw, scopes=ADMIN)
    generation_id = await chat(authed, owner.text)
    request = v1.GetGenerationRequest(id=generation_id)

    for reading in (owner.text, reader.text, admin.text, ADMIN_KEY):
        found = await authed.gw.grpc.get_generation(request, metadata=bearer(reading), timeout=5)
        record = found.generation
        assert record is not None
        assert (record.id, record.key_id, record.team_id) == (generation_id, owner.id, team)
    for hidden in (teammate.text, stranger.text):
        with pytest.raises(GRPCError) as refused:
            await authed.gw.grpc.get_generation(request, metadata=bearer(hidden), timeout=5)
        assert refused.value.status is Status.NOT_FOUND
        assert refused.value.message == f"Generation '{generation_id}' not found."
    assert authed.sent_upstream() == 1


# Health, the operator's key, auth off


async def test_grpc_health_is_open(authed: Authed) -> None:
    health = HealthStub(authed.gw.channel)
    for metadata in (None, {"authorization": "Bearer garbage"}):
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE), metadata=metadata, timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert authed.sent_upstream() == 0


async def test_the_configured_admin_key_may_call_any_rpc(authed: Authed) -> None:
    stub, metadata = authed.gw.grpc, bearer(ADMIN_KEY)
    listed = await stub.list_models(metadata=metadata, timeout=5)
    assert {model.id for model in listed.data} == CATALOG_IDS
    assert (await stub.get_model(v1.GetModelRequest(id=DISALLOWED_MODEL), metadata=metadata, timeout=5)).id
    generation_id = await chat(authed, ADMIN_KEY, DISALLOWED_MODEL)
    chunks = [c async for c in stub.create_chat_completion_stream(hello(), metadata={"x-api-key": ADMIN_KEY})]
    assert chunks
    embedded = await stub.create_embeddings(
        v1.CreateEmbeddingsRequest(model="local/embed", input=["hi"]), metadata=metadata, timeout=5
    )
    assert len(embedded.data) == 1
    found = await stub.get_generation(v1.GetGenerationRequest(id=generation_id), metadata=metadata, timeout=5)
    assert found.generation is not None
    assert found.generation.key_id == "config"
    assert authed.sent_upstream() == 3
    assert_unauthenticated(await refused_chat(authed, bearer(ADMIN_KEY + "x")))
    assert authed.sent_upstream() == 3


async def test_with_auth_off_every_rpc_is_open(fakes: dict[str, FakeUpstream]) -> None:
    async with authed_gateway(fakes, enabled=False) as authed:
        listed = await authed.gw.grpc.list_models(timeout=5)
        assert {model.id for model in listed.data} == CATALOG_IDS
        completion = await authed.gw.grpc.create_chat_completion(hello(DISALLOWED_MODEL), timeout=5)
        found = await authed.gw.grpc.get_generation(v1.GetGenerationRequest(id=completion.id), timeout=5)
        assert found.generation is not None
        assert found.generation.key_id == ""
        assert authed.sent_upstream() == 1


# A plain grpcio client


async def test_grpcio_client_missing_valid_and_wrong_scope_keys(
    fakes: dict[str, FakeUpstream], grpcio_stubs: GrpcioStubs
) -> None:
    async with authed_gateway(fakes) as authed:
        await grpcio_checks(authed, grpcio_stubs)


async def grpcio_checks(authed: Authed, grpcio_stubs: GrpcioStubs) -> None:
    inference = await new_key(authed.gw, scopes=INFERENCE)
    usage = await new_key(authed.gw, scopes=USAGE_READ)
    limited = await new_key(authed.gw, scopes=INFERENCE, models=LOCAL_ONLY)
    chat_pb2, models_pb2 = grpcio_stubs.chat, grpcio_stubs.models

    def request(model: str = ALLOWED_MODEL) -> object:
        return chat_pb2.CreateChatCompletionRequest(
            model=model, messages=[chat_pb2.ChatMessage(role="user", content="hi")]
        )

    def auth(key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)

    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{authed.gw.fronts.ports['grpc']}", options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        stub = grpcio_stubs.gateway_grpc.LLMGatewayServiceStub(channel)
        refusals = [
            (request(), (), grpc.StatusCode.UNAUTHENTICATED),
            (request(), auth(unknown_key()), grpc.StatusCode.UNAUTHENTICATED),
            (request(), auth(with_wrong_secret(inference.text)), grpc.StatusCode.UNAUTHENTICATED),
            (request(), auth(usage.text), grpc.StatusCode.PERMISSION_DENIED),
            (request(DISALLOWED_MODEL), auth(limited.text), grpc.StatusCode.PERMISSION_DENIED),
        ]
        for message, metadata, code in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateChatCompletion(message, metadata=metadata, timeout=5)
            assert refused.value.code() is code, refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as unlisted:
            await stub.ListModels(models_pb2.ListModelsRequest(), timeout=5)
        assert unlisted.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert authed.sent_upstream() == 0

        completion = await stub.CreateChatCompletion(request(), metadata=auth(inference.text), timeout=5)
        assert completion.model == ALLOWED_MODEL
        completion = await stub.CreateChatCompletion(
            request(), metadata=(("x-api-key", limited.text),), timeout=5
        )
        assert completion.model == ALLOWED_MODEL
        listed = await stub.ListModels(models_pb2.ListModelsRequest(), metadata=auth(limited.text), timeout=5)
        assert {model.id for model in listed.data} == LOCAL_MODELS
        lookup = grpcio_stubs.generation.GetGenerationRequest(id=completion.id)
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await stub.GetGeneration(lookup, metadata=auth(usage.text), timeout=5)
        assert hidden.value.code() is grpc.StatusCode.NOT_FOUND
        found = await stub.GetGeneration(lookup, metadata=auth(limited.text), timeout=5)
        assert found.generation.key_id == limited.id
    assert authed.sent_upstream() == 2
