"""A refused gRPC call's trailers carry what REST puts in its error body and headers (issue 14): the
OpenAI error `code`, the `param` it names and, for rate limits, `retry-after`, so a gRPC client can tell
`model_not_found` from a missing generation and know when to come back."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib import GRPCError, Status
from grpclib.const import Cardinality

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running

CHAT_PATH = "/llmgateway.v1.LLMGatewayService/CreateChatCompletion"


def chat(model: str = "local/llama") -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(model=model, messages=[v1.ChatMessage(role="user", content="x")])


async def refused(gw: Running, request: v1.CreateChatCompletionRequest) -> tuple[Status, dict[str, Any]]:
    async with gw.channel.request(
        CHAT_PATH, Cardinality.UNARY_UNARY, v1.CreateChatCompletionRequest, v1.ChatCompletion
    ) as stream:
        await stream.send_message(request, end=True)
        with pytest.raises(GRPCError) as caught:
            await stream.recv_message()
    assert stream.trailing_metadata is not None
    return caught.value.status, dict(stream.trailing_metadata)


async def test_an_upstream_rate_limit_carries_its_code_and_retry_after(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    limited = Script(status=429, headers={"Retry-After": "7"})
    fakes["local"].script(limited, limited, limited, limited)

    status, trailers = await refused(gw, chat())

    assert status is Status.RESOURCE_EXHAUSTED
    assert trailers["x-llmgw-error-code"] == "rate_limit_exceeded"
    assert trailers["retry-after"] == "7"
    assert trailers["x-generation-id"].startswith("gen-")
    assert trailers["x-request-id"]


async def test_an_unknown_model_names_its_code_and_no_retry_after(gw: Running) -> None:
    status, trailers = await refused(gw, chat("nowhere/model"))

    assert status is Status.NOT_FOUND
    assert trailers["x-llmgw-error-code"] == "model_not_found"
    assert "retry-after" not in trailers


async def test_an_invalid_request_names_the_param_at_fault(gw: Running) -> None:
    status, trailers = await refused(gw, v1.CreateChatCompletionRequest(model="local/llama"))

    assert status is Status.INVALID_ARGUMENT
    assert trailers["x-llmgw-error-code"]
    assert trailers["x-llmgw-error-param"] == "messages"
