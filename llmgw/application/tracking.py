"""What a request did, collected while it runs: its context, its attempts, and the record they make."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmgw.application.limits import Admitted
from llmgw.application.routing import Route
from llmgw.domain.chat import JSONObject
from llmgw.domain.errors import GatewayError, ShuttingDown
from llmgw.domain.generation import Attempt, GenerationKind, GenerationRecord, GenerationStatus
from llmgw.domain.keys import ApiKey
from llmgw.domain.usage import Usage, price


@dataclass(slots=True)
class RequestContext:
    """Per-request facts the fronts know (the request id, when the request arrived, the client's own
    deadline on the event loop's clock, if it set one), and what the gateway tells them back: how many
    attempts it made and which provider the last went to (`x-llmgw-attempts`, `x-llmgw-provider`)."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    deadline: float | None = None
    attempts: int = 0
    provider: str = ""
    # The caller's key (None: auth is off); the record names it and its team.
    key: ApiKey | None = None
    # The request's reservation against limits (None: no limit applies), for its headers and settling.
    limits: Admitted | None = None
    # Which front took the request ("rest", "grpc"), and the trace its server span belongs to ("": none).
    front: str = "rest"
    trace_id: str = ""


class Tracker:
    """Collects what a generation record needs while a request runs."""

    __slots__ = (
        "answer",
        "attempt_starts",
        "attempts",
        "body",
        "ctx",
        "deltas",
        "finish_reason",
        "first_token",
        "gen_id",
        "model_id",
        "response_model",
        "route",
        "streamed",
        "upstream_id",
        "usage",
        "user",
    )

    def __init__(
        self,
        gen_id: str,
        model_id: str,
        ctx: RequestContext,
        *,
        streamed: bool,
        user: str,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.gen_id = gen_id
        self.model_id = model_id  # the model the client asked for
        self.ctx = ctx
        self.streamed = streamed
        self.user = user
        self.body = body  # the request's JSON, for observers (traces name its parameters)
        self.route: Route | None = None  # the current attempt's
        self.attempts: list[Attempt] = []
        # When each attempt began, on `perf_counter`: traces place their spans by it.
        self.attempt_starts: list[float] = []
        # The model the upstream said answered (its own name for it), "" until an answer came; a unary
        # chat answer's body (traces may record it).
        self.response_model = ""
        self.answer: JSONObject | None = None
        self.first_token: float | None = None
        self.usage: Usage | None = None
        self.finish_reason = ""
        self.upstream_id = ""
        # Stream deltas that carried generated text: the tokens seen so far when no usage arrives.
        self.deltas = 0

    def begin(self, route: Route) -> None:
        """An attempt goes to `route`."""
        self.route = route
        self.attempt_starts.append(time.perf_counter())
        ctx = self.ctx
        ctx.attempts += 1
        ctx.provider = route.deployment.provider

    def end(self, outcome: BaseException | None) -> None:
        """The current attempt ended: None for success."""
        route = self.route
        if route is None:
            return
        status, code, _ = describe(outcome)
        self.attempts.append(
            Attempt(
                provider=route.deployment.provider,
                upstream_model=route.deployment.upstream_model,
                model=route.model.id,
                outcome=str(status),
                error_code=code,
                duration_ms=(time.perf_counter() - self.attempt_starts[-1]) * 1000.0,
            )
        )

    def seen_usage(self) -> Usage:
        """No usage arrived (the stream was cut short): count each text-carrying delta as one token,
        which is how OpenAI-compatible servers stream; prompt tokens stay unknown (0)."""
        return Usage(completion_tokens=self.deltas, total_tokens=self.deltas)

    def record(self, kind: GenerationKind, outcome: BaseException | None) -> GenerationRecord:
        now = time.perf_counter()
        usage = self.usage or self.seen_usage()
        status, code, message = describe(outcome)
        route = self.route
        pricing = route.model.pricing if route is not None else None
        return GenerationRecord(
            id=self.gen_id,
            request_id=self.ctx.request_id,
            kind=kind,
            model=self.model_id,
            provider=route.deployment.provider if route is not None else "",
            upstream_model=route.deployment.upstream_model if route is not None else "",
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
            cost_usd=price(usage, pricing) if self.usage is not None or self.deltas else None,
            latency_ms=(now - self.ctx.started) * 1000.0,
            time_to_first_token_ms=(
                (self.first_token - self.ctx.started) * 1000.0 if self.first_token is not None else None
            ),
            error_code=code,
            error_message=message,
            user=self.user,
            attempts=tuple(self.attempts),
            key_id=key.public_id if (key := self.ctx.key) is not None else "",
            team_id=key.team_id if key is not None else "",
            limits=_scope_names(self.ctx.limits),
            trace_id=self.ctx.trace_id,
        )


def _scope_names(admitted: Admitted | None) -> tuple[str, ...]:
    """The scopes a request was admitted under, as its record names them."""
    return () if admitted is None else tuple(scope.name for scope in admitted.scopes)


def describe(exc: BaseException | None) -> tuple[GenerationStatus, str, str]:
    """How something ended, as a record says it: status, error code, error message."""
    if exc is None:
        return GenerationStatus.COMPLETED, "", ""
    if isinstance(exc, ShuttingDown):
        return GenerationStatus.CANCELLED, exc.code or "", exc.message
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return GenerationStatus.CANCELLED, "cancelled", "The client went away."
    if isinstance(exc, GatewayError):
        return GenerationStatus.ERROR, exc.code or "", exc.message
    return GenerationStatus.ERROR, "internal_error", "internal error"


def forward(chunk: JSONObject, tracker: Tracker, include_usage: bool) -> bool:
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
