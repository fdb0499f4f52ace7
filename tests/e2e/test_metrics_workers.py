"""`llmgw serve --workers 2` reports the sum of both workers at `/metrics`, whichever worker answers the
scrape (issue 16, point 1: prometheus-client's multiprocess mode, set up by the supervisor)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from grpclib.client import Channel

from llmgw.infrastructure.grpc.messages import v1
from tests.e2e.test_generation_any_worker import _local_provider, _serving
from tests.fakes.upstream import FakeUpstream, Script
from tests.integration.test_metrics import parse, value

REST_REQUESTS = 40
GRPC_REQUESTS = 10
FAILED = 6
MODEL = "local/llama"


async def test_every_scrape_reports_both_workers_requests(tmp_path: Path) -> None:
    fake = FakeUpstream("openai")
    await fake.start()
    try:
        env = {**_local_provider(fake), "LLMGW_SERVER__WORKERS": "2"}
        async with _serving(tmp_path, env) as process:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            # A connection per request: the kernel spreads new connections over the two workers.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one() -> int:
                    async with session.post(f"{process.rest_url}/v1/chat/completions", json=body) as response:
                        await response.read()
                        return response.status

                statuses = await asyncio.gather(*(one() for _ in range(REST_REQUESTS)))
                assert statuses == [200] * REST_REQUESTS
                fake.script(*[Script(status=400, error_body={"error": {"message": "bad"}})] * FAILED)
                failed = await asyncio.gather(*(one() for _ in range(FAILED)))
                assert failed == [400] * FAILED  # an upstream 400 is never retried
                for _ in range(GRPC_REQUESTS):
                    channel = Channel("127.0.0.1", process.grpc)
                    try:
                        await v1.LlmGatewayServiceStub(channel).create_chat_completion(
                            v1.CreateChatCompletionRequest(
                                model=MODEL, messages=[v1.ChatMessage(role="user", content="hi")]
                            )
                        )
                    finally:
                        channel.close()
                seen = []
                for _ in range(6):  # new connections: the scrapes land on both workers
                    async with session.get(f"http://127.0.0.1:{process.health}/metrics") as response:
                        assert response.status == 200
                        samples = parse(await response.text())
                    seen.append(
                        (
                            value(samples, "llmgw_requests_total", front="rest", status="completed"),
                            value(samples, "llmgw_requests_total", front="grpc", status="completed"),
                            value(samples, "llmgw_request_duration_seconds_count", model=MODEL),
                            value(samples, "llmgw_upstream_attempts_total", provider="local"),
                            value(samples, "llmgw_requests_total", status="error"),
                        )
                    )
        total = REST_REQUESTS + GRPC_REQUESTS + FAILED
        assert seen == [(REST_REQUESTS, GRPC_REQUESTS, total, total, FAILED)] * 6
    finally:
        await fake.close()
