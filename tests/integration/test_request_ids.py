"""Request ids travel in and out on both fronts and mark every log line of their request."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest
from grpclib import GRPCError, Status
from grpclib.const import Cardinality

from llmgw.infrastructure.config.settings import LogFormat
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.rest.keys import GATEWAY
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running
from tests.log_capture import capture, logged

CHAT = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}


async def test_rest_echoes_the_clients_request_id_and_logs_it(gw: Running, log_buffer: io.StringIO) -> None:
    capture(log_buffer, LogFormat.TEXT)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.rest_url}/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-abc-123"}
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["x-request-id"] == "req-abc-123"
        missing = {**CHAT, "model": "nope/none"}
        async with session.post(
            f"{gw.rest_url}/v1/chat/completions", json=missing, headers={"x-request-id": "req-def-456"}
        ) as refused:
            assert refused.status == 404
    lines = logged(log_buffer).splitlines()
    # A served chat logs one line, its generation record; a refused request logs its access line.
    chat_lines = [line for line in lines if "req-abc-123" in line]
    assert len(chat_lines) == 1, logged(log_buffer)
    assert "chat gen-" in chat_lines[0]
    assert any("req-def-456" in line and "POST /v1/chat/completions 404" in line for line in lines)


async def test_rest_mints_a_request_id_when_the_client_sends_none_or_a_bad_one(gw: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.rest_url}/v1/models") as first:
            minted = first.headers["x-request-id"]
        async with session.get(
            f"{gw.rest_url}/v1/models", headers={"x-request-id": "bad id\twith tab"}
        ) as second:
            replaced = second.headers["x-request-id"]
    assert len(minted) == 32
    assert replaced != "bad id\twith tab"
    assert len(replaced) == 32


async def test_rest_errors_and_streams_carry_the_request_id_too(gw: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{gw.rest_url}/v1/models/nope/x", headers={"x-request-id": "r-404"}
        ) as missing:
            assert (missing.status, missing.headers["x-request-id"]) == (404, "r-404")
            assert "x-llmgw-attempts" not in missing.headers, "no upstream was tried"
        stream = {**CHAT, "stream": True}
        headers = {"x-request-id": "r-sse"}
        async with session.post(
            f"{gw.rest_url}/v1/chat/completions", json=stream, headers=headers
        ) as streamed:
            assert streamed.headers["x-request-id"] == "r-sse"
            assert (streamed.headers["x-llmgw-attempts"], streamed.headers["x-llmgw-provider"]) == (
                "1",
                "local",
            )
            await streamed.read()
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT) as unary:
            assert (unary.headers["x-llmgw-attempts"], unary.headers["x-llmgw-provider"]) == ("1", "local")


async def test_grpc_takes_the_request_id_from_metadata_and_sends_it_back(
    gw: Running, log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.JSON)
    async with gw.channel.request(
        "/llmgateway.v1.LLMGatewayService/CreateChatCompletion",
        Cardinality.UNARY_UNARY,
        v1.CreateChatCompletionRequest,
        v1.ChatCompletion,
        metadata={"x-request-id": "grpc-req-7"},
    ) as stream:
        await stream.send_message(
            v1.CreateChatCompletionRequest(
                model="local/llama", messages=[v1.ChatMessage(role="user", content="hi")]
            ),
            end=True,
        )
        await stream.recv_initial_metadata()
        assert stream.initial_metadata is not None
        assert stream.initial_metadata["x-request-id"] == "grpc-req-7"
        assert stream.initial_metadata["x-llmgw-attempts"] == "1"
        assert stream.initial_metadata["x-llmgw-provider"] == "local"
        generation_id = stream.initial_metadata["x-generation-id"]
        reply = await stream.recv_message()
        await stream.recv_trailing_metadata()
    assert reply is not None
    assert reply.id.startswith("gen-")
    assert reply.id == generation_id
    records = [json.loads(line) for line in logged(log_buffer).splitlines()]
    chat_lines = [r for r in records if r["message"].startswith("chat gen-")]
    assert chat_lines
    assert all(r["request_id"] == "grpc-req-7" for r in chat_lines)
    assert {"time", "level", "logger", "request_id", "message"} <= set(chat_lines[0])


async def test_grpc_mints_a_request_id_when_none_is_sent(gw: Running) -> None:
    async with gw.channel.request(
        "/llmgateway.v1.LLMGatewayService/ListModels",
        Cardinality.UNARY_UNARY,
        v1.ListModelsRequest,
        v1.ListModelsResponse,
    ) as stream:
        await stream.send_message(v1.ListModelsRequest(), end=True)
        await stream.recv_initial_metadata()
        assert stream.initial_metadata is not None
        minted = stream.initial_metadata["x-request-id"]
        await stream.recv_message()
        await stream.recv_trailing_metadata()
    assert isinstance(minted, str)
    assert len(minted) == 32


async def test_both_fronts_answer_from_the_same_gateway_object(gw: Running) -> None:
    assert gw.fronts.rest_app is not None
    assert gw.fronts.grpc_server is not None
    assert gw.fronts.rest_app[GATEWAY] is gw.gateway
    services = gw.fronts.grpc_server._mapping  # grpclib keeps the handler table here
    handler = services["/llmgateway.v1.LLMGatewayService/GetGeneration"].func
    assert handler.method.__self__._gateway is gw.gateway  # the handler carrying the ids, then our method
    # And behaviourally: a REST request's record is visible through gRPC at once, from the shared recorder.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT) as response,
    ):
        generation_id = (await response.json())["id"]
    found = await gw.grpc.get_generation(v1.GetGenerationRequest(id=generation_id))
    assert found.generation is not None
    assert found.generation.id == generation_id


async def test_a_grpc_error_carries_the_generation_id_in_its_trailers(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].script(Script(status=500))
    async with gw.channel.request(
        "/llmgateway.v1.LLMGatewayService/CreateChatCompletion",
        Cardinality.UNARY_UNARY,
        v1.CreateChatCompletionRequest,
        v1.ChatCompletion,
    ) as stream:
        await stream.send_message(
            v1.CreateChatCompletionRequest(
                model="local/llama", messages=[v1.ChatMessage(role="user", content="x")]
            ),
            end=True,
        )
        with pytest.raises(GRPCError) as caught:
            await stream.recv_message()
    assert caught.value.status is Status.UNAVAILABLE
    assert stream.trailing_metadata is not None
    generation_id = stream.trailing_metadata["x-generation-id"]
    assert stream.trailing_metadata["x-llmgw-attempts"] == "1"
    assert stream.trailing_metadata["x-llmgw-provider"] == "local"
    record = await gw.gateway.get_generation(str(generation_id))
    assert record.status.value == "error"
    assert [(a.provider, a.outcome, a.error_code) for a in record.attempts] == [
        ("local", "error", "upstream_unavailable")
    ]
