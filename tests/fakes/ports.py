"""In-process fakes of the use cases' ports: a scripted `Provider` and an in-memory `GenerationStore`.

Hand them to `build_gateway(settings, store=..., providers=...)` and drive the `Gateway` directly.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmgw.domain.catalog import ModelSpec
from llmgw.domain.chat import ChatCompletion, ChatRequest, Embeddings, EmbeddingsRequest, JSONObject
from llmgw.domain.errors import UpstreamTimeout
from llmgw.domain.generation import GenerationRecord
from llmgw.domain.limits import usd_to_micros
from llmgw.domain.usage import Usage
from llmgw.domain.usage_report import GenerationQuery, UsageQuery, UsageRow

__all__ = [
    "Call",
    "FakeProvider",
    "FakeStore",
    "StreamScript",
    "chat_answer",
    "chunk",
    "embeddings_answer",
    "text_stream",
    "usage_chunk",
    "usage_json",
]

UPSTREAM_ID = "chatcmpl-upstream-1"
UPSTREAM_MODEL = "upstream-model"
_CREATED = 1_700_000_000


def usage_json(prompt: int, completion: int, **extra: Any) -> JSONObject:
    """An OpenAI `usage` object; `extra` adds `cost`, `prompt_tokens_details` and the like."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        **extra,
    }


def chat_answer(
    text: str = "Hello!",
    *,
    finish_reason: str = "stop",
    usage: JSONObject | None = None,
    upstream_id: str = UPSTREAM_ID,
) -> ChatCompletion:
    """A non-streamed answer as a provider adapter returns it: the upstream's body and what it read."""
    body: JSONObject = {
        "id": upstream_id,
        "object": "chat.completion",
        "created": _CREATED,
        "model": UPSTREAM_MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return ChatCompletion(
        body=body,
        usage=Usage.from_openai(usage) if usage is not None else None,
        finish_reason=finish_reason,
        upstream_id=upstream_id,
    )


def chunk(
    delta: JSONObject | None = None,
    *,
    finish_reason: str | None = None,
    upstream_id: str = UPSTREAM_ID,
    **extra: Any,
) -> JSONObject:
    """One OpenAI `chat.completion.chunk` with a single choice; `extra` adds top-level fields."""
    return {
        "id": upstream_id,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": UPSTREAM_MODEL,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
        **extra,
    }


def usage_chunk(usage: JSONObject, *, upstream_id: str = UPSTREAM_ID) -> JSONObject:
    """The last chunk of a stream asked for usage: no choices, only `usage`."""
    return {
        "id": upstream_id,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": UPSTREAM_MODEL,
        "choices": [],
        "usage": usage,
    }


def text_stream(
    *texts: str,
    finish_reason: str = "stop",
    usage: JSONObject | None = None,
    upstream_id: str = UPSTREAM_ID,
) -> list[JSONObject]:
    """A stream as OpenAI sends it: the role (no text), one chunk per text, the finish, then usage."""
    chunks = [chunk({"role": "assistant", "content": ""}, upstream_id=upstream_id)]
    chunks += [chunk({"content": text}, upstream_id=upstream_id) for text in texts]
    chunks.append(chunk({}, finish_reason=finish_reason, upstream_id=upstream_id))
    if usage is not None:
        chunks.append(usage_chunk(usage, upstream_id=upstream_id))
    return chunks


def embeddings_answer(
    vectors: Sequence[Sequence[float]] = ((0.25, -0.5),), *, prompt_tokens: int = 4
) -> Embeddings:
    body: JSONObject = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": list(vector)} for i, vector in enumerate(vectors)
        ],
        "model": UPSTREAM_MODEL,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return Embeddings(body=body, usage=Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens))


@dataclass
class StreamScript:
    """How one stream goes: `chunks` in order, `pause` seconds before each; then `error` is raised after
    `error_after` chunks (0: before the first; None: after them all), or the stream waits after
    `hang_after` chunks until it is closed or cancelled."""

    chunks: Sequence[JSONObject]
    pause: float = 0.0
    error: BaseException | None = None
    error_after: int | None = None
    hang_after: int | None = None


@dataclass
class _Answer:
    result: ChatCompletion | Embeddings | BaseException
    delay: float = 0.0
    hang: bool = False


@dataclass(eq=False)
class Call:
    """One call the gateway made: `kind` is complete, stream or embed.

    `ended` says how it ended: "" while it runs, then "answered", "raised", "closed" (a stream closed
    before its end: `aclose`) or "cancelled". `sent` counts the chunks a stream yielded.
    """

    kind: str
    model: ModelSpec
    request: ChatRequest | EmbeddingsRequest
    deadline: float | None = None
    sent: int = 0
    ended: str = ""
    hanging: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def closed(self) -> bool:
        """The call is over, so its upstream connection would be freed."""
        return self.ended != ""


class FakeProvider:
    """A scripted `Provider`. Queue answers with `will_answer`, `will_stream` and `will_embed`; unscripted
    calls get a short default answer. Every call is kept in `calls`."""

    def __init__(self, name: str = "fake", *, has_credentials: bool = True) -> None:
        self.name = name
        self.has_credentials = has_credentials
        self.calls: list[Call] = []
        self._answers: deque[_Answer] = deque()
        self._streams: deque[StreamScript] = deque()
        self._embeddings: deque[_Answer] = deque()
        self._hung = asyncio.Event()

    def will_answer(
        self, result: ChatCompletion | BaseException, *, delay: float = 0.0, hang: bool = False
    ) -> None:
        """The next `complete`: `result` (an exception is raised) after `delay` s, or never if `hang`."""
        self._answers.append(_Answer(result, delay, hang))

    def will_stream(self, script: StreamScript) -> None:
        self._streams.append(script)

    def will_embed(self, result: Embeddings | BaseException, *, delay: float = 0.0) -> None:
        self._embeddings.append(_Answer(result, delay))

    async def hanging(self, within: float = 1.0) -> Call:
        """The latest call, once one waits forever as scripted (`hang`, `hang_after`)."""
        async with asyncio.timeout(within):
            await self._hung.wait()
        return next(call for call in reversed(self.calls) if call.hanging.is_set())

    async def complete(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> ChatCompletion:
        call = self._call("complete", model, request, deadline)
        answer = self._answers.popleft() if self._answers else _Answer(chat_answer())
        with _Ending(call):
            result = await self._after_delay(answer, call)
            assert isinstance(result, ChatCompletion), "scripted an embeddings answer for a chat"
            # The adapter hands over a body of its own: the gateway may change it.
            return ChatCompletion(
                body=copy.deepcopy(result.body),
                usage=result.usage,
                finish_reason=result.finish_reason,
                upstream_id=result.upstream_id,
            )

    async def stream(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> AsyncIterator[list[JSONObject]]:
        call = self._call("stream", model, request, deadline)
        script = self._streams.popleft() if self._streams else StreamScript(text_stream("Hello", "!"))
        with _Ending(call):
            for index, scripted in enumerate(script.chunks):
                if script.error is not None and script.error_after == index:
                    raise script.error
                if script.hang_after == index:
                    await self._hang(call)
                if script.pause:
                    await asyncio.sleep(script.pause)
                call.sent += 1
                yield [copy.deepcopy(scripted)]  # each chunk its own read; a fresh object, as a decoder makes
            if script.error is not None and script.error_after in (None, len(script.chunks)):
                raise script.error
            if script.hang_after == len(script.chunks):
                await self._hang(call)

    async def embed(
        self, model: ModelSpec, request: EmbeddingsRequest, *, deadline: float | None = None
    ) -> Embeddings:
        call = self._call("embed", model, request, deadline)
        answer = self._embeddings.popleft() if self._embeddings else _Answer(embeddings_answer())
        with _Ending(call):
            result = await self._after_delay(answer, call)
            assert isinstance(result, Embeddings), "scripted a chat answer for embeddings"
            return Embeddings(body=copy.deepcopy(result.body), usage=result.usage, text=result.text)

    def _call(
        self,
        kind: str,
        model: ModelSpec,
        request: ChatRequest | EmbeddingsRequest,
        deadline: float | None,
    ) -> Call:
        call = Call(kind, model, request, deadline)
        self.calls.append(call)
        return call

    async def _after_delay(self, answer: _Answer, call: Call) -> ChatCompletion | Embeddings:
        if answer.hang:
            await self._hang(call)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if isinstance(answer.result, BaseException):
            raise answer.result
        return answer.result

    async def _hang(self, call: Call) -> None:
        """Never answer; past the call's deadline, if it has one, time out as a real provider does."""
        call.hanging.set()
        self._hung.set()
        if call.deadline is None:
            await asyncio.Event().wait()
        try:
            async with asyncio.timeout_at(call.deadline):
                await asyncio.Event().wait()
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name}: no answer within the time allowed.") from None


class _Ending:
    """Notes on the call how it ended."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if kind is None:
            self._call.ended = "answered"
        elif issubclass(kind, GeneratorExit):
            self._call.ended = "closed"
        elif issubclass(kind, asyncio.CancelledError):
            self._call.ended = "cancelled"
        else:
            self._call.ended = "raised"


class FakeStore:
    """A `GenerationStore` in memory. Set `down` and every call fails as a store that lost its server
    does; set `hang` and every call (`open` and `close` too) waits forever, as one whose server accepts
    and never answers; once closed, writes fail too."""

    def __init__(self) -> None:
        self.records: dict[str, GenerationRecord] = {}
        # Every record in the order it was written, and how many `put_many` calls wrote them.
        self.written: list[GenerationRecord] = []
        self.puts = 0
        self.down = False
        self.hang = False
        self.opened = False
        self.closed = False
        self._put = asyncio.Event()

    async def open(self) -> None:
        await self._hang()
        self.opened = True

    async def close(self) -> None:
        await self._hang()
        self.closed = True

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        await self._hang()
        self._answer()
        if self.closed:
            raise ConnectionError("the store is closed")
        self.puts += 1
        self.written.extend(records)
        self.records.update((record.id, record) for record in records)
        self._put.set()

    async def get(self, generation_id: str) -> GenerationRecord | None:
        await self._hang()
        self._answer()
        return self.records.get(generation_id)

    async def prune(self, older_than: float) -> int:
        await self._hang()
        self._answer()
        old = [key for key, record in self.records.items() if record.created_at < older_than]
        for key in old:
            del self.records[key]
        return len(old)

    async def spend(
        self, since: float, until: float, *, key_id: str = "", team_id: str = "", model: str = ""
    ) -> int:
        await self._hang()
        self._answer()
        return sum(
            usd_to_micros(record.cost_usd)
            for record in self.records.values()
            if record.cost_usd is not None
            and since <= record.created_at < until
            and (not key_id or record.key_id == key_id)
            and (not team_id or record.team_id == team_id)
            and (not model or record.model == model)
        )

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        """No rollups here: the stores' own tests cover them."""
        await self._hang()
        self._answer()
        return []

    async def list_generations(self, query: GenerationQuery) -> list[GenerationRecord]:
        await self._hang()
        self._answer()
        newest_first = sorted(self.records.values(), key=lambda record: record.id, reverse=True)
        return [r for r in newest_first if not query.before or r.id < query.before][: query.limit]

    async def ping(self) -> bool:
        await self._hang()
        self._answer()
        return True

    async def wait_for(self, count: int = 1, within: float = 1.0) -> list[GenerationRecord]:
        """The first `count` records written, once they are."""
        async with asyncio.timeout(within):
            while len(self.written) < count:
                self._put.clear()
                await self._put.wait()
        return self.written[:count]

    async def record_of(self, generation_id: str, within: float = 1.0) -> GenerationRecord:
        """The record of `generation_id`, once it is written."""
        async with asyncio.timeout(within):
            while generation_id not in self.records:
                self._put.clear()
                await self._put.wait()
        return self.records[generation_id]

    async def _hang(self) -> None:
        if self.hang:
            await asyncio.Event().wait()

    def _answer(self) -> None:
        if self.down:
            raise ConnectionError("the store is down")
