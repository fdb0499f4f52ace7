"""OpenTelemetry traces: a server span per request on both fronts, a client span per upstream attempt.

Off unless `tracing.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable names a collector (and `OTEL_SDK_DISABLED` is not true);
off, nothing here runs on the request path. On, each front opens the request's server span (`server_span`),
continuing the caller's W3C `traceparent` (REST headers, gRPC metadata), and makes its trace id the
request's (`current_trace_id`: the generation record and the log line carry it). When the request ends,
`Tracing.finished` gives the server span the request's GenAI attributes and adds one client span per
upstream attempt, placed at the times the attempt ran, with the GenAI semantic conventions
(`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.*`, `gen_ai.response.*`,
`gen_ai.usage.*`, `error.type`). The attempts' spans are made when the request ends rather than while
each runs: the same spans, with no work on the path of a stream's chunks.

Message content (`gen_ai.input.messages`, `gen_ai.output.messages` of unary answers) is recorded only
with `tracing.capture_content = true`: prompts and answers may hold personal data.

Spans leave through a `BatchSpanProcessor` (its own thread, OTLP over HTTP), so exporting never waits on
the event loop; a collector that is down loses spans, never requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmgw.application.tracking import RequestContext, Tracker
from llmgw.domain.errors import GatewayError
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.config.settings import TracingSettings
from llmgw.infrastructure.request_ids import current_trace_id

log = logging.getLogger(__name__)


_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROPAGATOR = TraceContextTextMapPropagator()
# Seconds the last spans get to leave at shutdown.
_SHUTDOWN_GRACE = 5.0
# Request parameters named by the GenAI conventions, as the OpenAI body spells them.
_REQUEST_PARAMETERS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
    ("n", "gen_ai.request.choice.count"),
)


_DEFAULTS = TracingSettings()


def enabled(settings: TracingSettings, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the settings (or the standard variables) ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(settings.otlp_endpoint or any(environ.get(name) for name in _ENDPOINT_VARIABLES))


def traces_url(endpoint: str) -> str:
    """`tracing.otlp_endpoint` as the OTLP/HTTP traces URL: a bare collector address gets `/v1/traces`."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path="/v1/traces"))
    return endpoint


def exporting_provider(settings: TracingSettings) -> TracerProvider:
    """A tracer provider exporting over OTLP/HTTP in batches to the configured collector."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = traces_url(settings.otlp_endpoint) if settings.otlp_endpoint else None
    return provider_with(settings, BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))


def provider_with(settings: TracingSettings, processor: SpanProcessor) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(processor)
    return provider


class Tracing:
    """The gateway's tracer; an `Observer` of requests, and the fronts' server spans."""

    def __init__(self, provider: TracerProvider, settings: TracingSettings = _DEFAULTS) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("llmgw")
        self._capture = settings.capture_content

    @contextlib.contextmanager
    def server_span(
        self, name: str, carrier: Mapping[str, Any], attributes: dict[str, Any]
    ) -> Iterator[Span]:
        """The request's server span, current for the block, continuing the trace `carrier`'s
        `traceparent` names; its trace id is `current_trace_id` meanwhile."""
        parent = _PROPAGATOR.extract(carrier)
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            token = current_trace_id.set(format(span.get_span_context().trace_id, "032x"))
            try:
                yield span
            finally:
                current_trace_id.reset(token)

    def finished(self, record: GenerationRecord, tracker: Tracker) -> None:
        server = trace.get_current_span()
        operation = "chat" if record.kind is GenerationKind.CHAT else "embeddings"
        if server.is_recording():
            server.set_attributes(_request_attributes(record, operation))
        if not record.attempts:
            return
        parent = trace.set_span_in_context(server)
        now_ns, now = time.time_ns(), time.perf_counter()
        body = tracker.body or {}
        common = {"gen_ai.operation.name": operation, **_parameters(body, record)}
        if self._capture and record.kind is GenerationKind.CHAT:
            common["gen_ai.input.messages"] = _input_messages(body)
        last = len(record.attempts) - 1
        for index, attempt in enumerate(record.attempts):
            started = now_ns - int((now - tracker.attempt_starts[index]) * 1e9)
            attributes: dict[str, Any] = {
                **common,
                "gen_ai.provider.name": attempt.provider,
                "gen_ai.request.model": attempt.upstream_model,
                "llmgw.model": attempt.model,
            }
            answered = index == last and record.status is not GenerationStatus.ERROR
            if answered:
                attributes.update(_response_attributes(record, tracker))
                if self._capture and tracker.answer is not None:
                    attributes["gen_ai.output.messages"] = _output_messages(tracker.answer)
            if attempt.error_code:
                attributes["error.type"] = attempt.error_code
            span = self._tracer.start_span(
                f"{operation} {attempt.upstream_model}",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=started,
            )
            if attempt.outcome == GenerationStatus.ERROR:
                span.set_status(Status(StatusCode.ERROR, attempt.error_code or None))
            span.end(end_time=started + int(attempt.duration_ms * 1e6))

    def refused(self, kind: GenerationKind, model: str, error: GatewayError, ctx: RequestContext) -> None:
        server = trace.get_current_span()
        if server.is_recording():
            server.set_attributes(
                {
                    "gen_ai.operation.name": "chat" if kind is GenerationKind.CHAT else "embeddings",
                    "gen_ai.request.model": model,
                    "error.type": error.code or type(error).__name__,
                }
            )

    async def close(self) -> None:
        """Export what is left (for at most `_SHUTDOWN_GRACE` seconds, off the event loop) and stop."""
        provider = self.provider
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SHUTDOWN_GRACE + 1):
                await asyncio.to_thread(provider.force_flush, int(_SHUTDOWN_GRACE * 1000))
        await asyncio.to_thread(provider.shutdown)


def _request_attributes(record: GenerationRecord, operation: str) -> dict[str, Any]:
    """The server span's: what was asked, what answered, what it used and cost."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": record.model,
        "llmgw.generation_id": record.id,
        "llmgw.status": str(record.status),
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
        "llmgw.attempts": len(record.attempts),
    }
    if record.provider:
        attributes["gen_ai.provider.name"] = record.provider
    if record.cost_usd is not None:
        attributes["llmgw.cost_usd"] = record.cost_usd
    if record.key_id:
        attributes["llmgw.key_id"] = record.key_id
    if record.error_code:
        attributes["error.type"] = record.error_code
    return attributes


def _response_attributes(record: GenerationRecord, tracker: Tracker) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
    }
    if tracker.response_model:
        attributes["gen_ai.response.model"] = tracker.response_model
    if record.upstream_id:
        attributes["gen_ai.response.id"] = record.upstream_id
    if record.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = (record.finish_reason,)
    if record.cached_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = record.cached_tokens
    if record.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = record.reasoning_tokens
    if record.time_to_first_token_ms is not None and record.streamed:
        attributes["gen_ai.response.time_to_first_chunk"] = record.time_to_first_token_ms / 1000.0
    return attributes


def _parameters(body: Mapping[str, Any], record: GenerationRecord) -> dict[str, Any]:
    """The request's parameters the conventions name, where the body sets them with a usable value."""
    attributes: dict[str, Any] = {}
    for field, name in _REQUEST_PARAMETERS:
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes["gen_ai.request.max_tokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        attributes["gen_ai.request.stop_sequences"] = tuple(stop)
    if record.kind is GenerationKind.CHAT:
        attributes["gen_ai.request.stream"] = record.streamed
    else:
        encoding = body.get("encoding_format")
        attributes["gen_ai.request.encoding_formats"] = (encoding if isinstance(encoding, str) else "float",)
    return attributes


def _input_messages(body: Mapping[str, Any]) -> str:
    """The chat messages as the conventions shape them: role and parts, as a JSON string."""
    messages = body.get("messages")
    shaped = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts: list[Any] = [{"type": "text", "content": content}]
        elif isinstance(content, list):
            parts = [
                {"type": "text", "content": part.get("text", "")}
                if isinstance(part, dict) and part.get("type") == "text"
                else {"type": str(part.get("type", "")) if isinstance(part, dict) else "unknown"}
                for part in content
            ]
        else:
            parts = []
        shaped.append({"role": message.get("role", ""), "parts": parts})
    return orjson.dumps(shaped).decode()


def _output_messages(answer: Mapping[str, Any]) -> str:
    """A unary chat answer's choices as the conventions shape output messages, as a JSON string."""
    choices = answer.get("choices")
    shaped = []
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        parts: list[Any] = []
        if isinstance(message.get("content"), str):
            parts.append({"type": "text", "content": message["content"]})
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments"),
                    }
                )
        shaped.append(
            {
                "role": message.get("role", "assistant"),
                "parts": parts,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return orjson.dumps(shaped).decode()


def tracing_of(observers: Iterable[object]) -> Tracing | None:
    """The gateway's tracer among its observers, if tracing is on."""
    return next((o for o in observers if isinstance(o, Tracing)), None)
