"""The application layer alone, for instruction counts that machine noise does not move: N calls of
`create_embeddings` or `create_chat_completion` on a provider that answers at once.

    valgrind --tool=callgrind python -m benchmarks.app_layer 0 embed      # start-up only
    valgrind --tool=callgrind python -m benchmarks.app_layer 5000 embed   # (total - start-up) / 5000

Used to choose between two versions of the use cases: a run of `python -m benchmarks` measures the whole
request, this only what `llmgw/application` and `llmgw/domain` add to it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from llmgw.application.circuits import Circuits
from llmgw.application.gateway import Gateway, RequestContext
from llmgw.application.recording import GenerationRecorder
from llmgw.application.retries import RetryPolicy
from llmgw.application.routing import Router
from llmgw.domain.catalog import Capability, Deployment, ModelSpec
from llmgw.domain.chat import ChatCompletion, Embeddings, parse_chat_request, parse_embeddings_request
from llmgw.domain.generation import GenerationRecord
from llmgw.domain.usage import Usage


class Provider:
    name = "bench"
    has_credentials = True

    async def embed(self, model: Any, request: Any, *, deadline: float | None = None) -> Embeddings:
        body = {"object": "list", "data": [], "model": "embed"}
        return Embeddings(body=body, usage=Usage(prompt_tokens=8, total_tokens=8), text=None)

    async def complete(self, model: Any, request: Any, *, deadline: float | None = None) -> ChatCompletion:
        body = {"id": "up", "object": "chat.completion", "choices": []}
        usage = Usage(prompt_tokens=8, completion_tokens=9, total_tokens=17)
        return ChatCompletion(body=body, usage=usage, finish_reason="stop", upstream_id="up")


class _Store:
    """Keeps nothing: the recorder's writer is not started here, records only wait in memory."""

    async def put_many(self, records: Sequence[GenerationRecord]) -> None:
        return None


MODELS = (
    ModelSpec(
        id="bench/embed",
        name="embed",
        capabilities=frozenset({Capability.EMBEDDINGS}),
        deployments=(Deployment("bench", "embed"),),
    ),
    ModelSpec(
        id="bench/chat",
        name="chat",
        capabilities=frozenset({Capability.CHAT}),
        deployments=(Deployment("bench", "chat"),),
    ),
)


async def main(calls: int, kind: str) -> None:
    circuits = Circuits()
    router = Router(
        MODELS,
        {"bench": Provider()},  # type: ignore[dict-item]
        is_available=circuits.is_available,
        opened_first=circuits.opened_first,
        claim=circuits.claim,
    )
    recorder = GenerationRecorder(_Store())  # type: ignore[arg-type]
    gateway = Gateway(router, recorder, circuits=circuits, retry_policies={"bench": RetryPolicy()})
    embeddings = parse_embeddings_request({"model": "bench/embed", "input": "hello"})
    chat = parse_chat_request({"model": "bench/chat", "messages": [{"role": "user", "content": "hi"}]})
    for index in range(calls):
        if kind == "embed":
            await gateway.create_embeddings(embeddings, RequestContext("r"))
        else:
            await gateway.create_chat_completion(chat, RequestContext("r"))
        if index % 500 == 0:
            await asyncio.sleep(0)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "embed"))
