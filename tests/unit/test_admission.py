"""Overload bounds in the use cases: beyond `max_in_flight` (the process's) or a provider's own bound, chat and
embeddings are refused at once with `Overloaded`, and every way a request ends gives its slot back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

import pytest

from llmgw.application.gateway import ChatStream, Gateway, RequestContext
from llmgw.application.recording import GenerationRecorder
from llmgw.application.retries import RetryPolicy
from llmgw.application.routing import Router
from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import ChatRequest, EmbeddingsRequest, parse_chat_request, parse_embeddings_request
from llmgw.domain.errors import Overloaded, UpstreamUnavailable
from tests.fakes.ports import FakeProvider, FakeStore, StreamScript, embeddings_answer, text_stream

CHAT = "fake/chat"
EMBED = "fake/embed"
OTHER = "other/chat"
HI = [{"role": "user", "content": "hi"}]
# A refusal does not wait for anything; this only leaves room for a loaded machine.
AT_ONCE = 0.1


def spec(model_id: str, capability: Capability) -> ModelSpec:
    provider, _, upstream = model_id.partition("/")
    return ModelSpec(
        id=model_id,
        name=model_id,
        provider=provider,
        upstream_model=upstream,
        capabilities=frozenset({capability}),
        owned_by=provider,
    )


CATALOG = (spec(CHAT, Capability.CHAT), spec(EMBED, Capability.EMBEDDINGS), spec(OTHER, Capability.CHAT))


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider("fake")


@pytest.fixture
def other() -> FakeProvider:
    return FakeProvider("other")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


class Bench:
    """A gateway with bounds, and the requests a test leaves running: cancelled or closed at its end."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tasks: list[asyncio.Task[Any]] = []
        self.streams: list[ChatStream] = []

    def hold(self, call: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `call` in a task of its own."""

        async def run() -> Any:
            return await call

        task = asyncio.create_task(run())
        self.tasks.append(task)
        return task

    async def open_stream(self, request: ChatRequest) -> ChatStream:
        """A stream that has started: its first chunk arrived."""
        stream = self.gateway.stream_chat_completion(request, ctx())
        self.streams.append(stream)
        await anext(stream)
        return stream

    async def end(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for stream in self.streams:
            await stream.aclose()


@contextlib.asynccontextmanager
async def bounded(
    providers: list[FakeProvider],
    store: FakeStore,
    *,
    max_in_flight: int | None = None,
    per_provider: Mapping[str, int] | None = None,
) -> AsyncIterator[Bench]:
    recorder = GenerationRecorder(store)
    recorder.start()
    gateway = Gateway(
        Router(CATALOG, {p.name: p for p in providers}),
        recorder,
        max_in_flight=max_in_flight,
        provider_max_in_flight=per_provider,
        retry_policies={p.name: RetryPolicy(max_attempts=1) for p in providers},
    )
    bench = Bench(gateway)
    try:
        yield bench
    finally:
        await bench.end()
        await recorder.stop()


def ctx() -> RequestContext:
    return RequestContext(request_id="req-1")


def chat(model: str = CHAT) -> ChatRequest:
    return parse_chat_request({"model": model, "messages": HI})


def stream_chat(model: str = CHAT) -> ChatRequest:
    return parse_chat_request({"model": model, "messages": HI}, stream=True)


def embed() -> EmbeddingsRequest:
    return parse_embeddings_request({"model": EMBED, "input": "hi"})


async def running(provider: FakeProvider, count: int) -> None:
    """Wait until `count` calls to `provider` have started and not ended."""
    async with asyncio.timeout(1.0):
        while sum(not call.closed for call in provider.calls) < count:
            await asyncio.sleep(0.001)


async def refused(call: Awaitable[Any]) -> Overloaded:
    started = time.perf_counter()
    with pytest.raises(Overloaded) as raised:
        await call
    assert time.perf_counter() - started < AT_ONCE
    return raised.value


async def test_beyond_the_process_bound_a_chat_is_refused_at_once_as_overloaded_with_retry_after(
    fake: FakeProvider, store: FakeStore
) -> None:
    async with bounded([fake], store, max_in_flight=2) as bench:
        gateway = bench.gateway
        for _ in range(2):
            fake.will_answer(Exception("unused"), hang=True)
            bench.hold(gateway.create_chat_completion(chat(), ctx()))
        await running(fake, 2)

        error = await refused(gateway.create_chat_completion(chat(), ctx()))

        assert (error.code, error.retry_after) == ("overloaded", 1.0)
        assert "too many requests in flight" in error.message
        assert len(fake.calls) == 2  # the refused request never reached the upstream
        await gateway.recorder.flush()
        assert store.written == []  # nor left a record: the two held ones are still running


async def test_streams_and_embeddings_hold_slots_and_are_refused_alike(
    fake: FakeProvider, store: FakeStore
) -> None:
    async with bounded([fake], store, max_in_flight=2) as bench:
        gateway = bench.gateway
        fake.will_stream(StreamScript(text_stream("a", "b"), hang_after=1))
        await bench.open_stream(stream_chat())
        fake.will_embed(embeddings_answer(), delay=60)
        bench.hold(gateway.create_embeddings(embed(), ctx()))
        await running(fake, 2)

        await refused(gateway.create_embeddings(embed(), ctx()))
        await refused(anext(gateway.stream_chat_completion(stream_chat(), ctx())))
        await refused(gateway.create_chat_completion(chat(), ctx()))


async def test_model_listing_and_generation_lookups_answer_while_the_gateway_is_full(
    fake: FakeProvider, store: FakeStore
) -> None:
    async with bounded([fake], store, max_in_flight=1) as bench:
        gateway = bench.gateway
        done = await gateway.create_chat_completion(chat(), ctx())
        fake.will_answer(Exception("unused"), hang=True)
        bench.hold(gateway.create_chat_completion(chat(), ctx()))
        await running(fake, 1)

        assert [m.id for m in gateway.list_models()] == [CHAT, EMBED, OTHER]
        assert gateway.get_model(CHAT).id == CHAT
        assert (await gateway.get_generation(done.body["id"])).id == done.body["id"]
        await refused(gateway.create_chat_completion(chat(), ctx()))


async def test_a_request_that_ends_in_any_way_frees_its_slot(fake: FakeProvider, store: FakeStore) -> None:
    async with bounded([fake], store, max_in_flight=1) as bench:
        gateway = bench.gateway
        await gateway.create_chat_completion(chat(), ctx())
        fake.will_answer(UpstreamUnavailable("upstream failed"))
        with pytest.raises(UpstreamUnavailable):
            await gateway.create_chat_completion(chat(), ctx())
        await gateway.create_embeddings(embed(), ctx())
        fake.will_answer(Exception("unused"), hang=True)
        task = bench.hold(gateway.create_chat_completion(chat(), ctx()))
        await running(fake, 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        result = await gateway.create_chat_completion(chat(), ctx())

        assert result.body["choices"][0]["message"]["content"] == "Hello!"


async def test_a_stream_holds_its_slot_until_it_ends(fake: FakeProvider, store: FakeStore) -> None:
    async with bounded([fake], store, max_in_flight=1) as bench:
        gateway = bench.gateway
        stream = await bench.open_stream(stream_chat())

        await refused(gateway.create_chat_completion(chat(), ctx()))
        rest = [part async for group in stream for part in group]

        assert rest  # the stream ran to its end, and with it gave its slot back
        await gateway.create_chat_completion(chat(), ctx())


async def test_a_stream_cancelled_or_closed_early_frees_its_slot(
    fake: FakeProvider, store: FakeStore
) -> None:
    async with bounded([fake], store, max_in_flight=1) as bench:
        gateway = bench.gateway
        fake.will_stream(StreamScript(text_stream("a", "b"), hang_after=1))
        stream = await bench.open_stream(stream_chat())
        consumer = asyncio.create_task(anext(stream))
        await fake.hanging()
        await refused(gateway.create_chat_completion(chat(), ctx()))

        consumer.cancel()  # the client left while the upstream was silent
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        closed = await bench.open_stream(stream_chat())
        await closed.aclose()  # the client stopped reading after the first chunk

        assert [call.ended for call in fake.calls] == ["cancelled", "closed"]
        await gateway.create_chat_completion(chat(), ctx())


async def test_a_stream_that_never_started_holds_no_slot(fake: FakeProvider, store: FakeStore) -> None:
    async with bounded([fake], store, max_in_flight=1) as bench:
        gateway = bench.gateway
        unstarted = gateway.stream_chat_completion(stream_chat(), ctx())

        await gateway.create_chat_completion(chat(), ctx())
        await unstarted.aclose()
        await gateway.create_chat_completion(chat(), ctx())


async def test_a_full_provider_refuses_while_other_providers_still_answer(
    fake: FakeProvider, other: FakeProvider, store: FakeStore
) -> None:
    async with bounded([fake, other], store, per_provider={"fake": 1, "other": 0}) as bench:
        gateway = bench.gateway
        fake.will_answer(Exception("unused"), hang=True)
        bench.hold(gateway.create_chat_completion(chat(), ctx()))
        await running(fake, 1)

        error = await refused(gateway.create_chat_completion(chat(), ctx()))
        answers = await asyncio.gather(
            *(gateway.create_chat_completion(chat(OTHER), ctx()) for _ in range(5))
        )

        assert error.code == "overloaded"
        assert "provider 'fake'" in error.message
        assert len(answers) == 5  # 0: no bound of its own
        assert len(fake.calls) == 1


async def test_a_request_refused_by_its_provider_takes_no_slot_of_the_process(
    fake: FakeProvider, other: FakeProvider, store: FakeStore
) -> None:
    async with bounded([fake, other], store, max_in_flight=2, per_provider={"fake": 1}) as bench:
        gateway = bench.gateway
        fake.will_answer(Exception("unused"), hang=True)
        bench.hold(gateway.create_chat_completion(chat(), ctx()))
        await running(fake, 1)
        for _ in range(3):
            await refused(gateway.create_chat_completion(chat(), ctx()))

        other.will_answer(Exception("unused"), hang=True)
        bench.hold(gateway.create_chat_completion(chat(OTHER), ctx()))
        await running(other, 1)

        await refused(gateway.create_chat_completion(chat(OTHER), ctx()))  # now the process is full


async def test_without_bounds_a_gateway_admits_every_request(fake: FakeProvider, store: FakeStore) -> None:
    async with bounded([fake], store) as bench:
        gateway = bench.gateway
        for _ in range(50):
            fake.will_answer(Exception("unused"), hang=True)
            bench.hold(gateway.create_chat_completion(chat(), ctx()))
        await running(fake, 50)

        assert (await gateway.create_chat_completion(chat(), ctx())).body["id"].startswith("gen-")
