"""A gRPC client's deadline is the request's deadline: every upstream attempt is bounded by it."""

from __future__ import annotations

import asyncio

from grpclib.testing import ChannelFor

from llmgw.application.retries import RetryPolicy
from llmgw.bootstrap import build_gateway
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.errors import UpstreamUnavailable
from llmgw.infrastructure.config.settings import NO_AUTH, Settings
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.grpc.service import GatewayService
from llmgw.infrastructure.grpc.upb_codec import EncodedAwareCodec
from tests.fakes.ports import FakeProvider, FakeStore

MODEL = ModelSpec(
    id="m", name="m", provider="east", upstream_model="u", capabilities=frozenset({Capability.CHAT})
)
REQUEST = v1.CreateChatCompletionRequest(model="m", messages=[v1.ChatMessage(role="user", content="hi")])


async def test_every_attempt_of_a_grpc_call_ends_by_the_clients_deadline_not_the_providers_timeout() -> None:
    east = FakeProvider("east")
    east.will_answer(UpstreamUnavailable("east: 503", status=503))
    settings = Settings(
        providers={}, models=(MODEL,), retry=RetryPolicy(backoff=0.001, timeout=600.0), auth=NO_AUTH
    )
    loop = asyncio.get_running_loop()
    async with (
        build_gateway(settings, store=FakeStore(), providers={"east": east}) as gateway,
        ChannelFor([GatewayService(gateway)], codec=EncodedAwareCodec()) as channel,
    ):
        before = loop.time()
        await v1.LlmGatewayServiceStub(channel).create_chat_completion(REQUEST, timeout=5.0)
        after = loop.time()
    deadlines = [call.deadline for call in east.calls]
    assert len(deadlines) == 2
    assert deadlines[0] == deadlines[1], "one deadline for both attempts"
    assert deadlines[0] is not None
    assert before + 4.5 < deadlines[0] <= after + 5.0, "the client's 5 s, not the provider's 600 s"


async def test_a_grpc_call_without_a_deadline_gets_the_providers_timeout() -> None:
    east = FakeProvider("east")
    settings = Settings(providers={}, models=(MODEL,), retry=RetryPolicy(timeout=600.0), auth=NO_AUTH)
    loop = asyncio.get_running_loop()
    async with (
        build_gateway(settings, store=FakeStore(), providers={"east": east}) as gateway,
        ChannelFor([GatewayService(gateway)], codec=EncodedAwareCodec()) as channel,
    ):
        before = loop.time()
        await v1.LlmGatewayServiceStub(channel).create_chat_completion(REQUEST)
    deadline = east.calls[0].deadline
    assert deadline is not None
    assert before + 599 < deadline <= loop.time() + 600
