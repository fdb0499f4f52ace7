"""A scriptable fake OpenAI-compatible provider (openai, dashscope, openrouter) on a real socket.

Tests point a provider's base_url at `FakeUpstream.base_url` and queue `Script`s to shape each answer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes import upstream_wire as wire
from tests.fakes.upstream_wire import Envelope, Json, Script, embedding_for

__all__ = ["FakeUpstream", "RecordedRequest", "Script", "embedding_for"]


@dataclass(eq=False)
class RecordedRequest:
    """One request the fake received; the events tell how the exchange ended."""

    method: str
    path: str
    headers: CIMultiDict[str]
    query: dict[str, str]
    body: bytes
    json: Any
    script: Script | None = None
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Exchange:
    request: web.Request
    record: RecordedRequest
    script: Script
    request_id: str
    response: web.StreamResponse | None = None


class _Answered(Exception):
    """Raised with the response that ends an exchange early (errors, resets)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class FakeUpstream:
    """An aiohttp server on 127.0.0.1:0 that answers chat completions and embeddings like `kind`."""

    def __init__(
        self, kind: str = "openai", *, api_key: str | None = None, thinking_by_default: Collection[str] = ()
    ) -> None:
        if kind not in wire.KINDS:
            raise ValueError(f"unknown kind {kind!r}, expected one of {wire.KINDS}")
        self.kind = kind
        self.api_key = api_key
        self.thinking_by_default = frozenset(thinking_by_default)
        self.requests: list[RecordedRequest] = []
        self._scripts: deque[Script] = deque()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._arrival = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *scripts: Script) -> None:
        """Queue scripts; each chat or embeddings request takes the next, or Script() when none is left."""
        self._scripts.extend(scripts)

    def embedding_for(self, text: str, dimensions: int) -> list[float]:
        return embedding_for(text, dimensions)

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Wait until `count` requests have arrived and return them; bound it with asyncio.timeout."""
        while len(self.requests) < count:
            self._arrival.clear()
            await self._arrival.wait()
        return self.requests[:count]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            query=dict(request.query),
            body=body,
            json=_parse_json(body),
        )
        self.requests.append(record)
        self._arrival.set()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        exchange = _Exchange(request, record, Script(), f"req-{secrets.token_hex(8)}")
        try:
            response = await self._answer(exchange)
        except _Answered as answered:
            response = answered.response
        except asyncio.CancelledError:
            if not self._closing:
                record.disconnected.set()
            raise
        except ConnectionError:
            record.disconnected.set()
            return exchange.response or web.Response()
        finally:
            self._tasks.discard(task)
        record.finished.set()
        return response

    async def _answer(self, ex: _Exchange) -> web.StreamResponse:
        path, method = ex.request.path, ex.request.method
        if not path.endswith(("/chat/completions", "/embeddings")):
            return self._error(ex, 404, f"no route for {path}")
        if method != "POST":
            return self._error(ex, 405, f"{method} not allowed")
        if self._scripts:
            ex.script = self._scripts.popleft()
        ex.record.script = script = ex.script
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.hang:
            await self._forever()
        return await self._respond(ex)

    async def _respond(self, ex: _Exchange) -> web.StreamResponse:
        script, path = ex.script, ex.request.path
        if self.api_key is not None and ex.request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(ex, 401, "Incorrect API key provided")
        if script.status >= 400:
            body = script.error_body or wire.error_body(self.kind, script.status, request_id=ex.request_id)
            return self._json(ex, script.status, body)
        payload = ex.record.json
        chat = path.endswith("/chat/completions")
        stream = chat and isinstance(payload, dict) and payload.get("stream") is True
        if script.malformed and not stream:
            return self._raw(ex, 200, wire.MALFORMED_BODY)
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
            return self._error(ex, 400, "request body must be a JSON object with a model")
        if chat:
            return await self._chat(ex, payload, stream)
        return await self._embeddings(ex, payload)

    async def _chat(self, ex: _Exchange, payload: Json, stream: bool) -> web.StreamResponse:
        thinking = payload.get("enable_thinking")
        if (
            self.kind == "dashscope"
            and not stream
            and (thinking is True or (thinking is None and payload["model"] in self.thinking_by_default))
        ):
            message = "parameter.enable_thinking must be set to false for non-streaming calls"
            return self._error(ex, 400, message)
        stream_options = payload.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        env = Envelope(
            kind=self.kind,
            id=self._response_id(),
            created=int(time.time()),
            model=payload["model"],
            request_id=ex.request_id,
            include_usage=include_usage,
        )
        if not stream or ex.script.whole_body_for_stream:
            if ex.script.fail_after_chunks is not None:
                return self._json(ex, 200, wire.error_body(self.kind, 502, request_id=ex.request_id))
            return await self._deliver(ex, wire.chat_completion(env, ex.script))
        return await self._stream(ex, env)

    async def _stream(self, ex: _Exchange, env: Envelope) -> web.StreamResponse:
        script = ex.script
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **self._headers(ex)}
        ex.response = response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(ex.request)
        comments = script.comments if script.comments is not None else int(self.kind == "openrouter")
        for _ in range(comments):
            await response.write(wire.COMMENT)
        if script.first_chunk_delay:
            await asyncio.sleep(script.first_chunk_delay)
        if script.malformed:
            await response.write(wire.MALFORMED_EVENT)
            await response.write(wire.DONE)
            return response
        chunks = wire.stream_chunks(env, script)
        for sent in range(len(chunks) + 1):
            if sent == script.fail_after_chunks:
                await response.write(wire.sse_event(wire.midstream_error(env, script)))
                return response
            await self._interrupt(ex, sent)
            if sent == script.malformed_after_chunks:
                await response.write(wire.MALFORMED_EVENT + wire.DONE)
                return response
            if script.oversized_event is not None and sent == script.oversized_event[0]:
                await response.write(wire.sse_event({"pad": "x" * script.oversized_event[1]}))
            if sent == len(chunks):
                break
            if sent and script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
            await response.write(wire.sse_event(chunks[sent]))
        if wire.wants_usage_chunk(env):
            await response.write(wire.sse_event(wire.usage_chunk(env, script)))
        await response.write(wire.DONE)
        return response

    async def _interrupt(self, ex: _Exchange, sent: int) -> None:
        """Apply the script's reset or stall once `sent` chunks are out."""
        if sent == ex.script.reset_after_chunks:
            self._reset(ex)
        if sent == ex.script.hang_after_chunks:
            await self._forever()

    @staticmethod
    def _reset(ex: _Exchange) -> NoReturn:
        assert ex.request.transport is not None
        assert ex.response is not None
        ex.request.transport.abort()
        raise _Answered(ex.response)

    async def _embeddings(self, ex: _Exchange, payload: Json) -> web.StreamResponse:
        texts = wire.embedding_texts(payload.get("input"))
        if texts is None:
            return self._error(ex, 400, "input must be a string, a list of strings or token arrays")
        if self.kind == "dashscope" and len(texts) > wire.DASHSCOPE_MAX_EMBEDDING_INPUTS:
            return self._error(ex, 400, "batch size is invalid, it should not be larger than 10")
        encoding = payload.get("encoding_format", "float")
        if encoding not in ("float", "base64") or (self.kind == "dashscope" and encoding != "float"):
            return self._error(ex, 400, f"encoding_format {encoding!r} is not supported")
        dimensions = payload.get("dimensions", 8)
        if not isinstance(dimensions, int) or dimensions <= 0:
            return self._error(ex, 400, "dimensions must be a positive integer")
        body = wire.embeddings_response(payload["model"], texts, dimensions, as_base64=encoding == "base64")
        return await self._deliver(ex, body)

    async def _deliver(self, ex: _Exchange, body: Json) -> web.StreamResponse:
        """Send a 200 JSON body; a reset or stall script cuts it after the headers and half the body."""
        data = json.dumps(body).encode()
        if ex.script.reset_after_chunks is None and ex.script.hang_after_chunks is None:
            return self._raw(ex, 200, data)
        ex.response = response = web.StreamResponse(status=200, headers=self._headers(ex))
        response.content_type = "application/json"
        response.content_length = len(data)
        await response.prepare(ex.request)
        await response.write(data[: len(data) // 2])
        if ex.script.reset_after_chunks is not None:
            self._reset(ex)
        await self._forever()
        return response

    def _response_id(self) -> str:
        if self.kind == "openrouter":
            return f"gen-{int(time.time())}-{secrets.token_urlsafe(15)}"
        return f"chatcmpl-{secrets.token_hex(12)}"

    def _headers(self, ex: _Exchange) -> dict[str, str]:
        return {"x-request-id": ex.request_id, **ex.script.headers}

    def _error(self, ex: _Exchange, status: int, message: str) -> web.Response:
        return self._json(ex, status, wire.error_body(self.kind, status, message, request_id=ex.request_id))

    def _json(self, ex: _Exchange, status: int, body: Json) -> web.Response:
        return self._raw(ex, status, json.dumps(body).encode())

    def _raw(self, ex: _Exchange, status: int, data: bytes) -> web.Response:
        headers = {"Content-Type": "application/json", **self._headers(ex)}
        return web.Response(status=status, body=data, headers=headers)

    @staticmethod
    async def _forever() -> None:
        await asyncio.get_running_loop().create_future()
