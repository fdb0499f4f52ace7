"""The gRPC front: `LLMGatewayService` handlers translating protobuf onto the gateway's use cases."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from grpclib.const import Handler

from llmgw.application.gateway import Gateway, RequestContext
from llmgw.domain.chat import parse_chat_request, parse_embeddings_request
from llmgw.domain.keys import Scope
from llmgw.infrastructure.grpc.convert import (
    chat_request_to_json,
    embeddings_request_to_json,
    encode_chat_chunk,
    encode_chat_completion,
    encode_embeddings_response,
    model_to_proto,
)
from llmgw.infrastructure.grpc.errors import mapped_errors
from llmgw.infrastructure.grpc.generation import generation_to_proto
from llmgw.infrastructure.grpc.handlers import Gate, current_caller, with_ids
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.grpc.upb_codec import Encoded
from llmgw.infrastructure.limit_headers import admitted_headers
from llmgw.infrastructure.request_ids import (
    current_attempts,
    current_deadline,
    current_generation_id,
    current_limit_headers,
    current_request_id,
    current_trace_id,
)
from llmgw.infrastructure.tracing import tracing_of


class GatewayService(v1.LlmGatewayServiceBase):
    """Requests arrive as upb messages (the server's codec decodes them, see `upb_codec`), hence `Any` where a
    handler reads more than an `id`. Answers are encoded through upb and returned as `Encoded` bytes, which
    the codec sends unchanged; the casts tell the generated base class's signatures so."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def __mapping__(self) -> dict[str, Handler]:
        gate = Gate(self._gateway.auth, _scope, tracing_of(self._gateway.observers))
        return with_ids(self, super().__mapping__(), gate)

    async def list_models(self, message: v1.ListModelsRequest) -> v1.ListModelsResponse:
        models = self._gateway.list_models(current_caller.get())
        return v1.ListModelsResponse(object="list", data=[model_to_proto(m) for m in models])

    async def get_model(self, message: v1.GetModelRequest) -> v1.Model:
        with mapped_errors():
            return model_to_proto(self._gateway.get_model(message.id, current_caller.get()))

    async def create_chat_completion(self, message: Any) -> v1.ChatCompletion:
        with mapped_errors():
            request = parse_chat_request(chat_request_to_json(message), stream=False)
            ctx = _context()
            result = await self._gateway.create_chat_completion(request, ctx)
            current_generation_id.set(result.body["id"])
            current_attempts.set((ctx.attempts, ctx.provider))
            current_limit_headers.set(admitted_headers(ctx.limits))
            return cast(v1.ChatCompletion, encode_chat_completion(result.body))

    async def create_chat_completion_stream(self, message: Any) -> AsyncIterator[v1.ChatCompletionChunk]:
        with mapped_errors():
            request = parse_chat_request(chat_request_to_json(message), stream=True)
            ctx = _context()
            stream = self._gateway.stream_chat_completion(request, ctx)
            current_generation_id.set(stream.generation_id)
            announced = False
            async with contextlib.aclosing(stream):
                async for chunks in stream:
                    if not announced:  # the attempts are over once the first chunks came
                        current_attempts.set((ctx.attempts, ctx.provider))
                        current_limit_headers.set(admitted_headers(ctx.limits))
                        announced = True
                    for chunk in chunks:
                        yield cast(v1.ChatCompletionChunk, Encoded(encode_chat_chunk(chunk)))

    async def create_embeddings(self, message: Any) -> v1.CreateEmbeddingsResponse:
        with mapped_errors():
            request = parse_embeddings_request(embeddings_request_to_json(message))
            ctx = _context()
            result = await self._gateway.create_embeddings(request, ctx)
            current_generation_id.set(result.body["id"])
            current_attempts.set((ctx.attempts, ctx.provider))
            current_limit_headers.set(admitted_headers(ctx.limits))
            body = result.body if result.text is None else orjson.loads(result.text) | result.body
            return cast(v1.CreateEmbeddingsResponse, encode_embeddings_response(body))

    async def get_generation(self, message: v1.GetGenerationRequest) -> v1.GetGenerationResponse:
        with mapped_errors():
            record = await self._gateway.get_generation(message.id, current_caller.get())
            return v1.GetGenerationResponse(generation=generation_to_proto(record))


def _context() -> RequestContext:
    return RequestContext(
        request_id=current_request_id.get(),
        deadline=current_deadline.get(),
        key=current_caller.get(),
        front="grpc",
        trace_id=current_trace_id.get(),
    )


def _scope(rpc: str) -> Scope | None:
    """A generation is looked up with any valid key (who may read which is the use case's rule); every
    other RPC needs `inference`."""
    return None if rpc == "GetGeneration" else Scope.INFERENCE
