"""REST chat errors: DESIGN.md's table in OpenAI's error shape, request ids on every answer, no key leaked."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any, NamedTuple

import aiohttp
import pytest

from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import SECRETS, Running, free_port, running_gateway, settings_for

Json = dict[str, Any]
HI = [{"role": "user", "content": "hi"}]
MODELS = {
    "local": "local/llama",
    "dashscope": "dashscope/qwen-turbo",
    "openrouter": "openrouter/openai/gpt-4o",
}
CLIENT_REQUEST_ID = "client-req-0042"


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    text: str

    @property
    def error(self) -> Json:
        body = json.loads(self.text)
        assert list(body) == ["error"]
        error: Json = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str)
        assert error["message"]
        return error


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


async def post(
    session: aiohttp.ClientSession,
    gw: Running,
    *,
    json_body: Any = None,
    data: bytes | None = None,
    path: str = "/v1/chat/completions",
) -> Answer:
    headers = {"x-request-id": CLIENT_REQUEST_ID}
    if data is None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    async with session.post(f"{gw.rest_url}{path}", data=data, headers=headers) as response:
        return Answer(response.status, dict(response.headers), await response.text())


def sse_payloads(answer: Answer) -> list[str]:
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    return [line.removeprefix("data: ") for line in answer.text.split("\n") if line.startswith("data: ")]


def log_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    texts = []
    formatter = logging.Formatter()
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
        if record.exc_text:
            texts.append(record.exc_text)
    return texts


def assert_no_secret_leaked(answer: Answer, caplog: pytest.LogCaptureFixture) -> None:
    """No upstream key in the body, the headers or any log line; the client's request id came back."""
    assert answer.headers.get("X-Request-ID") == CLIENT_REQUEST_ID
    exposed = [answer.text, *answer.headers.values(), caplog.text, *log_texts(caplog.records)]
    for secret in SECRETS.values():
        for text in exposed:
            assert secret not in text


def chat(provider: str = "local", **fields: Any) -> Json:
    return {"model": MODELS[provider], "messages": HI, **fields}


class BadRequest(NamedTuple):
    body: bytes
    param: str | None


BAD_REQUESTS = {
    "malformed JSON": BadRequest(b'{"model": "local/llama", "messages": [', None),
    "empty body": BadRequest(b"", None),
    "a JSON array": BadRequest(b'[{"model": "local/llama"}]', None),
    "a JSON string": BadRequest(b'"hello"', None),
    "missing model": BadRequest(json.dumps({"messages": HI}).encode(), "model"),
    "model not a string": BadRequest(json.dumps({"model": 42, "messages": HI}).encode(), "model"),
    "empty model": BadRequest(json.dumps({"model": "", "messages": HI}).encode(), "model"),
    "missing messages": BadRequest(json.dumps({"model": "local/llama"}).encode(), "messages"),
    "messages not a list": BadRequest(
        json.dumps({"model": "local/llama", "messages": "hi"}).encode(), "messages"
    ),
    "empty messages": BadRequest(json.dumps({"model": "local/llama", "messages": []}).encode(), "messages"),
    "a message without role": BadRequest(
        json.dumps({"model": "local/llama", "messages": [{"content": "hi"}]}).encode(), "messages"
    ),
    "stream not a boolean": BadRequest(
        json.dumps({"model": "local/llama", "messages": HI, "stream": "yes"}).encode(), "stream"
    ),
    # orjson reads 1024 levels but writes 255: the upstream's body could not be written (was a 500)
    "JSON nested 300 levels": BadRequest(
        b'{"model": "local/llama", "messages": [{"role": "user", "content": "hi"}], "deep": '
        + b"[" * 300
        + b"]" * 300
        + b"}",
        None,
    ),
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/completions:stream"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
async def test_a_request_the_gateway_cannot_read_is_a_400_naming_the_param(
    *,
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    case: BadRequest,
    path: str,
) -> None:
    answer = await post(session, gw, data=case.body, path=path)

    assert answer.status == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.error["type"] == "invalid_request_error"
    assert answer.error["param"] == case.param
    assert fakes["local"].requests == []
    assert_no_secret_leaked(answer, caplog)


@pytest.mark.parametrize("model", ["nosuch/llama", "gpt-4o", "dashscope"])
async def test_an_unknown_provider_or_model_is_a_404_model_not_found(
    gw: Running, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, model: str
) -> None:
    answer = await post(session, gw, json_body={"model": model, "messages": HI})

    assert answer.status == 404
    assert answer.error["type"] == "not_found_error"
    assert answer.error["code"] == "model_not_found"
    assert model in answer.error["message"]
    assert_no_secret_leaked(answer, caplog)


async def test_a_model_without_chat_is_a_400(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = await post(session, gw, json_body={"model": "dashscope/text-embedding-v3", "messages": HI})

    assert answer.status == 400
    assert answer.error["type"] == "invalid_request_error"
    assert answer.error["param"] == "model"
    assert fakes["dashscope"].requests == []
    assert_no_secret_leaked(answer, caplog)


async def test_tools_for_a_model_without_tools_is_a_400(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    answer = await post(session, gw, json_body={"model": "local/no-price", "messages": HI, "tools": tools})

    assert answer.status == 400
    assert answer.error["type"] == "invalid_request_error"
    assert answer.error["param"] == "tools"
    assert fakes["local"].requests == []
    assert_no_secret_leaked(answer, caplog)


async def test_a_body_over_max_body_bytes_is_a_413(
    fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    body = chat(messages=[{"role": "user", "content": "x" * 5000}])
    async with running_gateway(settings_for(fakes, max_body_bytes=2000)) as gw:
        answer = await post(session, gw, json_body=body)
        small = await post(session, gw, json_body=chat())

    assert answer.status == 413
    assert answer.error["type"] == "invalid_request_error"
    assert small.status == 200
    assert len(fakes["local"].requests) == 1
    assert_no_secret_leaked(answer, caplog)


async def test_an_unknown_route_is_a_404_in_openai_shape(
    gw: Running, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await post(session, gw, json_body=chat(), path="/v1/chat/complete")

    assert answer.status == 404
    assert answer.error["type"] == "not_found_error"
    assert_no_secret_leaked(answer, caplog)


async def test_a_wrong_method_is_a_405_in_openai_shape(gw: Running, session: aiohttp.ClientSession) -> None:
    headers = {"x-request-id": CLIENT_REQUEST_ID}
    async with session.get(f"{gw.rest_url}/v1/chat/completions", headers=headers) as response:
        answer = Answer(response.status, dict(response.headers), await response.text())

    assert answer.status == 405
    assert "POST" in answer.headers.get("Allow", "")
    assert answer.error["type"] == "invalid_request_error"
    assert answer.headers.get("X-Request-ID") == CLIENT_REQUEST_ID


async def test_a_request_id_unfit_for_logs_is_replaced_by_a_minted_one(
    gw: Running, session: aiohttp.ClientSession
) -> None:
    unfit = "two words\u00e9" + "x" * 200
    url = f"{gw.rest_url}/v1/chat/completions"
    async with session.post(url, json=chat(), headers={"x-request-id": unfit}) as response:
        assert response.status == 200
        echoed = response.headers.get("x-request-id")

    assert echoed
    assert echoed != unfit


async def test_every_answer_carries_a_request_id_even_when_the_client_sent_none(
    gw: Running, session: aiohttp.ClientSession
) -> None:
    url = f"{gw.rest_url}/v1/chat/completions"
    async with session.post(url, json=chat()) as ok, session.post(url, json={"model": "x"}) as bad:
        ids = [ok.headers.get("x-request-id"), bad.headers.get("x-request-id")]
    async with session.post(url, json=chat(stream=True)) as streamed:
        await streamed.read()
        ids.append(streamed.headers.get("x-request-id"))

    assert all(ids)
    assert len(set(ids)) == 3


async def test_a_client_request_id_is_echoed_on_success_and_on_streams(
    gw: Running, session: aiohttp.ClientSession
) -> None:
    ok = await post(session, gw, json_body=chat())
    streamed = await post(session, gw, json_body=chat(stream=True))

    assert ok.status == 200
    assert ok.headers.get("X-Request-ID") == CLIENT_REQUEST_ID
    assert sse_payloads(streamed)[-1] == "[DONE]"
    assert streamed.headers.get("X-Request-ID") == CLIENT_REQUEST_ID


class UpstreamCase(NamedTuple):
    upstream_status: int
    status: int
    type: str


UPSTREAM_CASES = {
    "400": UpstreamCase(400, 400, "invalid_request_error"),
    "401": UpstreamCase(401, 502, "upstream_error"),
    "403": UpstreamCase(403, 502, "upstream_error"),
    "404": UpstreamCase(404, 404, "invalid_request_error"),
    "413": UpstreamCase(413, 413, "invalid_request_error"),
    "422": UpstreamCase(422, 422, "invalid_request_error"),
    "429": UpstreamCase(429, 429, "rate_limit_error"),
    "500": UpstreamCase(500, 502, "upstream_error"),
    "503": UpstreamCase(503, 502, "upstream_error"),
}
UPSTREAM_MESSAGE = "upstream says no"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(MODELS))
@pytest.mark.parametrize("case", list(UPSTREAM_CASES.values()), ids=list(UPSTREAM_CASES))
async def test_an_upstream_error_maps_to_the_design_table_without_leaking_the_key(
    *,
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    case: UpstreamCase,
    provider: str,
    stream: bool,
) -> None:
    # Upstreams echo the key they were sent in some messages (invalid_api_key): the gateway must not.
    message = f"{UPSTREAM_MESSAGE} (Incorrect API key provided: {SECRETS[provider]})"
    error_body = wire.error_body(fakes[provider].kind, case.upstream_status, message)
    fakes[provider].script(Script(status=case.upstream_status, error_body=error_body))

    answer = await post(session, gw, json_body=chat(provider, stream=stream))

    assert answer.status == case.status
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.error["type"] == case.type
    assert UPSTREAM_MESSAGE in answer.error["message"]
    assert_no_secret_leaked(answer, caplog)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(MODELS))
async def test_an_upstream_429_keeps_its_retry_after(
    *,
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    stream: bool,
) -> None:
    fakes[provider].script(Script(status=429, headers={"Retry-After": "7"}))

    answer = await post(session, gw, json_body=chat(provider, stream=stream))

    assert answer.status == 429
    assert answer.error["type"] == "rate_limit_error"
    assert answer.headers.get("Retry-After") == "7"
    assert_no_secret_leaked(answer, caplog)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_that_refuses_connections_is_a_502(
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    settings = settings_for(fakes)
    closed = replace(settings.providers["local"], base_url=f"http://127.0.0.1:{free_port()}/v1")
    settings = replace(settings, providers={**settings.providers, "local": closed})

    async with running_gateway(settings) as gw:
        answer = await post(session, gw, json_body=chat(stream=stream))

    assert answer.status == 502
    assert answer.error["type"] == "upstream_error"
    assert_no_secret_leaked(answer, caplog)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(MODELS))
async def test_an_upstream_answer_that_is_not_json_is_a_502(
    *,
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    stream: bool,
) -> None:
    fakes[provider].script(Script(malformed=True))

    answer = await post(session, gw, json_body=chat(provider, stream=stream))

    assert answer.status == 502
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.error["type"] == "upstream_error"
    assert_no_secret_leaked(answer, caplog)


MIDSTREAM_FAILURES = {
    "error event": Script(fail_after_chunks=1),
    "connection reset": Script(reset_after_chunks=1),
}


@pytest.mark.parametrize("provider", list(MODELS))
@pytest.mark.parametrize("script", list(MIDSTREAM_FAILURES.values()), ids=list(MIDSTREAM_FAILURES))
async def test_a_failure_after_the_first_chunk_is_one_error_event_then_done(
    *,
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    script: Script,
    provider: str,
) -> None:
    fakes[provider].script(replace(script))

    answer = await post(
        session, gw, json_body=chat(provider, stream=True, stream_options={"include_usage": True})
    )

    payloads = sse_payloads(answer)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(payload) for payload in payloads[:-1]]
    first, *rest = events
    assert first["choices"][0]["delta"]["content"] == wire.content_token(0)
    assert len(rest) == 1
    assert list(rest[0]) == ["error"]
    assert rest[0]["error"]["type"] == "upstream_error"
    assert set(rest[0]["error"]) == {"message", "type", "param", "code"}
    assert_no_secret_leaked(answer, caplog)


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_mid_stream_error_that_echoes_the_key_does_not_leak_it(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    stream_error = {"code": 401, "message": f"{UPSTREAM_MESSAGE}: key {SECRETS[provider]} revoked"}
    fakes[provider].script(Script(fail_after_chunks=1, stream_error=stream_error))

    answer = await post(session, gw, json_body=chat(provider, stream=True))

    payloads = sse_payloads(answer)
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert UPSTREAM_MESSAGE in error["message"]
    assert_no_secret_leaked(answer, caplog)


async def test_openrouter_error_chunk_mid_stream_becomes_the_error_event(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream_error = {"code": 503, "message": "Provider returned error: overloaded"}
    fakes["openrouter"].script(Script(fail_after_chunks=2, stream_error=stream_error))

    answer = await post(session, gw, json_body=chat("openrouter", stream=True))

    payloads = sse_payloads(answer)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(payload) for payload in payloads[:-1]]
    assert [e["choices"][0]["delta"]["content"] for e in events[:2]] == [
        wire.content_token(i) for i in range(2)
    ]
    assert len(events) == 3
    assert list(events[2]) == ["error"]
    assert events[2]["error"]["type"] == "upstream_error"
    assert "overloaded" in events[2]["error"]["message"]
    assert_no_secret_leaked(answer, caplog)


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_long_upstream_message_cut_to_length_never_keeps_part_of_the_key(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    # Upstream messages may be cut to a few hundred or thousand characters: put a key across each such cut.
    secret = SECRETS[provider]
    message = UPSTREAM_MESSAGE
    for limit in (200, 256, 500, 512, 1000, 1024, 2000, 2048, 4000, 4096):
        # The key ends three characters past the cut, so a cut before redaction keeps most of it.
        message += " " + "x" * max(0, limit - len(message) - len(secret) + 1) + " " + secret
    error_body = wire.error_body(fakes[provider].kind, 401, message)
    fakes[provider].script(Script(status=401, error_body=error_body))

    answer = await post(session, gw, json_body=chat(provider))

    assert answer.status == 502
    assert UPSTREAM_MESSAGE in answer.error["message"]
    for prefix in (secret[:cut] for cut in range(len(secret) // 2, len(secret))):
        assert prefix not in answer.text
    assert_no_secret_leaked(answer, caplog)
