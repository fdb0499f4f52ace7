"""Health: /livez and /readyz on the health port and the REST port; grpc.health.v1 and reflection on gRPC."""

from __future__ import annotations

import aiohttp
import pytest
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from tests.harness import Running


@pytest.mark.parametrize("where", ["health_url", "rest_url"])
async def test_livez_answers_ok_on_both_ports(gw: Running, where: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{getattr(gw, where)}/livez") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize("where", ["health_url", "rest_url"])
async def test_readyz_lists_each_provider_and_the_store(gw: Running, where: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{getattr(gw, where)}/readyz") as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ready"
    assert {p["name"]: p["credentials"] for p in body["providers"]} == {
        "dashscope": True,
        "openrouter": True,
        "local": True,
    }
    assert body["store"]["state"] == "up"
    assert body["circuits"] == [], "no deployment has failed: no circuit is open"


async def test_readyz_is_503_when_the_store_does_not_answer(gw: Running) -> None:
    class DownStore:
        async def ping(self) -> bool:
            raise ConnectionError("store is down")

    recorder = gw.gateway.recorder
    real_store = recorder._store
    recorder._store = DownStore()  # type: ignore[assignment]
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{gw.health_url}/readyz") as response:
            assert response.status == 503
            body = await response.json()
    finally:
        recorder._store = real_store
    assert body["status"] == "not_ready"
    assert body["store"]["state"] == "down"
    assert len(body["providers"]) == 3


async def test_grpc_health_reports_our_service_serving(gw: Running) -> None:
    health = HealthStub(gw.channel)
    for service in ("llmgateway.v1.LLMGatewayService", ""):
        reply = await health.Check(HealthCheckRequest(service=service))
        assert reply.status == HealthCheckResponse.SERVING


async def test_grpc_reflection_lists_and_describes_the_gateway_service(gw: Running) -> None:
    reflection = ServerReflectionStub(gw.channel)
    async with reflection.ServerReflectionInfo.open() as stream:
        await stream.send_message(ServerReflectionRequest(list_services=""))
        listed = await stream.recv_message()
        await stream.send_message(
            ServerReflectionRequest(file_containing_symbol="llmgateway.v1.LLMGatewayService")
        )
        described = await stream.recv_message()
        await stream.end()
    assert listed is not None
    assert described is not None
    names = {s.name for s in listed.list_services_response.service}
    assert "llmgateway.v1.LLMGatewayService" in names
    assert "grpc.health.v1.Health" in names
    assert described.file_descriptor_response.file_descriptor_proto, "grpcurl needs the service's file"
