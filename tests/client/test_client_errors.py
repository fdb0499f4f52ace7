"""Every `llmgw_client` error class, raised by a real llmgw (or by nothing listening), carrying the
gateway's error code, its message and the call's request and generation ids; and the API key, given or
taken from LLMGW_API_KEY."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from grpclib import Status
from llmgw_client import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    LLMGateway,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from llmgw_client.types import ChatCompletionChunk

from tests.auth_setup import (
    ALLOWED_MODEL,
    DISALLOWED_MODEL,
    INFERENCE,
    LOCAL_ONLY,
    Authed,
    authed_gateway,
    new_key,
    unknown_key,
)
from tests.client.conftest import HI, SLACK, generation_with_status, grpc_target, read_into, stream_all
from tests.fakes.ports import FakeStore
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, free_port


@pytest.fixture
async def authed(fakes: dict[str, FakeUpstream], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Authed]:
    monkeypatch.delenv("LLMGW_API_KEY", raising=False)
    async with authed_gateway(fakes) as running:
        yield running


async def chat_then_stream(client: LLMGateway, model: str) -> list[APIError]:
    """The error of a unary call and of a streamed one, whether the stream raises when opened or read."""
    raised: list[APIError] = []
    with pytest.raises(APIError) as unary:
        await client.chat.completions.create(model=model, messages=HI)
    raised.append(unary.value)
    with pytest.raises(APIError) as streamed:
        await stream_all(client, model=model, messages=HI)
    raised.append(streamed.value)
    return raised


def test_the_error_classes_form_the_openai_sdks_tree() -> None:
    for status_error in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        RateLimitError,
        InternalServerError,
    ):
        assert issubclass(status_error, APIStatusError)
    assert issubclass(APIStatusError, APIError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIConnectionError, APIError)
    assert not issubclass(APIConnectionError, APIStatusError)


# Keys


async def test_a_bad_key_is_an_authentication_error_with_the_gateways_code(authed: Authed) -> None:
    async with LLMGateway(grpc_target(authed.gw), api_key=unknown_key(), max_retries=0) as client:
        for refused in await chat_then_stream(client, ALLOWED_MODEL):
            assert isinstance(refused, AuthenticationError)
            assert refused.status is Status.UNAUTHENTICATED
            assert refused.code == "invalid_api_key"
            assert refused.message == "Invalid API key."
            assert refused.request_id
            assert refused.generation_id is None
        with pytest.raises(AuthenticationError):
            await client.models.list()
    assert authed.sent_upstream() == 0


async def test_no_key_at_all_is_an_authentication_error(authed: Authed) -> None:
    async with LLMGateway(grpc_target(authed.gw), max_retries=0) as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HI)
    assert refused.value.message is not None
    assert "Missing API key" in refused.value.message


async def test_the_key_is_taken_from_llmgw_api_key_when_none_is_given(
    authed: Authed, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE)
    monkeypatch.setenv("LLMGW_API_KEY", key.text)

    async with LLMGateway(grpc_target(authed.gw), max_retries=0) as client:
        completion = await client.chat.completions.create(model=ALLOWED_MODEL, messages=HI)
        assert completion.generation_id is not None
        generation = await client.generations.retrieve(completion.generation_id)
    assert generation.key_id == key.id
    # A key given in code wins over the environment's.
    async with LLMGateway(grpc_target(authed.gw), api_key=unknown_key(), max_retries=0) as client:
        with pytest.raises(AuthenticationError):
            await client.models.list()


async def test_a_key_limited_to_other_models_is_a_permission_denied_error(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE, models=LOCAL_ONLY)

    async with LLMGateway(grpc_target(authed.gw), api_key=key.text, max_retries=0) as client:
        for refused in await chat_then_stream(client, DISALLOWED_MODEL):
            assert isinstance(refused, PermissionDeniedError)
            assert refused.status is Status.PERMISSION_DENIED
            assert refused.code == "permission_denied"
            assert refused.message == f"This API key may not use the model '{DISALLOWED_MODEL}'."
            assert refused.request_id
        await client.chat.completions.create(model=ALLOWED_MODEL, messages=HI)
    assert authed.sent_upstream() == 1


# The caller's mistakes


async def test_an_unknown_model_is_a_not_found_error(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    for refused in await chat_then_stream(client, "nowhere/model"):
        assert isinstance(refused, NotFoundError)
        assert refused.status is Status.NOT_FOUND
        assert refused.code == "model_not_found"
        assert refused.message == "The model 'nowhere/model' does not exist."
        assert refused.request_id
    with pytest.raises(NotFoundError) as embeddings:
        await client.embeddings.create(model="nowhere/embed", input="hi")
    assert embeddings.value.code == "model_not_found"
    with pytest.raises(NotFoundError) as retrieved:
        await client.models.retrieve("nowhere/model")
    assert retrieved.value.code == "model_not_found"
    assert not any(fake.requests for fake in fakes.values())


async def test_an_unknown_generation_is_a_not_found_error(client: LLMGateway) -> None:
    with pytest.raises(NotFoundError) as refused:
        await client.generations.retrieve("gen-0123456789abcdef")
    assert refused.value.code == "generation_not_found"
    assert refused.value.message == "Generation 'gen-0123456789abcdef' not found."
    assert refused.value.request_id


async def test_a_request_without_messages_is_a_bad_request_error(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    with pytest.raises(BadRequestError) as refused:
        await client.chat.completions.create(model="local/llama", messages=[])
    assert refused.value.status is Status.INVALID_ARGUMENT
    assert refused.value.code == "invalid_request"
    assert refused.value.message == "'messages' must contain at least one message."
    assert refused.value.request_id
    assert fakes["local"].requests == []


async def test_a_request_the_upstream_rejects_is_a_bad_request_error_with_the_upstreams_code(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    error = {
        "error": {"message": "temperature is too high", "type": "invalid_request_error", "code": "bad_temp"}
    }
    fakes["local"].script(Script(status=400, error_body=error))

    with pytest.raises(BadRequestError) as refused:
        await client.chat.completions.create(model="local/llama", messages=HI, temperature=9.0)

    assert refused.value.code == "bad_temp"
    assert refused.value.message is not None
    assert "temperature is too high" in refused.value.message
    assert refused.value.generation_id is not None
    generation = await client.generations.retrieve(refused.value.generation_id)
    assert generation.status == "error"


# The upstream's failures


async def test_an_upstream_429_is_a_rate_limit_error_with_its_retry_after(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=429, headers={"Retry-After": "3"}))

    with pytest.raises(RateLimitError) as refused:
        await client.chat.completions.create(model="local/llama", messages=HI)

    assert refused.value.status is Status.RESOURCE_EXHAUSTED
    assert refused.value.retry_after == 3.0
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.message is not None
    assert refused.value.request_id
    assert refused.value.generation_id is not None
    assert refused.value.generation_id.startswith("gen-")
    generation = await client.generations.retrieve(refused.value.generation_id)
    assert (generation.status, generation.error_code) == ("error", "rate_limit_exceeded")
    assert len(fakes["local"].requests) == 1


async def test_an_upstream_5xx_is_an_internal_server_error(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=500), Script(status=502))

    for refused in await chat_then_stream(client, "local/llama"):
        assert isinstance(refused, InternalServerError)
        assert refused.status is Status.UNAVAILABLE
        assert refused.code == "upstream_unavailable"
        assert refused.message is not None
        assert refused.request_id
        assert refused.generation_id is not None
        assert refused.retry_after is None
    assert len(fakes["local"].requests) == 2


async def test_a_deadline_on_a_slow_upstream_is_an_api_timeout_error_and_the_gateway_records_it(
    client: LLMGateway, fakes: dict[str, FakeUpstream], records: FakeStore
) -> None:
    fakes["local"].script(Script(delay=3.0))

    started = time.monotonic()
    with pytest.raises(APITimeoutError) as timed_out:
        await client.chat.completions.create(model="local/llama", messages=HI, timeout=0.2)
    elapsed = time.monotonic() - started

    assert 0.2 <= elapsed < 0.2 + SLACK
    assert timed_out.value.message
    (record,) = await records.wait_for(1)
    if timed_out.value.generation_id is not None:
        assert timed_out.value.generation_id == record.id
    generation = await client.generations.retrieve(record.id)
    assert generation.status in ("error", "cancelled")
    assert generation.model == "local/llama"


async def test_a_deadline_before_a_streams_first_chunk_is_an_api_timeout_error(
    client: LLMGateway, fakes: dict[str, FakeUpstream], records: FakeStore
) -> None:
    fakes["local"].script(Script(first_chunk_delay=3.0))

    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await stream_all(client, model="local/llama", messages=HI, timeout=0.2)

    assert time.monotonic() - started < 0.2 + SLACK
    (record,) = await records.wait_for(1)
    generation = await client.generations.retrieve(record.id)
    assert generation.status in ("error", "cancelled")
    assert generation.streamed is True


async def test_a_deadline_passing_mid_stream_is_an_api_timeout_error_after_the_chunks_that_came(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(chunks=20, chunk_delay=0.1))

    received: list[ChatCompletionChunk] = []
    stream = await client.chat.completions.create(model="local/llama", messages=HI, stream=True, timeout=0.45)
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as timed_out:
        await read_into(received, stream)

    assert time.monotonic() - started < 0.45 + SLACK
    assert 1 <= len(received) < 20  # the first came with `create`; how many more depends on the load
    assert timed_out.value.generation_id in (None, stream.generation_id)
    assert stream.generation_id is not None
    generation = await generation_with_status(client, stream.generation_id, "cancelled", within=3.0)
    # The gateway holds the same deadline (grpc-timeout): whichever side notices first decides, the client
    # leaving (cancelled) or the gateway's own timeout of the upstream (error) — under load, either.
    assert generation.status in ("cancelled", "error")


async def test_the_clients_own_timeout_is_the_deadline_of_a_call_that_sets_none(
    served: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(delay=3.0))

    async with LLMGateway(grpc_target(served), timeout=0.2, max_retries=0) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.chat.completions.create(model="local/llama", messages=HI)
        assert time.monotonic() - started < 0.2 + SLACK
        # A call's own timeout overrides the client's.
        completion = await client.chat.completions.create(model="local/llama", messages=HI, timeout=5.0)
    assert completion.choices[0].finish_reason == "stop"


async def test_nothing_listening_is_an_api_connection_error_not_a_timeout() -> None:
    async with LLMGateway(f"127.0.0.1:{free_port()}", max_retries=0, timeout=5.0) as client:
        with pytest.raises(APIConnectionError) as refused:
            await client.models.list()
        assert not isinstance(refused.value, APITimeoutError)
        assert not isinstance(refused.value, APIStatusError)
        with pytest.raises(APIConnectionError):
            await client.chat.completions.create(model="local/llama", messages=HI)
