"""An upstream that answers a streaming request with one JSON body still gives the client a stream: the
completion turned into well-formed chunks, or its error. Both fronts."""

from __future__ import annotations

import openai
import pytest
from grpclib import GRPCError, Status
from openai.types.chat import ChatCompletionMessageParam

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

MODEL = "local/llama"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


def rest_client(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0, timeout=10.0)


async def test_rest_a_whole_body_answer_reaches_the_sdk_as_a_well_formed_stream(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(whole_body_for_stream=True))
    async with rest_client(gw) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    *answer, last = chunks
    assert "".join(c.delta.content or "" for chunk in answer for c in chunk.choices) == wire.expected_content(
        3
    )
    assert [c.finish_reason for chunk in answer for c in chunk.choices if c.finish_reason] == ["stop"]
    assert answer[0].choices[0].delta.role == "assistant"
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    record = await gw.gateway.get_generation(chunks[0].id)
    assert (record.status.value, record.completion_tokens, record.finish_reason) == ("completed", 3, "stop")


async def test_rest_whole_body_tool_calls_keep_their_indexes(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(whole_body_for_stream=True, tool_calls=2))
    async with rest_client(gw) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]

    calls = [call for chunk in chunks for c in chunk.choices for call in c.delta.tool_calls or []]
    assert [call.index for call in calls] == [0, 1]
    assert [call.function.name for call in calls if call.function] == [
        wire.tool_call(j)["function"]["name"] for j in range(2)
    ]
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == ["tool_calls"]


async def test_rest_a_whole_body_error_is_the_clients_error_not_a_broken_stream(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(whole_body_for_stream=True, fail_after_chunks=0))
    async with rest_client(gw) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)

    assert caught.value.status_code == 502
    assert "ended before [DONE]" not in caught.value.message
    assert "Bad Gateway" in caught.value.message


async def test_grpc_a_whole_body_answer_arrives_as_a_stream(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(whole_body_for_stream=True))
    request = v1.CreateChatCompletionRequest(
        model=MODEL,
        messages=[v1.ChatMessage(role="user", content="Say hello.")],
        stream_options=v1.StreamOptions(include_usage=True),
    )
    chunks = [chunk async for chunk in gw.grpc.create_chat_completion_stream(request)]

    *answer, last = chunks
    text = "".join(c.delta.content or "" for chunk in answer for c in chunk.choices if c.delta is not None)
    assert text == wire.expected_content(3)
    assert [c.finish_reason for chunk in answer for c in chunk.choices if c.finish_reason] == ["stop"]
    assert last.usage is not None
    assert last.usage.completion_tokens == 3


async def test_grpc_a_whole_body_error_ends_the_call_with_its_status(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(whole_body_for_stream=True, fail_after_chunks=0))
    request = v1.CreateChatCompletionRequest(model=MODEL, messages=[v1.ChatMessage(role="user", content="x")])
    with pytest.raises(GRPCError) as caught:
        _ = [chunk async for chunk in gw.grpc.create_chat_completion_stream(request)]

    assert caught.value.status is Status.UNAVAILABLE
    assert "ended before [DONE]" not in (caught.value.message or "")
