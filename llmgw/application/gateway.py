"""The gateway's use cases; both fronts call these and nothing else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from llmgw.application.admission import Admission
from llmgw.application.circuits import Circuits, CircuitView
from llmgw.application.recording import GenerationRecorder
from llmgw.application.routing import Route, Router
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import (
    ChatCompletion,
    ChatRequest,
    Embeddings,
    EmbeddingsRequest,
    JSONObject,
)
from llmgw.domain.errors import GatewayError, InvalidRequest, NotFound, ShuttingDown
from llmgw.domain.generation import (
    GenerationKind,
    GenerationRecord,
    GenerationStatus,
    new_generation_id,
)
from llmgw.domain.usage import Usage, price

log = logging.getLogger(__name__)
_STREAM_ENDED = "The gateway shut down before the stream ended; retry on another replica."


@dataclass(slots=True)
class RequestContext:
    """Per-request facts the fronts know: the request id, when the request arrived."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class ProviderState:
    name: str
    has_credentials: bool


@dataclass(frozen=True, slots=True)
class Readiness:
    """What `/readyz` reports: ready when the store answers and the gateway is not draining; providers
    without keys are not an error, nor are open circuits (`circuits` lists the deployments whose circuit
    is open or half-open; closed ones are not listed)."""

    ready: bool
    store_up: bool
    pending_records: int
    dropped_records: int
    providers: Sequence[ProviderState]
    draining: bool = False
    circuits: Sequence[CircuitView] = ()


class _Running:
    """A stream between its upstream's chunks, which `Gateway.end_streams` can end: by cancelling the task
    iterating it while it waits for the upstream, or, while the chunks are with the client, at its next
    step."""

    __slots__ = ("at_client", "ended", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.at_client = False
        self.ended = False

    def end(self) -> None:
        self.ended = True
        if not self.at_client:
            self.task.cancel()


class ChatStream:
    """A streamed answer: lists of the chunks that arrived together (see `Provider.stream`); its generation
    id is known before the first arrives."""

    def __init__(self, generation_id: str, chunks: AsyncGenerator[list[JSONObject], None]) -> None:
        self.generation_id = generation_id
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[list[JSONObject]]:
        return self._chunks

    async def __anext__(self) -> list[JSONObject]:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()


class _Tracker:
    """Collects what a generation record needs while a request runs."""

    __slots__ = (
        "ctx",
        "deltas",
        "finish_reason",
        "first_token",
        "gen_id",
        "route",
        "streamed",
        "upstream_id",
        "usage",
        "user",
    )

    def __init__(self, gen_id: str, route: Route, ctx: RequestContext, *, streamed: bool, user: str) -> None:
        self.gen_id = gen_id
        self.route = route
        self.ctx = ctx
        self.streamed = streamed
        self.user = user
        self.first_token: float | None = None
        self.usage: Usage | None = None
        self.finish_reason = ""
        self.upstream_id = ""
        # Stream deltas that carried generated text: the tokens seen so far when no usage arrives.
        self.deltas = 0

    def seen_usage(self) -> Usage:
        """No usage arrived (the stream was cut short): count each text-carrying delta as one token,
        which is how OpenAI-compatible servers stream; prompt tokens stay unknown (0)."""
        return Usage(completion_tokens=self.deltas, total_tokens=self.deltas)

    def record(self, kind: GenerationKind, outcome: BaseException | None) -> GenerationRecord:
        now = time.perf_counter()
        usage = self.usage or self.seen_usage()
        status, code, message = _outcome(outcome)
        model, deployment = self.route.model, self.route.deployment
        return GenerationRecord(
            id=self.gen_id,
            request_id=self.ctx.request_id,
            kind=kind,
            model=model.id,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            created_at=time.time() - (now - self.ctx.started),
            streamed=self.streamed,
            status=status,
            upstream_id=self.upstream_id,
            finish_reason=self.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=price(usage, model.pricing) if self.usage is not None or self.deltas else None,
            latency_ms=(now - self.ctx.started) * 1000.0,
            time_to_first_token_ms=(
                (self.first_token - self.ctx.started) * 1000.0 if self.first_token is not None else None
            ),
            error_code=code,
            error_message=message,
            user=self.user,
        )


def _tag(exc: BaseException, generation_id: str) -> BaseException:
    if isinstance(exc, GatewayError):
        exc.generation_id = generation_id
    return exc


def _outcome(exc: BaseException | None) -> tuple[GenerationStatus, str, str]:
    if exc is None:
        return GenerationStatus.COMPLETED, "", ""
    if isinstance(exc, ShuttingDown):
        return GenerationStatus.CANCELLED, exc.code or "", exc.message
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return GenerationStatus.CANCELLED, "cancelled", "The client went away."
    if isinstance(exc, GatewayError):
        return GenerationStatus.ERROR, exc.code or "", exc.message
    return GenerationStatus.ERROR, "internal_error", "internal error"


class Gateway:
    """Models, chat, embeddings and generation lookups, independent of any wire format.

    After `drain()` readiness fails and new chat and embeddings requests are refused (`ShuttingDown`);
    requests in flight go on, and `end_streams()` ends the streams still running.

    Chat (unary and streamed) and embeddings hold a slot of `max_in_flight` (the process's bound) and of
    their provider's bound in `provider_max_in_flight` (0 or absent: none) until they end; without a free
    slot they raise `Overloaded` at once. Model listing, generation lookups and readiness never count.

    Each of them reports how it ended to `circuits` (when given) for the deployment it went to; a stream
    once, at its end.
    """

    def __init__(
        self,
        router: Router,
        recorder: GenerationRecorder,
        *,
        max_in_flight: int | None = None,
        provider_max_in_flight: Mapping[str, int] | None = None,
        circuits: Circuits | None = None,
    ) -> None:
        self._router = router
        self._recorder = recorder
        self._circuits = circuits
        self._admission = Admission(max_in_flight, provider_max_in_flight)
        self._draining = False
        self._streams: set[_Running] = set()

    def list_models(self) -> Sequence[ModelSpec]:
        return self._router.models

    def get_model(self, model_id: str) -> ModelSpec:
        return self._router.model(model_id)

    async def readiness(self) -> Readiness:
        store_up = await self._recorder.ping()
        return Readiness(
            ready=store_up and not self._draining,
            draining=self._draining,
            store_up=store_up,
            pending_records=self._recorder.pending,
            dropped_records=self._recorder.dropped,
            providers=[ProviderState(p.name, p.has_credentials) for p in self._router.providers.values()],
            circuits=self._circuits.views() if self._circuits is not None else (),
        )

    @property
    def recorder(self) -> GenerationRecorder:
        return self._recorder

    def drain(self) -> None:
        """Take no more work: readiness fails from now on and new chat and embeddings requests are
        refused with `ShuttingDown`; requests in flight go on."""
        self._draining = True

    @property
    def in_flight(self) -> int:
        """Chat and embeddings requests running now, streams included."""
        return self._admission.process.in_flight

    def end_streams(self) -> int:
        """End every stream still running with `ShuttingDown`, which the fronts send as a mid-stream error
        (or as the answer, before the first chunk) and the record says `cancelled`; how many there were."""
        streams, self._streams = self._streams, set()
        for stream in streams:
            stream.end()
        return len(streams)

    @contextmanager
    def _admitted(self, route: Route) -> Iterator[None]:
        """Hold the request's slots (process and provider) for the block, or refuse it at once
        (`ShuttingDown`, `Overloaded`) before anything is minted or sent."""
        try:
            if self._draining:
                raise ShuttingDown("The gateway is shutting down; retry on another replica.")
            self._admission.enter(route.deployment.provider)
        except BaseException as exc:
            self._report(route, exc)  # refused before reaching the upstream: frees a claimed probe slot
            raise
        try:
            yield
        finally:
            self._admission.leave(route.deployment.provider)

    def _report(self, route: Route, outcome: BaseException | None) -> None:
        if self._circuits is not None:
            self._circuits.record(route.deployment, outcome, probe=route.probe)

    async def create_chat_completion(self, request: ChatRequest, ctx: RequestContext) -> ChatCompletion:
        route = self._route_chat(request)
        with self._admitted(route):
            tracker = _Tracker(new_generation_id(), route, ctx, streamed=False, user=request.user)
            with self._recorded(tracker, GenerationKind.CHAT):
                result = await route.provider.complete(route.target, request)
                tracker.first_token = time.perf_counter()
                tracker.usage = result.usage
                tracker.finish_reason = result.finish_reason
                tracker.upstream_id = result.upstream_id
                result.body["id"] = tracker.gen_id
                result.body["model"] = route.model.id
                return result

    def stream_chat_completion(self, request: ChatRequest, ctx: RequestContext) -> ChatStream:
        """Start a stream; routing errors raise here, `Overloaded` and upstream errors from the first
        `__anext__`. The stream holds its slots from then until it ends, is closed or is cancelled."""
        route = self._route_chat(request)
        tracker = _Tracker(new_generation_id(), route, ctx, streamed=True, user=request.user)
        return ChatStream(tracker.gen_id, self._stream(route, request, tracker))

    async def _stream(
        self, route: Route, request: ChatRequest, tracker: _Tracker
    ) -> AsyncGenerator[list[JSONObject], None]:
        # The slot is taken here, in the generator's body, so that its exit always gives it back: a stream
        # never started holds none.
        with self._admitted(route):
            include_usage = request.include_usage
            gen_id, model_id = tracker.gen_id, route.model.id
            upstream = route.provider.stream(route.target, request)
            task = asyncio.current_task()
            assert task is not None, "a stream is iterated inside a task"
            running = _Running(task)
            self._streams.add(running)
            with self._recorded(tracker, GenerationKind.CHAT):
                try:
                    async for chunks in upstream:
                        if tracker.first_token is None and chunks:
                            tracker.first_token = time.perf_counter()
                            tracker.upstream_id = str(chunks[0].get("id") or "")
                        forwarded = [chunk for chunk in chunks if _forward(chunk, tracker, include_usage)]
                        for chunk in forwarded:
                            chunk["id"] = gen_id
                            chunk["model"] = model_id
                        if forwarded:
                            running.at_client = True
                            yield forwarded
                            running.at_client = False
                            if running.ended:
                                raise ShuttingDown(_STREAM_ENDED)
                except asyncio.CancelledError:
                    if not running.ended:
                        raise
                    running.task.uncancel()  # our cancellation, spent: the task goes on to end the stream
                    raise ShuttingDown(_STREAM_ENDED) from None
                finally:
                    self._streams.discard(running)
                    await _aclose(upstream)

    async def create_embeddings(self, request: EmbeddingsRequest, ctx: RequestContext) -> Embeddings:
        route = self._router.route(request.model, Capability.EMBEDDINGS)
        with self._admitted(route):
            tracker = _Tracker(new_generation_id(), route, ctx, streamed=False, user=request.user)
            with self._recorded(tracker, GenerationKind.EMBEDDINGS):
                result = await route.provider.embed(route.target, request)
                tracker.first_token = time.perf_counter()
                tracker.usage = result.usage
                result.body["id"] = tracker.gen_id
                result.body["model"] = route.model.id
                return result

    @contextmanager
    def _recorded(self, tracker: _Tracker, kind: GenerationKind) -> Iterator[None]:
        """Record how the block ended, whatever ends it: success, error, or a client that left."""
        outcome: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            outcome = _tag(exc, tracker.gen_id)
            raise
        finally:
            self._finish(tracker, kind, outcome)

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        record = await self._recorder.get(generation_id) if generation_id else None
        if record is None:
            raise NotFound(
                f"Generation '{generation_id}' not found.", code="generation_not_found", param="id"
            )
        return record

    def _route_chat(self, request: ChatRequest) -> Route:
        route = self._router.route(request.model, Capability.CHAT)
        body: Mapping[str, object] = request.body
        if body.get("tools") and not route.model.can(Capability.TOOLS):
            raise InvalidRequest(
                f"The model '{route.model.id}' does not support tools.",
                code="model_not_supported",
                param="tools",
            )
        if not route.model.can(Capability.VISION) and _has_images(request):
            raise InvalidRequest(
                f"The model '{route.model.id}' does not support image input.",
                code="model_not_supported",
                param="messages",
            )
        return route

    def _finish(self, tracker: _Tracker, kind: GenerationKind, outcome: BaseException | None) -> None:
        self._report(tracker.route, outcome)
        record = tracker.record(kind, outcome)
        self._recorder.record(record)
        log.info(
            "%s %s model=%s status=%s tokens=%d/%d latency_ms=%.1f%s",
            kind.value,
            record.id,
            record.model,
            record.status.value,
            record.prompt_tokens,
            record.completion_tokens,
            record.latency_ms or 0.0,
            f" error={record.error_code}" if record.error_code else "",
        )


def _forward(chunk: JSONObject, tracker: _Tracker, include_usage: bool) -> bool:
    """Note the chunk's usage and finish reason, and count the deltas that carry generated tokens
    (`reasoning_content`: DashScope, DeepSeek; `reasoning`: OpenRouter, vLLM, Ollama; `refusal`: OpenAI);
    False for the usage chunk the client did not ask for. Runs for every chunk of every stream."""
    usage = chunk.get("usage") if include_usage else chunk.pop("usage", None)
    if usage:
        tracker.usage = Usage.from_openai(usage)
    choices = chunk.get("choices")
    if choices:
        for choice in choices:
            reason = choice.get("finish_reason")
            if reason:
                tracker.finish_reason = reason
            delta = choice.get("delta")
            if delta and (
                delta.get("content")
                or delta.get("reasoning_content")
                or delta.get("reasoning")
                or delta.get("tool_calls")
                or delta.get("refusal")
            ):
                tracker.deltas += 1
        return True
    return include_usage or not usage


def _has_images(request: ChatRequest) -> bool:
    messages = request.body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    return True
    return False


async def _aclose(iterator: AsyncIterator[list[JSONObject]]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
