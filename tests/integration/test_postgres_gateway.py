"""The gateway with `storage.url = postgresql://…`: records readable at once, and after a restart."""

from __future__ import annotations

import os

import aiohttp
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import running_gateway, settings_for

DSN = os.environ.get("LLMGW_TEST_POSTGRES_DSN", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not DSN, reason="LLMGW_TEST_POSTGRES_DSN is not set: Postgres tests need a server"),
]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_is_looked_up_at_once_and_again_after_a_restart(
    fakes: dict[str, FakeUpstream], postgres_schema_dsn: str, stream: bool
) -> None:
    settings = settings_for(fakes, storage_url=postgres_schema_dsn)
    body = {
        "model": "dashscope/qwen-turbo",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    async with running_gateway(settings) as gw, aiohttp.ClientSession() as session:
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response:
            assert response.status == 200
            await response.read()
            generation_id = response.headers["x-generation-id"]
        async with session.get(f"{gw.rest_url}/api/v1/generation", params={"id": generation_id}) as response:
            assert response.status == 200
            first = (await response.json())["data"]
        async with session.get(f"{gw.health_url}/readyz") as response:
            assert (await response.json())["store"]["state"] == "up"

    async with running_gateway(settings) as gw, aiohttp.ClientSession() as session:
        assert gw.gateway.recorder.pending == 0
        async with session.get(f"{gw.rest_url}/api/v1/generation", params={"id": generation_id}) as response:
            assert response.status == 200
            again = (await response.json())["data"]

    assert first["tokens_prompt"] == 10
    assert first["tokens_completion"] == 3
    assert first["streamed"] is stream
    # 10 prompt tokens at 0.5 and 3 completion tokens at 1.5 USD per million (the test catalog's price).
    assert first["total_cost"] == pytest.approx((10 * 0.5 + 3 * 1.5) / 1e6)
    assert first["latency"] >= 0
    assert again == first
