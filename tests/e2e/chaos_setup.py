"""The chaos suite's gateway and clients: alias `gpt-4o` on two fake upstreams (`east` preferred, `west`
after it), fallback `gpt-4o-mini` on a third (`spare`), and one call per front that reports what a client
saw (answer or error, headers or metadata, the record) in one shape, whichever front it went through."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from grpclib import GRPCError, Status
from grpclib.const import Cardinality
from multidict import MultiDict

from llmgw.application.retries import RetryPolicy
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.infrastructure.config.settings import ProviderKind, ProviderSettings, Settings
from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.ports import FakeStore
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, free_port, running_gateway, settings_for

Json = dict[str, Any]
EAST, WEST, SPARE = "east", "west", "spare"
KEYS = {EAST: "sk-east-SECRET-0123456789", WEST: "sk-west-SECRET-9876543210", SPARE: "sk-spare-SECRET-42"}
ALIAS = "gpt-4o"
FALLBACK = "gpt-4o-mini"
UPSTREAM_MODEL = {EAST: "gpt-4o-east", WEST: "gpt-4o-west", SPARE: "gpt-4o-mini-spare"}
#: A model served by `east` alone (by prefix, no catalog entry): retries can only go back to it.
SOLO = "east/solo"
# Small, so the suite is fast: the request deadline is `timeout`, a stream's first byte and every later
# chunk get `first_token_timeout` and `idle_timeout`.
TIMEOUTS: Json = {"timeout": 0.8, "connect_timeout": 0.5, "first_token_timeout": 0.25, "idle_timeout": 0.25}
#: Three attempts, backoffs of a few ms, Retry-After honoured up to 2 s.
FAST_RETRY = RetryPolicy(max_attempts=3, backoff=0.02, backoff_max=0.05, retry_after_max=2.0)
# Room for a loaded machine on top of a timeout that should have fired.
SLACK = 0.5
_SERVICE = "/llmgateway.v1.LLMGatewayService"


def alias(*, fallbacks: tuple[str, ...] = (), weights: tuple[int, int] | None = None) -> ModelSpec:
    """`gpt-4o` on east and west: east first (priority), or shared by `weights`."""
    east, west = (Deployment(p, UPSTREAM_MODEL[p], priority=i) for i, p in enumerate((EAST, WEST)))
    if weights is not None:
        east, west = (
            replace(east, priority=0, weight=weights[0]),
            replace(west, priority=0, weight=weights[1]),
        )
    return ModelSpec(
        id=ALIAS,
        name="GPT-4o",
        capabilities=frozenset({Capability.CHAT}),
        deployments=(east, west),
        fallbacks=fallbacks,
    )


FALLBACK_MODEL = ModelSpec(
    id=FALLBACK,
    name="GPT-4o mini",
    capabilities=frozenset({Capability.CHAT}),
    deployments=(Deployment(SPARE, UPSTREAM_MODEL[SPARE]),),
)


def chaos_settings(
    fakes: Mapping[str, FakeUpstream],
    *,
    retry: RetryPolicy = FAST_RETRY,
    model: ModelSpec | None = None,
    overrides: Mapping[str, Json] | None = None,
    refused: tuple[str, ...] = (),
) -> Settings:
    """East, west and spare (kind `openai`), each on its fake with `TIMEOUTS` and its `overrides`; a provider
    in `refused` points at a closed port instead (connection refused)."""
    overrides = overrides or {}
    providers = {}
    for name, fake in fakes.items():
        base_url = f"http://127.0.0.1:{free_port()}/v1" if name in refused else fake.base_url
        options = {**TIMEOUTS, **overrides.get(name, {})}
        providers[name] = ProviderSettings(
            name=name, kind=ProviderKind.OPENAI, base_url=base_url, api_key=KEYS[name], **options
        )
    return replace(
        settings_for({}, retry=retry),
        providers=providers,
        models=(model or alias(), FALLBACK_MODEL),
    )


@asynccontextmanager
async def upstreams() -> AsyncIterator[dict[str, FakeUpstream]]:
    fakes = {name: FakeUpstream("openai") for name in (EAST, WEST, SPARE)}
    for fake in fakes.values():
        await fake.start()
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            await fake.close()


@dataclass
class Gateway:
    """A running gateway, its fakes and the store its records go to (for requests whose id never reached
    the client)."""

    running: Running
    fakes: dict[str, FakeUpstream]
    store: FakeStore

    def seen(self) -> dict[str, int]:
        """Requests each fake received."""
        return {name: len(fake.requests) for name, fake in self.fakes.items()}


@asynccontextmanager
async def chaos_gateway(fakes: dict[str, FakeUpstream], settings: Settings) -> AsyncIterator[Gateway]:
    store = FakeStore()
    async with running_gateway(settings, store=store) as running:
        yield Gateway(running, fakes, store)


class Front(enum.Enum):
    REST = "rest"
    REST_STREAM = "rest-stream"
    GRPC = "grpc"
    GRPC_STREAM = "grpc-stream"

    @property
    def streamed(self) -> bool:
        return self in (Front.REST_STREAM, Front.GRPC_STREAM)

    @property
    def grpc(self) -> bool:
        return self in (Front.GRPC, Front.GRPC_STREAM)


UNARY_FRONTS = [Front.REST, Front.GRPC]
STREAM_FRONTS = [Front.REST_STREAM, Front.GRPC_STREAM]
ALL_FRONTS = list(Front)

# DESIGN.md's error table, read backwards: the OpenAI error `type` each gRPC status stands for.
_TYPE_OF_STATUS = {
    Status.UNAVAILABLE: "upstream_error",
    Status.DEADLINE_EXCEEDED: "timeout_error",
    Status.RESOURCE_EXHAUSTED: "rate_limit_error",
    Status.INVALID_ARGUMENT: "invalid_request_error",
    Status.INTERNAL: "server_error",
}
#: The status a client gets for each error type, on REST and on gRPC.
STATUS_OF_TYPE = {
    "upstream_error": (502, Status.UNAVAILABLE),
    "timeout_error": (504, Status.DEADLINE_EXCEEDED),
    "rate_limit_error": (429, Status.RESOURCE_EXHAUSTED),
}


@dataclass
class Outcome:
    """What one client saw. `error` is the error type (REST body `type`, gRPC status read through the
    table) of an answer that failed before any chunk; `midstream` that of a stream failing after some."""

    front: Front
    status: int | Status
    content: str = ""
    model: str = ""
    error: str | None = None
    midstream: str | None = None
    #: The stream ended with `data: [DONE]` (REST) or the call's trailers (gRPC).
    ended: bool = False
    #: REST: the response headers; gRPC: initial metadata, or trailers when nothing was answered.
    headers: dict[str, str] = field(default_factory=dict)
    #: gRPC: the trailers of a failed call.
    trailers: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def generation_id(self) -> str:
        return self.headers.get("x-generation-id") or self.trailers["x-generation-id"]

    @property
    def attempts_header(self) -> tuple[str | None, str | None]:
        """`x-llmgw-attempts` and `x-llmgw-provider`: where a client reads them on its front."""
        headers = self.trailers if self.front.grpc and self.error is not None else self.headers
        return headers.get("x-llmgw-attempts"), headers.get("x-llmgw-provider")


def chat_body(model: str, *, stream: bool = False) -> Json:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "stream": stream}


def grpc_request(model: str) -> v1.CreateChatCompletionRequest:
    return v1.CreateChatCompletionRequest(
        model=model, messages=[v1.ChatMessage(role="user", content="Say hello.")]
    )


async def call(gw: Running, front: Front, model: str = ALIAS) -> Outcome:
    """One chat request on `front`, read to its end."""
    started = time.perf_counter()
    if front is Front.REST:
        outcome = await _rest(gw, model)
    elif front is Front.REST_STREAM:
        outcome = await _rest_stream(gw, model)
    else:
        outcome = await _grpc(gw, model, streamed=front is Front.GRPC_STREAM)
    outcome.elapsed = time.perf_counter() - started
    return outcome


async def _rest(gw: Running, model: str) -> Outcome:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.rest_url}/v1/chat/completions", json=chat_body(model)) as response,
    ):
        body = await response.json()
        outcome = Outcome(Front.REST, response.status, headers=_lower(response.headers))
    if response.status != 200:
        outcome.error = body["error"]["type"]
        return outcome
    outcome.content = body["choices"][0]["message"]["content"]
    outcome.model = body["model"]
    return outcome


async def _rest_stream(gw: Running, model: str) -> Outcome:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.rest_url}/v1/chat/completions", json=chat_body(model, stream=True)) as response,
    ):
        text = await response.text()
        outcome = Outcome(Front.REST_STREAM, response.status, headers=_lower(response.headers))
    if response.status != 200:
        outcome.error = json.loads(text)["error"]["type"]
        return outcome
    assert response.content_type == "text/event-stream"
    payloads = [line.removeprefix("data: ") for line in text.split("\n") if line.startswith("data: ")]
    outcome.ended = payloads[-1] == "[DONE]"
    for payload in payloads[: -1 if outcome.ended else None]:
        event = json.loads(payload)
        if "error" in event:
            assert outcome.midstream is None, f"two error events: {text}"
            assert set(event) == {"error"}, event
            outcome.midstream = event["error"]["type"]
            continue
        assert outcome.midstream is None, f"a chunk after the error event: {text}"
        outcome.model = event["model"]
        outcome.content += "".join(c["delta"].get("content") or "" for c in event["choices"])
    return outcome


async def _grpc(gw: Running, model: str, *, streamed: bool) -> Outcome:
    front = Front.GRPC_STREAM if streamed else Front.GRPC
    method, cardinality, reply = (
        ("CreateChatCompletionStream", Cardinality.UNARY_STREAM, v1.ChatCompletionChunk)
        if streamed
        else ("CreateChatCompletion", Cardinality.UNARY_UNARY, v1.ChatCompletion)
    )
    outcome = Outcome(front, Status.OK)
    async with gw.channel.request(
        f"{_SERVICE}/{method}", cardinality, v1.CreateChatCompletionRequest, reply
    ) as stream:
        await stream.send_message(grpc_request(model), end=True)
        try:
            while (message := await stream.recv_message()) is not None:
                outcome.model, text = _read(message)
                outcome.content += text
            await stream.recv_trailing_metadata()
        except GRPCError as exc:
            outcome.status = exc.status
            kind = _TYPE_OF_STATUS.get(exc.status, exc.status.name)
            if outcome.content:
                outcome.midstream = kind
            else:
                outcome.error = kind
        outcome.ended = True
        outcome.headers = _lower(stream.initial_metadata or MultiDict())
        outcome.trailers = _lower(stream.trailing_metadata or MultiDict())
    return outcome


def _read(message: object) -> tuple[str, str]:
    """A reply's model and text."""
    if isinstance(message, v1.ChatCompletionChunk):
        parts = [choice.delta for choice in message.choices]
    else:
        assert isinstance(message, v1.ChatCompletion)
        parts = [choice.message for choice in message.choices]
    return message.model, "".join(part.content or "" for part in parts if part is not None)


def _lower(headers: Mapping[str, Any]) -> dict[str, str]:
    return {key.lower(): str(value) for key, value in headers.items()}


@dataclass(frozen=True)
class Tried:
    """One entry of a record's `attempts`, as either front returns it."""

    provider: str
    model: str
    outcome: str
    error_code: str
    duration_ms: float = field(compare=False)
    upstream_model: str = field(compare=False)


@dataclass(frozen=True)
class Record:
    """A generation record as `GET /v1/generation/{id}` or `GetGeneration` returns it."""

    status: str
    error_code: str
    provider: str
    attempts: tuple[Tried, ...]
    latency_ms: float

    @property
    def tried(self) -> list[tuple[str, str, str]]:
        """(provider, outcome, error_code) of each attempt."""
        return [(a.provider, a.outcome, a.error_code) for a in self.attempts]


async def record_of(gw: Running, generation_id: str, *, grpc: bool) -> Record:
    """The record through the front the request came by."""
    if grpc:
        found = (await gw.grpc.get_generation(v1.GetGenerationRequest(id=generation_id))).generation
        assert found is not None
        return Record(
            status=found.status.name.lower(),
            error_code=found.error_code,
            provider=found.provider,
            attempts=tuple(
                Tried(a.provider, a.model, a.outcome, a.error_code, a.duration_ms, a.upstream_model)
                for a in found.attempts
            ),
            latency_ms=found.latency_ms or 0.0,
        )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.rest_url}/v1/generation/{generation_id}") as response,
    ):
        assert response.status == 200, await response.text()
        body = (await response.json())["generation"]
    return Record(
        status=body["status"],
        error_code=body["error_code"] or "",
        provider=body["provider"] or "",
        attempts=tuple(
            Tried(
                a["provider"],
                a["model"],
                a["outcome"],
                a["error_code"],
                a["duration_ms"],
                a["upstream_model"],
            )
            for a in body["attempts"]
        ),
        latency_ms=body["latency_ms"],
    )
