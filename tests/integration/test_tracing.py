"""OpenTelemetry traces (issue 16, point 2): a server span per request on both fronts continuing the caller's
`traceparent`, a client span per upstream attempt with the GenAI semantic conventions, content only when
asked, and the trace id on the generation record and in the log line. Spans go to the SDK's in-memory
exporter, and once through OTLP/HTTP to a collector stub."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmgw.application.retries import RetryPolicy
from llmgw.infrastructure.config.settings import LogFormat, TracingSettings
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.tracing import Tracing, enabled, provider_with, traces_url
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import Running, running_gateway, settings_for
from tests.log_capture import capture, logged

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
MODEL = "dashscope/qwen-turbo"
NO_CONTENT = TracingSettings()


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "secret prompt"}], **extra}


class Traced:
    def __init__(self, gw: Running, exporter: InMemorySpanExporter) -> None:
        self.gw = gw
        self.exporter = exporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_kind(self, kind: SpanKind) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.kind is kind]


async def traced_gateway(
    fakes: Mapping[str, FakeUpstream], settings: TracingSettings = NO_CONTENT, **overrides: Any
) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(provider_with(settings, SimpleSpanProcessor(exporter)), settings)
    async with running_gateway(replace(settings_for(fakes), **overrides), tracing=tracing) as gw:
        yield Traced(gw, exporter)


@pytest.fixture
async def traced(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Traced]:
    async for running in traced_gateway(fakes):
        yield running


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_rest_chat_continues_the_callers_trace_with_genai_spans(
    traced: Traced, log_buffer: io.StringIO
) -> None:
    capture(log_buffer, LogFormat.JSON)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{traced.gw.rest_url}/v1/chat/completions",
            json=chat(temperature=0.2, max_tokens=64),
            headers={"traceparent": TRACEPARENT},
        ) as response,
    ):
        assert response.status == 200
        body = await response.json()

    (server,) = traced.by_kind(SpanKind.SERVER)
    (client,) = traced.by_kind(SpanKind.CLIENT)
    assert server.context is not None
    assert client.context is not None
    assert client.parent is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_SPAN
    assert client.parent.span_id == server.context.span_id
    assert server.name == "POST /v1/chat/completions"
    record = await traced.gw.gateway.get_generation(body["id"])
    assert (
        attributes(server).items()
        >= {
            "http.request.method": "POST",
            "http.route": "/v1/chat/completions",
            "http.response.status_code": 200,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": MODEL,
            "llmgw.generation_id": body["id"],
        }.items()
    )
    assert client.name == "chat qwen-turbo"
    usage = body["usage"]
    assert (
        attributes(client).items()
        >= {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "dashscope",
            "gen_ai.request.model": "qwen-turbo",
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 64,
            "gen_ai.response.id": record.upstream_id,
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.usage.input_tokens": usage["prompt_tokens"],
            "gen_ai.usage.output_tokens": usage["completion_tokens"],
        }.items()
    )
    assert attributes(client)["gen_ai.response.model"]
    # The attempt's span lies within the request's.
    assert server.start_time is not None
    assert server.end_time is not None
    assert client.start_time is not None
    assert client.end_time is not None
    assert server.start_time <= client.start_time <= client.end_time <= server.end_time
    # No content unless asked.
    assert not any(name.endswith("messages") for span in traced.spans() for name in attributes(span))
    assert "secret prompt" not in json.dumps([attributes(s) for s in traced.spans()], default=str)
    # The trace id is the record's and the log line's.
    assert record.trace_id == TRACE_ID
    (line,) = [json.loads(x) for x in logged(log_buffer).splitlines() if "generation_id" in x]
    assert line["trace_id"] == TRACE_ID


async def test_a_grpc_stream_continues_the_trace_from_its_metadata(traced: Traced) -> None:
    request = v1.CreateChatCompletionRequest(
        model=MODEL, messages=[v1.ChatMessage(role="user", content="hi")]
    )
    chunks = [
        chunk
        async for chunk in traced.gw.grpc.create_chat_completion_stream(
            request, metadata={"traceparent": TRACEPARENT}
        )
    ]
    assert chunks
    (server,) = traced.by_kind(SpanKind.SERVER)
    (client,) = traced.by_kind(SpanKind.CLIENT)
    assert server.context is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.name == "llmgateway.v1.LLMGatewayService/CreateChatCompletionStream"
    assert attributes(server).items() >= {"rpc.system": "grpc", "rpc.grpc.status_code": 0}.items()
    assert attributes(client)["gen_ai.request.stream"] is True
    assert attributes(client)["gen_ai.response.time_to_first_chunk"] > 0
    record = await traced.gw.gateway.get_generation(chunks[0].id)
    assert record.trace_id == TRACE_ID


async def test_a_request_without_traceparent_starts_a_trace_of_its_own(traced: Traced) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{traced.gw.rest_url}/v1/embeddings", json={"model": "local/embed", "input": "x"}
        ) as response,
    ):
        body = await response.json()
    (server,) = traced.by_kind(SpanKind.SERVER)
    (client,) = traced.by_kind(SpanKind.CLIENT)
    assert server.parent is None
    assert attributes(client)["gen_ai.operation.name"] == "embeddings"
    assert attributes(client)["gen_ai.request.encoding_formats"] == ("float",)
    assert server.context is not None
    record = await traced.gw.gateway.get_generation(body["id"])
    assert record.trace_id == format(server.context.trace_id, "032x")


async def test_each_attempt_gets_a_client_span_and_a_failed_one_says_why(
    fakes: dict[str, FakeUpstream],
) -> None:
    retry = RetryPolicy(max_attempts=2, backoff=0.0, backoff_max=0.0)
    async for traced in traced_gateway(fakes, retry=retry):
        fakes["dashscope"].script(Script(status=503, error_body={"error": {"message": "busy"}}))
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{traced.gw.rest_url}/v1/chat/completions", json=chat()) as response,
        ):
            assert response.status == 200
        first, second = sorted(traced.by_kind(SpanKind.CLIENT), key=lambda span: span.start_time or 0)
        assert first.status.status_code is StatusCode.ERROR
        assert attributes(first)["error.type"] == "upstream_unavailable"
        assert "gen_ai.usage.output_tokens" not in attributes(first)
        assert second.status.status_code is StatusCode.UNSET
        assert attributes(second)["gen_ai.usage.output_tokens"] > 0
        assert (first.end_time or 0) <= (second.start_time or 0)
        (server,) = traced.by_kind(SpanKind.SERVER)
        assert attributes(server)["llmgw.attempts"] == 2


async def test_refused_and_failed_requests_mark_their_server_span(
    traced: Traced, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["dashscope"].script(Script(status=503, error_body={"error": {"message": "busy"}}))
    statuses = []
    async with aiohttp.ClientSession() as session:
        for body in ({"model": "nope/x"}, chat(model="no/such"), chat()):
            async with session.post(f"{traced.gw.rest_url}/v1/chat/completions", json=body) as response:
                statuses.append(response.status)
    assert statuses == [400, 404, 502]
    bad, unknown, failed = sorted(traced.by_kind(SpanKind.SERVER), key=lambda span: span.start_time or 0)
    assert attributes(bad)["http.response.status_code"] == 400
    assert "error.type" not in attributes(bad)  # refused by the front, before the gateway
    assert attributes(unknown)["http.response.status_code"] == 404
    assert attributes(unknown)["error.type"] == "model_not_found"
    assert unknown.status.status_code is StatusCode.UNSET  # a 4xx is the client's
    assert attributes(failed)["error.type"] == "upstream_unavailable"
    assert failed.status.status_code is StatusCode.ERROR
    (attempt,) = traced.by_kind(SpanKind.CLIENT)
    assert attempt.status.status_code is StatusCode.ERROR


async def test_content_is_recorded_only_when_asked(fakes: dict[str, FakeUpstream]) -> None:
    async for traced in traced_gateway(fakes, TracingSettings(capture_content=True)):
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{traced.gw.rest_url}/v1/chat/completions", json=chat()) as response,
        ):
            body = await response.json()
        (client,) = traced.by_kind(SpanKind.CLIENT)
        sent = json.loads(attributes(client)["gen_ai.input.messages"])
        assert sent == [{"role": "user", "parts": [{"type": "text", "content": "secret prompt"}]}]
        (answer,) = json.loads(attributes(client)["gen_ai.output.messages"])
        assert answer["role"] == "assistant"
        assert answer["parts"] == [{"type": "text", "content": body["choices"][0]["message"]["content"]}]


async def test_without_tracing_there_are_no_spans_and_no_trace_ids(gw: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.rest_url}/v1/chat/completions", json=chat(), headers={"traceparent": TRACEPARENT}
        ) as r,
    ):
        body = await r.json()
    assert (await gw.gateway.get_generation(body["id"])).trace_id == ""
    assert gw.gateway.observers
    assert not any(isinstance(o, Tracing) for o in gw.gateway.observers)


def test_tracing_is_on_with_an_endpoint_or_the_standard_variables() -> None:
    assert not enabled(TracingSettings(), {})
    assert enabled(TracingSettings(otlp_endpoint="http://c:4318"), {})
    assert enabled(TracingSettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert enabled(TracingSettings(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not enabled(TracingSettings(otlp_endpoint="http://c:4318"), {"OTEL_SDK_DISABLED": "true"})
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/custom/traces") == "http://c:4318/custom/traces"


async def test_spans_reach_an_otlp_collector_named_by_the_settings(fakes: dict[str, FakeUpstream]) -> None:
    received: list[bytes] = []
    arrived = asyncio.Event()

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.read())
        arrived.set()
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = replace(
            settings_for(fakes), tracing=TracingSettings(otlp_endpoint=f"http://127.0.0.1:{port}")
        )
        async with (
            running_gateway(settings) as gw,
            aiohttp.ClientSession() as session,
            session.post(f"{gw.rest_url}/v1/chat/completions", json=chat()) as response,
        ):
            assert response.status == 200
        # Leaving the gateway flushed the batch to the collector.
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await runner.cleanup()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    exported = ExportTraceServiceRequest()
    exported.ParseFromString(b"".join(received))
    names = {span.name for rs in exported.resource_spans for ss in rs.scope_spans for span in ss.spans}
    assert names == {"POST /v1/chat/completions", "chat qwen-turbo"}
    (resource,) = [rs.resource for rs in exported.resource_spans]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "llmgw"
