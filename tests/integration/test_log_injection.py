"""A client cannot plant a line in the gateway's log: whatever it sends (a model id, a path, a header) is
written on the line that quotes it, control characters escaped, in both log formats."""

from __future__ import annotations

import io
import json

import aiohttp

from llmgw.infrastructure.config.settings import LogFormat
from tests.harness import Running
from tests.log_capture import capture, logged

FORGED = "2026-12-02 00:00:00,000 ERROR llmgw [-] the database is on fire"
# An uncatalogued `local/...` id reaches the upstream, and the gateway logs the model of every request.
MODEL = f"local/llama\n{FORGED}\r\x1b[31m"


async def send(gw: Running) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{gw.rest_url}/v1/chat/completions", json=body) as response:
            assert response.status == 200


async def test_a_model_id_with_a_newline_cannot_forge_a_text_log_line(
    gw: Running, log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.TEXT)
    await send(gw)
    lines = logged(log_buffer).splitlines()
    quoting = [line for line in lines if "the database is on fire" in line]
    assert quoting, lines
    assert all(not line.startswith("2026-12-02 00:00:00,000") for line in lines), lines
    assert all("\x1b" not in line and "\r" not in line for line in lines)
    assert any("model=local/llama\\n2026-12-02" in line and "\\x1b[31m" in line for line in quoting)


async def test_the_json_format_keeps_the_model_id_inside_one_message(
    gw: Running, log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.JSON)
    await send(gw)
    entries = [json.loads(line) for line in logged(log_buffer).splitlines()]
    assert any(MODEL in entry["message"] for entry in entries)


async def test_a_path_with_an_encoded_newline_cannot_forge_an_access_log_line(
    gw: Running, log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.TEXT)
    forged = FORGED.replace(" ", "%20")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.rest_url}/nowhere%0A{forged}") as response,
    ):
        assert response.status == 404
    lines = logged(log_buffer).splitlines()
    assert any("/nowhere\\n2026-12-02" in line and " 404 " in line for line in lines), lines
    assert all(not line.startswith("2026-12-02 00:00:00,000") for line in lines), lines
