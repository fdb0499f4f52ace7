"""The gRPC reference row: a bare grpclib server with the gateway's betterproto2 messages and no upstream.
Chat calls get a prebuilt answer (streams: 20 chunks), which is what grpclib and betterproto2 alone cost.
A model whose name contains `paced` gets its chunks PACE_SECONDS apart, as the fake upstream paces them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import uvloop
from grpclib.server import Server

from benchmarks.upstream import CHUNKS, PACE_SECONDS, PROMPT_TOKENS
from llmgw.infrastructure.grpc.messages import v1

_CREATED = 1_760_000_000
_WORDS = [f" word{i}" for i in range(CHUNKS)]


def _usage() -> v1.Usage:
    return v1.Usage(
        prompt_tokens=PROMPT_TOKENS, completion_tokens=CHUNKS, total_tokens=PROMPT_TOKENS + CHUNKS
    )


def completion(model: str) -> v1.ChatCompletion:
    message = v1.ChatMessage(role="assistant", content="".join(_WORDS).strip())
    return v1.ChatCompletion(
        id="chatcmpl-bench0001",
        object="chat.completion",
        created=_CREATED,
        model=model,
        choices=[v1.Choice(index=0, message=message, finish_reason="stop")],
        usage=_usage(),
        system_fingerprint="fp_bench",
    )


def chunks(model: str) -> list[v1.ChatCompletionChunk]:
    found = []
    for i, word in enumerate(_WORDS):
        delta = v1.ChatMessage(role="assistant" if i == 0 else "", content=word)
        choice = v1.ChunkChoice(index=0, delta=delta, finish_reason="stop" if i == CHUNKS - 1 else None)
        found.append(
            v1.ChatCompletionChunk(
                id="chatcmpl-bench0001",
                object="chat.completion.chunk",
                created=_CREATED,
                model=model,
                choices=[choice],
                system_fingerprint="fp_bench",
            )
        )
    return found


class EchoService(v1.LlmGatewayServiceBase):
    def __init__(self) -> None:
        self._completions: dict[str, v1.ChatCompletion] = {}
        self._chunks: dict[str, list[v1.ChatCompletionChunk]] = {}

    async def create_chat_completion(self, message: v1.CreateChatCompletionRequest) -> v1.ChatCompletion:
        found = self._completions.get(message.model)
        if found is None:
            found = self._completions[message.model] = completion(message.model)
        return found

    async def create_chat_completion_stream(
        self, message: v1.CreateChatCompletionRequest
    ) -> AsyncIterator[v1.ChatCompletionChunk]:
        found = self._chunks.get(message.model)
        if found is None:
            found = self._chunks[message.model] = chunks(message.model)
        paced = "paced" in message.model
        for index, chunk in enumerate(found):
            if paced and index:
                await asyncio.sleep(PACE_SECONDS)
            yield chunk


async def serve(host: str, port: int) -> None:
    server = Server([EchoService()])
    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description="bare grpclib chat server, no upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
