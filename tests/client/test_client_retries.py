"""The client's own retries, against a gateway that makes one upstream attempt a request: UNAVAILABLE and
RESOURCE_EXHAUSTED are retried (the latter after its retry-after), a stream only before its first chunk,
and nothing else."""

from __future__ import annotations

import time

import pytest
from llmgw_client import APIError, Backoff, BadRequestError, InternalServerError, LLMGateway, RateLimitError
from llmgw_client.types import ChatCompletionChunk

from tests.client.conftest import HI, SLACK, grpc_target, read_into
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

# Retries a few milliseconds apart, for tests about how many there are rather than when.
QUICK = Backoff(initial=0.01, maximum=0.02)


async def test_an_unavailable_answer_is_retried_by_default_and_the_retry_succeeds(
    served: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=503))

    async with LLMGateway(grpc_target(served)) as client:  # max_retries=2 by default
        completion = await client.chat.completions.create(model="local/llama", messages=HI)

    assert completion.choices[0].message.content == wire.expected_content(3)
    assert len(fakes["local"].requests) == 2
    assert [request.script.status for request in fakes["local"].requests if request.script] == [503, 200]


async def test_retries_stop_at_max_retries_and_raise_the_last_error(
    served: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(*[Script(status=503)] * 4)

    async with LLMGateway(grpc_target(served), max_retries=2, backoff=QUICK) as client:
        with pytest.raises(InternalServerError):
            await client.chat.completions.create(model="local/llama", messages=HI)
        assert len(fakes["local"].requests) == 3
        with pytest.raises(InternalServerError):
            await client.chat.completions.create(model="local/llama", messages=HI, max_retries=0)
    assert len(fakes["local"].requests) == 4


async def test_a_per_call_max_retries_overrides_the_clients(
    served: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=503), Script(status=503))

    async with LLMGateway(grpc_target(served), max_retries=0, backoff=QUICK) as client:
        completion = await client.chat.completions.create(model="local/llama", messages=HI, max_retries=2)

    assert completion.choices[0].finish_reason == "stop"
    assert len(fakes["local"].requests) == 3


async def test_a_rate_limit_is_retried_after_its_retry_after(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=429, headers={"Retry-After": "1"}))

    started = time.monotonic()
    completion = await client.chat.completions.create(model="local/llama", messages=HI, max_retries=2)
    elapsed = time.monotonic() - started

    assert completion.choices[0].finish_reason == "stop"
    first, _ = fakes["local"].requests
    assert first.script is not None
    assert first.script.status == 429
    assert 0.9 <= elapsed < 1.0 + SLACK


async def test_a_rate_limit_whose_retry_after_outlasts_the_deadline_is_not_waited_past_it(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=429, headers={"Retry-After": "30"}))

    started = time.monotonic()
    with pytest.raises(APIError):
        await client.chat.completions.create(model="local/llama", messages=HI, max_retries=2, timeout=1.0)

    assert time.monotonic() - started < 1.0 + SLACK
    assert len(fakes["local"].requests) == 1


async def test_a_bad_request_is_never_retried(client: LLMGateway, fakes: dict[str, FakeUpstream]) -> None:
    fakes["local"].script(Script(status=400))

    with pytest.raises(BadRequestError):
        await client.chat.completions.create(model="local/llama", messages=HI, max_retries=2)

    assert len(fakes["local"].requests) == 1


async def test_a_stream_refused_before_its_first_chunk_is_retried(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=503))

    stream = await client.chat.completions.create(
        model="local/llama", messages=HI, stream=True, max_retries=2
    )
    async with stream:
        content = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

    assert content == wire.expected_content(3)
    assert len(fakes["local"].requests) == 2
    assert stream.generation_id is not None
    generation = await client.generations.retrieve(stream.generation_id)
    assert generation.status == "completed"


async def test_a_stream_cut_after_its_first_chunks_raises_and_is_not_retried(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(chunks=5, fail_after_chunks=2))

    received: list[ChatCompletionChunk] = []
    stream = await client.chat.completions.create(
        model="local/llama", messages=HI, stream=True, max_retries=2
    )
    with pytest.raises(APIError) as failed:
        await read_into(received, stream)

    assert [chunk.choices[0].delta.content for chunk in received] == [wire.content_token(i) for i in range(2)]
    assert len(fakes["local"].requests) == 1
    assert failed.value.generation_id == stream.generation_id
    assert failed.value.code is not None


async def test_the_last_rate_limit_error_is_raised_when_retries_run_out(
    client: LLMGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=429, headers={"Retry-After": "0"}), Script(status=429))

    with pytest.raises(RateLimitError) as refused:
        await client.chat.completions.create(model="local/llama", messages=HI, max_retries=1)

    assert len(fakes["local"].requests) == 2
    assert refused.value.retry_after is None
