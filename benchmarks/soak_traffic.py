"""The soak run's clients: a seeded mix of requests (REST JSON and SSE, gRPC unary and streamed, embeddings on
both fronts), each with a fault for the upstream to inject or a way for the client to leave, sent at a fixed
concurrency; and generation lookups on both fronts.

Every request carries its own `x-request-id` (header or metadata) and, in its text, the directive that tells
`fault_upstream` what to do with each of its attempts. Each result keeps the generation id the gateway
returned, when it returned one (`x-generation-id` header or metadata, on answers and errors alike).
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

from llmgw.infrastructure.grpc.messages import v1

CHAT_MODEL = "soak/chat"
EMBED_MODEL = "soak/embed"
#: a client that leaves before the answer does so this long after sending (the upstream answers after 1 s)
LEAVE_AFTER = 0.3
#: a client that leaves a stream does so after this many events
LEAVE_AFTER_EVENTS = 2
#: no request should take longer than this; one that does is counted as a client timeout
CLIENT_TIMEOUT = 30.0
GRPC_CHANNELS = 4
_SERVICE = "/llmgateway.v1.LLMGatewayService/"
_GRPC_ERRORS = (GRPCError, ProtocolError, StreamTerminatedError, H2Error, OSError)


class Kind(enum.Enum):
    REST_CHAT = "REST chat (JSON)"
    REST_STREAM = "REST chat stream (SSE)"
    GRPC_CHAT = "gRPC chat (unary)"
    GRPC_STREAM = "gRPC chat stream"
    REST_EMBED = "REST embeddings"
    GRPC_EMBED = "gRPC embeddings"

    @property
    def streamed(self) -> bool:
        return self in (Kind.REST_STREAM, Kind.GRPC_STREAM)


#: the share of each kind, in percent
KIND_MIX: dict[Kind, int] = {
    Kind.REST_CHAT: 28,
    Kind.REST_STREAM: 28,
    Kind.GRPC_CHAT: 15,
    Kind.GRPC_STREAM: 15,
    Kind.REST_EMBED: 7,
    Kind.GRPC_EMBED: 7,
}


class Leave(enum.Enum):
    NEVER = ""
    EARLY = "leaves before the answer"
    MID_STREAM = "leaves mid-stream"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    #: `fault_upstream`'s actions, one per attempt ("" = every attempt answers)
    plan: str
    weight: int
    leave: Leave = Leave.NEVER


#: what happens to a request, weights in percent; unary requests that draw "leaves mid-stream" leave early
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("no fault", "", 61),
    Scenario("500, then an answer (another deployment)", "500", 5),
    Scenario("503, then an answer", "503", 4),
    Scenario("429 with Retry-After: 0, then an answer", "429", 5),
    Scenario("both deployments fail (500, 503): the fallback model answers", "500,503", 4),
    Scenario("every attempt fails (500, 503, 500): an error", "500,503,500", 2),
    Scenario("connection reset before the answer, then an answer", "reset", 3),
    Scenario("reset mid-answer (streams: after 3 chunks)", "midreset", 2),
    Scenario("malformed body (streams: a chunk that is not JSON after 3)", "malformed", 3),
    Scenario("hang: no answer past the timeout", "hang", 2),
    Scenario("stall mid-answer past the idle timeout", "stall", 1),
    Scenario("client leaves before the answer (upstream answers after 1 s)", "slow", 5, Leave.EARLY),
    Scenario("client leaves mid-stream (chunks 20 ms apart)", "slowstream", 3, Leave.MID_STREAM),
)


@dataclass(frozen=True, slots=True)
class Spec:
    request_id: str
    kind: Kind
    scenario: Scenario

    @property
    def plan(self) -> str:
        return "slow" if self.leave is Leave.EARLY else self.scenario.plan

    @property
    def leave(self) -> Leave:
        if self.scenario.leave is Leave.MID_STREAM and not self.kind.streamed:
            return Leave.EARLY
        return self.scenario.leave

    @property
    def text(self) -> str:
        return f"Say hello in one short sentence. [soak {self.request_id} {self.plan}]"


@dataclass(frozen=True, slots=True)
class Result:
    spec: Spec
    #: how it ended for the client: "ok", "HTTP 502", "gRPC UNAVAILABLE", "error event mid-stream", ...
    outcome: str
    generation_id: str | None
    seconds: float


def plan_requests(count: int, seed: int, prefix: str) -> list[Spec]:
    """`count` requests drawn from the mixes with a seeded generator: the same seed, the same run."""
    draw = random.Random(seed)
    kinds, kind_weights = list(KIND_MIX), list(KIND_MIX.values())
    weights = [s.weight for s in SCENARIOS]
    return [
        Spec(
            f"{prefix}-{index:06d}",
            draw.choices(kinds, kind_weights)[0],
            draw.choices(SCENARIOS, weights)[0],
        )
        for index in range(count)
    ]


class Clients:
    """One aiohttp session and a few gRPC channels to the gateway; `close()` closes every connection."""

    def __init__(self, host: str, rest_port: int, grpc_port: int) -> None:
        self.base = f"http://{host}:{rest_port}"
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        )
        self.channels = [Channel(host, grpc_port) for _ in range(GRPC_CHANNELS)]
        self._next = 0

    def channel(self) -> Channel:
        self._next = (self._next + 1) % len(self.channels)
        return self.channels[self._next]

    async def close(self) -> None:
        await self.session.close()
        for channel in self.channels:
            channel.close()


async def run(
    clients: Clients,
    specs: Sequence[Spec],
    concurrency: int,
    progress: Callable[[int], None] | None = None,
) -> list[Result]:
    """Send every request, `concurrency` at a time; their results in the order they ended."""
    results: list[Result] = []
    pending = iter(specs)

    async def worker() -> None:
        for spec in pending:
            results.append(await send(clients, spec))
            if progress is not None:
                progress(len(results))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def send(clients: Clients, spec: Spec) -> Result:
    started = time.perf_counter()
    found: dict[str, str] = {}
    try:
        async with asyncio.timeout(LEAVE_AFTER if spec.leave is Leave.EARLY else CLIENT_TIMEOUT):
            outcome = await _SENDERS[spec.kind](clients, spec, found)
    except TimeoutError:
        outcome = "left before the answer" if spec.leave is Leave.EARLY else "client timeout"
    except (aiohttp.ClientError, *_GRPC_ERRORS) as exc:
        outcome = f"client error: {type(exc).__name__}"
    return Result(spec, outcome, found.get("generation_id"), time.perf_counter() - started)


def _chat_body(spec: Spec, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": spec.text}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def _rest_chat(clients: Clients, spec: Spec, found: dict[str, str]) -> str:
    return await _rest_json(clients, "/v1/chat/completions", _chat_body(spec, stream=False), spec, found)


async def _rest_embed(clients: Clients, spec: Spec, found: dict[str, str]) -> str:
    body = {"model": EMBED_MODEL, "input": spec.text}
    return await _rest_json(clients, "/v1/embeddings", body, spec, found)


async def _rest_json(clients: Clients, path: str, body: Any, spec: Spec, found: dict[str, str]) -> str:
    headers = {"x-request-id": spec.request_id}
    async with clients.session.post(clients.base + path, json=body, headers=headers) as response:
        _note(found, response.headers.get("x-generation-id"))
        await response.read()
        return "ok" if response.status == 200 else f"HTTP {response.status}"


async def _rest_stream(clients: Clients, spec: Spec, found: dict[str, str]) -> str:
    headers = {"x-request-id": spec.request_id}
    body = _chat_body(spec, stream=True)
    async with clients.session.post(f"{clients.base}/v1/chat/completions", json=body, headers=headers) as r:
        _note(found, r.headers.get("x-generation-id"))
        if r.status != 200:
            await r.read()
            return f"HTTP {r.status}"
        events, error, done = 0, False, False
        try:
            async for line in r.content:
                if not line.startswith(b"data:"):
                    continue
                if line.startswith(b"data: [DONE]"):
                    done = True
                    continue
                events += 1
                error = error or line.startswith(b'data: {"error"')
                if spec.leave is Leave.MID_STREAM and events >= LEAVE_AFTER_EVENTS:
                    r.close()  # drops the connection: the gateway sees its client leave
                    return "left mid-stream"
        except aiohttp.ClientPayloadError:
            return "stream cut"
        if error:
            return "error event mid-stream"
        return "ok" if done else "stream ended without [DONE]"


def _grpc_chat_request(spec: Spec) -> v1.CreateChatCompletionRequest:
    message = v1.ChatMessage(role="user", content=spec.text)
    return v1.CreateChatCompletionRequest(model=CHAT_MODEL, messages=[message], max_tokens=32)


async def _grpc_chat(clients: Clients, spec: Spec, found: dict[str, str]) -> str:
    return await _grpc_unary(
        clients, "CreateChatCompletion", _grpc_chat_request(spec), v1.ChatCompletion, spec=spec, found=found
    )


async def _grpc_embed(clients: Clients, spec: Spec, found: dict[str, str]) -> str:
    request = v1.CreateEmbeddingsRequest(model=EMBED_MODEL, input=[spec.text])
    return await _grpc_unary(
        clients, "CreateEmbeddings", request, v1.CreateEmbeddingsResponse, spec=spec, found=found
    )


async def _grpc_unary(
    clients: Clients, method: str, request: Any, reply: type[Any], *, spec: Spec, found: dict[str, str]
) -> str:
    metadata = {"x-request-id": spec.request_id}
    channel = clients.channel()
    call = channel.request(
        _SERVICE + method,
        Cardinality.UNARY_UNARY,
        type(request),
        reply,
        timeout=CLIENT_TIMEOUT,
        metadata=metadata,
    )
    try:
        async with call as stream:
            try:
                await stream.send_message(request, end=True)
                await stream.recv_message()
            finally:
                _note_metadata(found, stream.initial_metadata, stream.trailing_metadata)
    except GRPCError as exc:
        _note_metadata(found, None, stream.trailing_metadata)
        return f"gRPC {exc.status.name}"
    return "ok"


async def _grpc_stream(clients: Clients, spec: Spec, found: dict[str, str]) -> str:
    metadata = {"x-request-id": spec.request_id}
    request = _grpc_chat_request(spec)
    call = clients.channel().request(
        _SERVICE + "CreateChatCompletionStream",
        Cardinality.UNARY_STREAM,
        type(request),
        v1.ChatCompletionChunk,
        timeout=CLIENT_TIMEOUT,
        metadata=metadata,
    )
    messages = 0
    try:
        async with call as stream:
            try:
                await stream.send_message(request, end=True)
                while await stream.recv_message() is not None:
                    _note_metadata(found, stream.initial_metadata, None)
                    messages += 1
                    if spec.leave is Leave.MID_STREAM and messages >= LEAVE_AFTER_EVENTS:
                        await stream.cancel()  # RST_STREAM: the gateway sees its client leave
                        return "left mid-stream"
            finally:
                _note_metadata(found, stream.initial_metadata, stream.trailing_metadata)
    except GRPCError as exc:
        _note_metadata(found, None, stream.trailing_metadata)
        return f"gRPC {exc.status.name}" + (" mid-stream" if messages else "")
    return "ok"


_SENDERS: dict[Kind, Callable[[Clients, Spec, dict[str, str]], Any]] = {
    Kind.REST_CHAT: _rest_chat,
    Kind.REST_STREAM: _rest_stream,
    Kind.GRPC_CHAT: _grpc_chat,
    Kind.GRPC_STREAM: _grpc_stream,
    Kind.REST_EMBED: _rest_embed,
    Kind.GRPC_EMBED: _grpc_embed,
}


def _note(found: dict[str, str], generation_id: str | None) -> None:
    if generation_id:
        found["generation_id"] = generation_id


def _note_metadata(found: dict[str, str], *metadata: Any) -> None:
    for one in metadata:
        if one is not None and one.get("x-generation-id"):
            found["generation_id"] = one["x-generation-id"]


@dataclass(frozen=True, slots=True)
class Lookup:
    front: str
    generation_id: str
    #: the record's request id, or why there is none ("404", "gRPC NOT_FOUND", ...)
    request_id: str | None
    error: str = ""


async def look_up(clients: Clients, generation_ids: Sequence[str], concurrency: int) -> list[Lookup]:
    """Each id through `GET /v1/generation/{id}` and `GetGeneration` in turn (even ones REST, odd gRPC)."""
    found: list[Lookup] = []
    pending = iter(enumerate(generation_ids))

    async def worker() -> None:
        for index, generation_id in pending:
            lookup = _rest_lookup if index % 2 == 0 else _grpc_lookup
            found.append(await lookup(clients, generation_id))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return found


async def _rest_lookup(clients: Clients, generation_id: str) -> Lookup:
    async with clients.session.get(f"{clients.base}/v1/generation/{generation_id}") as response:
        if response.status != 200:
            return Lookup("REST", generation_id, None, f"HTTP {response.status}")
        body = await response.json()
        record = body.get("generation") or {}
        return Lookup("REST", generation_id, record.get("request_id"))


async def _grpc_lookup(clients: Clients, generation_id: str) -> Lookup:
    stub = v1.LlmGatewayServiceStub(clients.channel())
    try:
        answer = await stub.get_generation(v1.GetGenerationRequest(id=generation_id), timeout=CLIENT_TIMEOUT)
    except GRPCError as exc:
        return Lookup("gRPC", generation_id, None, f"gRPC {exc.status.name}")
    record = answer.generation
    return Lookup("gRPC", generation_id, record.request_id if record is not None else None, "")
