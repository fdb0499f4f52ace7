"""The gateway's use cases; both fronts call these and nothing else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from llmgw.application.admin import Admin
from llmgw.application.admission import Admission
from llmgw.application.auth import Authenticator, hidden_generation, may_read, require_model
from llmgw.application.circuits import Circuits, CircuitView
from llmgw.application.failover import Failover
from llmgw.application.limits import Limiter
from llmgw.application.readiness import ProviderState, Readiness
from llmgw.application.recording import GenerationRecorder
from llmgw.application.retries import RetryBudgets, RetryPolicy
from llmgw.application.routing import Route, Router
from llmgw.application.telemetry import Observer
from llmgw.application.tracking import RequestContext, Tracker, forward
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import (
    ChatCompletion,
    ChatRequest,
    Embeddings,
    EmbeddingsRequest,
    JSONObject,
    has_images,
)
from llmgw.domain.errors import GatewayError, InvalidRequest, ShuttingDown
from llmgw.domain.generation import (
    GenerationKind,
    GenerationRecord,
    new_generation_id,
)
from llmgw.domain.keys import ApiKey

__all__ = ["ChatStream", "Gateway", "ProviderState", "Readiness", "RequestContext"]
T = TypeVar("T")

log = logging.getLogger(__name__)
_STREAM_ENDED = "The gateway shut down before the stream ended; retry on another replica."


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


def _tag(exc: BaseException, tracker: Tracker) -> BaseException:
    """Tell the error which generation it ended and what was attempted, for the fronts to return."""
    if isinstance(exc, GatewayError):
        exc.generation_id = tracker.gen_id
        exc.attempts = tracker.ctx.attempts
        exc.provider = tracker.ctx.provider
        if not exc.limit_statuses and (admitted := tracker.ctx.limits) is not None:
            exc.limit_statuses = admitted.statuses
    return exc


class Gateway:
    """Models, chat, embeddings and generation lookups, independent of any wire format.

    After `drain()` readiness fails and new chat and embeddings requests are refused (`ShuttingDown`);
    requests in flight go on, and `end_streams()` ends the streams still running.

    Chat (unary and streamed) and embeddings hold a slot of `max_in_flight` (the process's bound) until
    they end, and each attempt one of its provider's bound in `provider_max_in_flight` (0 or absent: none);
    without a free process slot they raise `Overloaded` at once (a full provider is a failed attempt).
    Model listing, generation lookups and readiness never count.

    A request's attempts follow `failover` under its provider's `retry_policies`; each attempt reports
    how it ended to `circuits` (when given) for its deployment; a stream's last attempt once, at its end.
    """

    def __init__(
        self,
        router: Router,
        recorder: GenerationRecorder,
        *,
        max_in_flight: int | None = None,
        provider_max_in_flight: Mapping[str, int] | None = None,
        circuits: Circuits | None = None,
        retry_policies: Mapping[str, RetryPolicy] | None = None,
        auth: Authenticator | None = None,
        admin: Admin | None = None,
        limiter: Limiter | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.auth = auth
        self.admin = admin
        self.limiter = limiter
        self._settling: set[asyncio.Task[None]] = set()
        self._router = router
        self._recorder = recorder
        self._circuits = circuits
        self._admission = Admission(max_in_flight, provider_max_in_flight)
        self._budgets = RetryBudgets(retry_policies or {})
        self._draining = False
        self._streams: set[_Running] = set()
        self._slot = _Slot(self)
        self._observers = tuple(observers)

    def list_models(self, key: ApiKey | None = None) -> Sequence[ModelSpec]:
        """The catalog, or the part of it `key` may use."""
        models = self._router.models
        if key is None or not key.models:
            return models
        return [model for model in models if key.may_use(model.id)]

    def get_model(self, model_id: str, key: ApiKey | None = None) -> ModelSpec:
        model = self._router.model(model_id)
        require_model(key, model.id)
        return model

    async def readiness(self) -> Readiness:
        store_up = await self._recorder.ping()
        return Readiness(
            ready=store_up and not self._draining,
            draining=self._draining,
            store_up=store_up,
            pending_records=self._recorder.pending,
            dropped_records=self._recorder.dropped,
            providers=[ProviderState(p.name, p.has_credentials) for p in self._router.providers.values()],
            circuits=self.circuit_views(),
            limits_up=await self.limiter.store.ping() if self.limiter is not None else None,
        )

    def circuit_views(self) -> Sequence[CircuitView]:
        """The circuits open or half-open now, earliest opened first."""
        return self._circuits.views() if self._circuits is not None else ()

    @property
    def observers(self) -> tuple[Observer, ...]:
        return self._observers

    @property
    def recorder(self) -> GenerationRecorder:
        return self._recorder

    async def settled(self) -> None:
        """Until the limit reservations of the requests that ended are settled (tests, shutdown)."""
        while self._settling:
            await asyncio.gather(*self._settling)

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

    def _admitted(self) -> _Slot:
        """Hold the request's process slot for the block, or refuse it at once (`ShuttingDown`,
        `Overloaded`) before anything is minted or sent."""
        return self._slot

    def _failover(self, model: ModelSpec, capability: Capability, ctx: RequestContext) -> Failover:
        """The request's attempts, under one deadline: the requested model's provider's `timeout` from
        now, or the client's own deadline when that is sooner."""
        loop = asyncio.get_running_loop()
        policy = self._budgets.policy(model.deployments[0].provider)
        deadline = loop.time() + policy.timeout
        if ctx.deadline is not None and ctx.deadline < deadline:
            deadline = ctx.deadline
        key = ctx.key
        return Failover(
            self._router,
            self._budgets,
            model,
            capability,
            policy=policy,
            deadline=deadline,
            clock=loop.time,
            may_use=key.may_use if key is not None and key.models else None,
        )

    async def _attempts(
        self,
        failover: Failover,
        tracker: Tracker,
        call: Callable[[Route, float], Awaitable[T]],
        *,
        holds: bool = False,
    ) -> T:
        """`call` the routes `failover` gives until one answers; the last failure if none does. With
        `holds` (a stream), the answering attempt keeps its provider slot and is reported by the caller
        (`_ended`), and each attempt is given the request's deadline rather than an attempt's."""
        route = failover.first()
        while True:
            tracker.begin(route)
            provider = route.deployment.provider
            try:
                self._admission.enter_provider(provider)
                try:
                    result = await call(route, failover.deadline if holds else failover.attempt_deadline())
                except BaseException:
                    self._admission.leave_provider(provider)
                    raise
            except BaseException as exc:
                self._ended(tracker, exc, leave=False)
                step = failover.next(route, exc) if isinstance(exc, Exception) else None
                if step is None:
                    raise
                route, delay = step
                if delay > 0:
                    log.debug("attempt %d failed (%s); next in %.3f s", failover.attempts, exc, delay)
                    await asyncio.sleep(delay)
                continue
            if not holds:
                self._ended(tracker, None)
            return result

    def _ended(self, tracker: Tracker, outcome: BaseException | None, *, leave: bool = True) -> None:
        """The current attempt ended: its provider slot back (with `leave`), its circuit told, its
        record entry written."""
        route = tracker.route
        assert route is not None, "an attempt has a route"
        if leave:
            self._admission.leave_provider(route.deployment.provider)
        if self._circuits is not None:
            self._circuits.record(route.deployment, outcome, probe=route.probe)
        tracker.end(outcome)

    async def create_chat_completion(self, request: ChatRequest, ctx: RequestContext) -> ChatCompletion:
        model: ModelSpec | None = None
        try:
            model = self._chat_model(request, ctx.key)
            with self._admitted():
                tracker = Tracker(
                    new_generation_id(), model.id, ctx, streamed=False, user=request.user, body=request.body
                )
                if self.limiter is not None and self.limiter.applies(ctx.key, model):
                    ctx.limits = await self.limiter.admit(ctx.key, model, request.body)
                with self._recorded(tracker, GenerationKind.CHAT):
                    result = await self._attempts(
                        self._failover(model, Capability.CHAT, ctx),
                        tracker,
                        lambda route, deadline: route.provider.complete(
                            route.target, request, deadline=deadline
                        ),
                    )
                    tracker.first_token = time.perf_counter()
                    tracker.usage = result.usage
                    tracker.finish_reason = result.finish_reason
                    tracker.upstream_id = result.upstream_id
                    tracker.response_model = str(result.body.get("model") or "")
                    tracker.answer = result.body
                    result.body["id"] = tracker.gen_id
                    result.body["model"] = _answering(tracker).id
                    return result
        except GatewayError as exc:
            if exc.generation_id is None:  # refused before it had a record
                self._refused(GenerationKind.CHAT, model, exc, ctx)
            raise

    def stream_chat_completion(self, request: ChatRequest, ctx: RequestContext) -> ChatStream:
        """Start a stream; routing errors raise here, `Overloaded` and upstream errors from the first
        `__anext__`. The stream holds its slots from then until it ends, is closed or is cancelled.
        Until its first chunk arrives, a failed attempt is followed by the next one as for unary calls."""
        try:
            model = self._chat_model(request, ctx.key)
        except GatewayError as exc:
            self._refused(GenerationKind.CHAT, None, exc, ctx)
            raise
        tracker = Tracker(
            new_generation_id(), model.id, ctx, streamed=True, user=request.user, body=request.body
        )
        return ChatStream(tracker.gen_id, self._stream(model, request, tracker))

    async def _stream(  # noqa: PLR0912, PLR0915  (a stream's whole life in one generator: no layer per chunk)
        self, model: ModelSpec, request: ChatRequest, tracker: Tracker
    ) -> AsyncGenerator[list[JSONObject], None]:
        # The slot is taken here, in the generator's body, so that its exit always gives it back: a stream
        # never started holds none.
        try:
            with self._admitted():
                if self.limiter is not None and self.limiter.applies(tracker.ctx.key, model):
                    tracker.ctx.limits = await self.limiter.admit(tracker.ctx.key, model, request.body)
                include_usage = request.include_usage
                gen_id = tracker.gen_id
                task = asyncio.current_task()
                assert task is not None, "a stream is iterated inside a task"
                running = _Running(task)
                self._streams.add(running)
                with self._recorded(tracker, GenerationKind.CHAT):
                    upstream: AsyncIterator[list[JSONObject]] | None = None
                    outcome: BaseException | None = None
                    try:
                        opened, chunks = await self._attempts(
                            self._failover(model, Capability.CHAT, tracker.ctx),
                            tracker,
                            lambda route, deadline: _opened(route, request, deadline),
                            holds=True,
                        )
                        upstream = opened
                        model_id = _answering(tracker).id
                        while chunks:
                            if tracker.first_token is None:
                                tracker.first_token = time.perf_counter()
                                tracker.upstream_id = str(chunks[0].get("id") or "")
                                tracker.response_model = str(chunks[0].get("model") or "")
                            forwarded = [chunk for chunk in chunks if forward(chunk, tracker, include_usage)]
                            for chunk in forwarded:
                                chunk["id"] = gen_id
                                chunk["model"] = model_id
                            if forwarded:
                                running.at_client = True
                                yield forwarded
                                running.at_client = False
                                if running.ended:
                                    raise ShuttingDown(_STREAM_ENDED)
                            try:
                                chunks = await opened.__anext__()
                            except StopAsyncIteration:
                                break
                    except asyncio.CancelledError as exc:
                        if not running.ended:
                            outcome = exc
                            raise
                        running.task.uncancel()  # our cancellation, spent: the task goes on to end the stream
                        outcome = ShuttingDown(_STREAM_ENDED)
                        raise outcome from None
                    except BaseException as exc:
                        outcome = exc
                        raise
                    finally:
                        self._streams.discard(running)
                        if upstream is not None:  # the answering attempt, which `_attempts` left to us
                            self._ended(tracker, outcome)
                            await _aclose(upstream)
        except GatewayError as exc:
            if exc.generation_id is None:  # refused before it had a record
                self._refused(GenerationKind.CHAT, model, exc, tracker.ctx)
            raise

    async def create_embeddings(self, request: EmbeddingsRequest, ctx: RequestContext) -> Embeddings:
        model: ModelSpec | None = None
        try:
            model = self._router.resolve(request.model, Capability.EMBEDDINGS)
            require_model(ctx.key, model.id)
            with self._admitted():
                tracker = Tracker(
                    new_generation_id(), model.id, ctx, streamed=False, user=request.user, body=request.body
                )
                if self.limiter is not None and self.limiter.applies(ctx.key, model):
                    ctx.limits = await self.limiter.admit(ctx.key, model, request.body, completes=False)
                with self._recorded(tracker, GenerationKind.EMBEDDINGS):
                    result = await self._attempts(
                        self._failover(model, Capability.EMBEDDINGS, ctx),
                        tracker,
                        lambda route, deadline: route.provider.embed(
                            route.target, request, deadline=deadline
                        ),
                    )
                    tracker.first_token = time.perf_counter()
                    tracker.usage = result.usage
                    tracker.response_model = str(result.body.get("model") or "")
                    result.body["id"] = tracker.gen_id
                    result.body["model"] = _answering(tracker).id
                    return result
        except GatewayError as exc:
            if exc.generation_id is None:  # refused before it had a record
                self._refused(GenerationKind.EMBEDDINGS, model, exc, ctx)
            raise

    def _recorded(self, tracker: Tracker, kind: GenerationKind) -> _Recorded:
        """Record how the block ended, whatever ends it: success, error, or a client that left."""
        return _Recorded(self, tracker, kind)

    async def get_generation(self, generation_id: str, key: ApiKey | None = None) -> GenerationRecord:
        """The record, if `key` may read it (`may_read`); one it may not is not found, as if absent."""
        record = await self._recorder.get(generation_id) if generation_id else None
        if record is None or not may_read(key, record):
            raise hidden_generation(generation_id)
        return record

    def _chat_model(self, request: ChatRequest, key: ApiKey | None) -> ModelSpec:
        model = self._router.resolve(request.model, Capability.CHAT)
        require_model(key, model.id)
        body: Mapping[str, object] = request.body
        if body.get("tools") and not model.can(Capability.TOOLS):
            raise InvalidRequest(
                f"The model '{model.id}' does not support tools.",
                code="model_not_supported",
                param="tools",
            )
        if not model.can(Capability.VISION) and has_images(request):
            raise InvalidRequest(
                f"The model '{model.id}' does not support image input.",
                code="model_not_supported",
                param="messages",
            )
        return model

    def _refused(
        self, kind: GenerationKind, model: ModelSpec | None, error: GatewayError, ctx: RequestContext
    ) -> None:
        for observer in self._observers:
            try:
                observer.refused(kind, model.id if model is not None else "", error, ctx)
            except Exception:  # an observer's bug must not become the request's failure
                log.exception("observer %r failed", observer)

    def _finish(self, tracker: Tracker, kind: GenerationKind, outcome: BaseException | None) -> None:
        record = tracker.record(kind, outcome)
        self._recorder.record(record)
        for observer in self._observers:
            try:
                observer.finished(record, tracker)
            except Exception:  # an observer's bug must not become the request's failure
                log.exception("observer %r failed", observer)
        admitted = tracker.ctx.limits
        if admitted is not None and self.limiter is not None:
            task = asyncio.create_task(self.limiter.settle_record(admitted, record))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        log.info(
            "%s %s model=%s status=%s tokens=%d/%d latency_ms=%.1f%s%s%s%s",
            kind,
            record.id,
            record.model,
            record.status,
            record.prompt_tokens,
            record.completion_tokens,
            record.latency_ms or 0.0,
            f" attempts={len(record.attempts)}" if len(record.attempts) > 1 else "",
            f" error={record.error_code}" if record.error_code else "",
            f" key={record.key_id}" if record.key_id else "",
            f" trace={record.trace_id}" if record.trace_id else "",
            # The JSON log format writes the record's fields as fields of the line (`logs.JsonFormatter`).
            extra={"generation": record},
        )


# The two blocks every request runs in, as classes: a generator-based context manager costs a generator and
# its frames per request (measured: ~4% of an embeddings request's instructions at this layer).


class _Slot:
    """A request's process slot (`Gateway._admitted`); holds no state of its own, so one serves all."""

    __slots__ = ("gateway",)

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __enter__(self) -> None:
        gateway = self.gateway
        if gateway._draining:
            raise ShuttingDown("The gateway is shutting down; retry on another replica.")
        gateway._admission.enter()

    def __exit__(self, *_: object) -> None:
        self.gateway._admission.leave()


class _Recorded:
    """Writes a request's record when its block ends (`Gateway._recorded`)."""

    __slots__ = ("gateway", "kind", "tracker")

    def __init__(self, gateway: Gateway, tracker: Tracker, kind: GenerationKind) -> None:
        self.gateway = gateway
        self.tracker = tracker
        self.kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        outcome = _tag(exc, self.tracker) if exc is not None else None
        self.gateway._finish(self.tracker, self.kind, outcome)


def _answering(tracker: Tracker) -> ModelSpec:
    """The model whose deployment answered (the requested one, or a fallback)."""
    assert tracker.route is not None, "an answer came from an attempt"
    return tracker.route.model


async def _opened(
    route: Route, request: ChatRequest, deadline: float
) -> tuple[AsyncIterator[list[JSONObject]], list[JSONObject]]:
    """A stream attempt, up to its first chunks (none: the upstream's stream ended at once): a failure
    until then may still be followed by another attempt."""
    upstream = route.provider.stream(route.target, request, deadline=deadline)
    try:
        first = await upstream.__anext__()
    except StopAsyncIteration:
        return upstream, []
    except BaseException:
        await _aclose(upstream)
        raise
    return upstream, first


async def _aclose(iterator: AsyncIterator[list[JSONObject]]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
