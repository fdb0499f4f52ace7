"""A fast fake OpenAI upstream: raw asyncio protocol on uvloop, minimal HTTP/1.1 keep-alive parsing,
precomputed answers for chat JSON, chat SSE (20 chunks, a usage chunk, `[DONE]`) and 1536-dim embeddings.

`GET /stats` counts the requests it served, so the driver knows what reached the upstream; `POST /reset`
zeroes them. Streams come in one write (a burst), except for a model whose name contains `paced`: its
stream is paced as real upstreams send theirs, each chunk in a write of its own about 1 ms after the
previous one (the first with the headers; the usage chunk and `[DONE]` after the last, 1 ms apart too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

import orjson
import uvloop

_T = TypeVar("_T")
CHUNKS = 20
PACE_SECONDS = 0.001
EMBEDDING_DIMS = 1536
PROMPT_TOKENS = 12
_CREATED = 1_760_000_000
_WORDS = [f" word{i}" for i in range(CHUNKS)]
_MAX_HEAD = 65536
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}


def _head(status: int, content_type: str, extra: str) -> bytes:
    return f"HTTP/1.1 {status} {_STATUS_TEXT[status]}\r\nContent-Type: {content_type}\r\n{extra}\r\n".encode()


def json_answer(body: Any, status: int = 200) -> bytes:
    raw = orjson.dumps(body)
    return _head(status, "application/json", f"Content-Length: {len(raw)}\r\n") + raw


def _usage(completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_answer(model: str) -> bytes:
    message = {"role": "assistant", "content": "".join(_WORDS).strip(), "refusal": None}
    return json_answer(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(CHUNKS),
            "system_fingerprint": "fp_bench",
        }
    )


def _chunk(event: Any) -> bytes:
    return _chunk_raw(b"data: " + orjson.dumps(event) + b"\n\n")


def _chunk_raw(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def stream_parts(model: str) -> list[bytes]:
    """The SSE answer as HTTP chunks: headers, 20 content chunks, the usage chunk, `[DONE]` and the end."""
    base = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
    }
    parts = [_head(200, "text/event-stream", "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n")]
    for i, word in enumerate(_WORDS):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        last = i == CHUNKS - 1
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}
        parts.append(_chunk({**base, "system_fingerprint": "fp_bench", "choices": [choice]}))
    parts.append(_chunk({**base, "choices": [], "usage": _usage(CHUNKS)}))
    parts.append(_chunk_raw(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return parts


_VECTOR = [random.Random(1536).uniform(-0.1, 0.1) for _ in range(EMBEDDING_DIMS)]


def embeddings_answer(model: str, inputs: int) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": _VECTOR} for i in range(inputs)]
    tokens = 8 * inputs
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_answer({"object": "list", "data": data, "model": model, "usage": usage})


class Upstream:
    """Request counters and the answer cache shared by every connection."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("chat", "stream", "paced", "embeddings", "other"), 0)
        self._cache: dict[tuple[str, str, int], Any] = {}

    def answer(self, method: bytes, path: bytes, body: bytes) -> bytes | list[bytes]:
        """The bytes to send in one write, or the parts of a paced stream."""
        if path == b"/v1/chat/completions" and method == b"POST":
            return self._chat(body)
        if path == b"/v1/embeddings" and method == b"POST":
            return self._embeddings(body)
        self.counts["other"] += 1
        if path == b"/stats":
            counted = ("chat", "stream", "embeddings")
            return json_answer({**self.counts, "total": sum(self.counts[k] for k in counted)})
        if path == b"/reset" and method == b"POST":
            self.counts = dict.fromkeys(self.counts, 0)
            return json_answer({"reset": True})
        return json_answer({"error": {"message": "not found", "type": "not_found_error"}}, 404)

    def _chat(self, body: bytes) -> bytes | list[bytes]:
        request = _parse(body)
        if request is None:
            return json_answer({"error": {"message": "bad JSON", "type": "invalid_request_error"}}, 400)
        model = str(request.get("model", ""))
        if not request.get("stream"):
            self.counts["chat"] += 1
            return self._cached(("chat", model, 0), lambda: chat_answer(model))
        self.counts["stream"] += 1
        parts = self._cached(("stream", model, 0), lambda: stream_parts(model))
        if "paced" in model:
            self.counts["paced"] += 1
            return parts
        return self._cached(("joined", model, 0), lambda: b"".join(parts))

    def _embeddings(self, body: bytes) -> bytes:
        request = _parse(body)
        if request is None:
            return json_answer({"error": {"message": "bad JSON", "type": "invalid_request_error"}}, 400)
        self.counts["embeddings"] += 1
        model = str(request.get("model", ""))
        inputs = request.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        return self._cached(("embeddings", model, count), lambda: embeddings_answer(model, count))

    def _cached(self, key: tuple[str, str, int], build: Callable[[], _T]) -> _T:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = build()
        return cast("_T", found)


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return request if isinstance(request, dict) else None


class Pacer:
    """Writes the paced streams of every connection. On each tick of one shared PACE_SECONDS timer, each
    stream's next part goes out in a write of its own, once the previous part has drained (left the
    transport's buffer for the socket): no two parts reach the kernel together. One timer for every stream,
    rather than a sleep per part, keeps the upstream's own CPU near one `write` per part."""

    def __init__(self) -> None:
        self._streams: dict[asyncio.Transport, tuple[deque[bytes], Callable[[], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, transport: asyncio.Transport, parts: list[bytes], done: Callable[[], None]) -> None:
        """Pace `parts` on `transport` from the next tick on; `done()` once the last is written."""
        self._streams[transport] = (deque(parts), done)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(PACE_SECONDS, self._tick)

    def discard(self, transport: asyncio.Transport) -> None:
        self._streams.pop(transport, None)

    def _tick(self) -> None:
        self._timer = None
        finished: list[tuple[asyncio.Transport, Callable[[], None]]] = []
        for transport, (parts, done) in self._streams.items():
            if transport.is_closing() or transport.get_write_buffer_size():
                continue  # closing: dropped when the connection is lost; else not drained yet
            transport.write(parts.popleft())
            if not parts:
                finished.append((transport, done))
        for transport, done in finished:
            del self._streams[transport]
            done()  # may start the connection's next paced stream, and with it the timer
        if self._streams and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(PACE_SECONDS, self._tick)


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection: parse request heads and Content-Length bodies, answer in order."""

    def __init__(self, upstream: Upstream, pacer: Pacer) -> None:
        self._upstream = upstream
        self._pacer = pacer
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._pacing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not an asyncio subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._pacer.discard(self._transport)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        buffer = self._buffer
        while not self._pacing and self._transport is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    self._transport.close()
                return
            head = bytes(buffer[:end]).lower()
            length = _content_length(head)
            if length is None:
                self._transport.write(json_answer({"error": {"message": "length required"}}, 411))
                self._transport.close()
                return
            if len(buffer) < end + 4 + length:
                return
            body = bytes(buffer[end + 4 : end + 4 + length])
            del buffer[: end + 4 + length]
            method, path = _request_line(head)
            answer = self._upstream.answer(method.upper(), path.split(b"?", 1)[0], body)
            if isinstance(answer, list):
                # Headers and the first chunk at once: time to first byte is then the proxy's alone.
                self._transport.write(answer[0] + answer[1])
                self._pacing = True
                self._pacer.add(self._transport, answer[2:], self._paced)
            else:
                self._transport.write(answer)
            if b"\r\nconnection: close" in head:
                self._transport.close()

    def _paced(self) -> None:
        """The paced stream is written: answer the requests that came meanwhile."""
        self._pacing = False
        self._process()


def _content_length(head: bytes) -> int | None:
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        return None if b"\r\ntransfer-encoding:" in head else 0
    end = head.find(b"\r\n", start + 2)
    try:
        return int(head[start + 17 : end if end > 0 else len(head)])
    except ValueError:
        return None


def _request_line(head: bytes) -> tuple[bytes, bytes]:
    line = head.split(b"\r\n", 1)[0].split(b" ")
    return (line[0], line[1]) if len(line) >= 2 else (b"", b"")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    upstream, pacer = Upstream(), Pacer()
    server = await loop.create_server(lambda: UpstreamProtocol(upstream, pacer), host, port, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="fast fake OpenAI upstream for the benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
