"""Each chat and embeddings request's log line carries its request as fields in the JSON log format (issue
16, point 5): request id, generation id, key and team, model and provider, status and error code, tokens,
cost and latency, on both fronts; errors too."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest
from grpclib import GRPCError

from llmgw.infrastructure.config.settings import LogFormat
from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running
from tests.log_capture import capture, logged

CHAT = {"model": "local/llama", "messages": [{"role": "user", "content": "hi"}]}


def access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logged(buffer).splitlines()]
    return [line for line in lines if "generation_id" in line]


async def test_a_rest_chat_line_holds_the_request_as_fields(gw: Running, log_buffer: io.StringIO) -> None:
    capture(log_buffer, LogFormat.JSON)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.rest_url}/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-access-1"}
        ) as response,
    ):
        body = await response.json()

    (line,) = access_lines(log_buffer)
    assert line["request_id"] == "req-access-1"
    assert line["generation_id"] == body["id"]
    assert (line["kind"], line["model"], line["provider"], line["status"]) == (
        "chat",
        "local/llama",
        "local",
        "completed",
    )
    usage = body["usage"]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert line["latency_ms"] > 0
    assert (line["error_code"], line["key_id"], line["attempts"]) == (None, None, 1)
    assert "cost_usd" in line
    assert line["message"].startswith(f"chat {body['id']} ")


async def test_a_failed_grpc_call_logs_its_error_code(
    gw: Running, fakes: dict[str, FakeUpstream], log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.JSON)
    fakes["local"].script(Script(status=500))
    request = v1.CreateChatCompletionRequest(
        model="local/llama", messages=[v1.ChatMessage(role="user", content="x")]
    )
    with pytest.raises(GRPCError):
        await gw.grpc.create_chat_completion(request)

    (line,) = access_lines(log_buffer)
    assert (line["status"], line["error_code"]) == ("error", "upstream_unavailable")
    assert line["generation_id"].startswith("gen-")


async def test_the_text_format_keeps_its_one_line(gw: Running, log_buffer: io.StringIO) -> None:
    capture(log_buffer, LogFormat.TEXT)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.rest_url}/v1/chat/completions", json=CHAT),
    ):
        pass

    text = logged(log_buffer)
    assert " chat gen-" in text
    assert "generation_id" not in text
