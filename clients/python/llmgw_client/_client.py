"""`LLMGateway`: the client, and its resources shaped like the openai SDK's (`client.chat.completions`,
`client.embeddings`, `client.models`, `client.generations`, `client.admin`)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeAlias, overload

from grpclib.client import Channel

from llmgw_client import _convert, _requests
from llmgw_client._messages import v1
from llmgw_client._transport import NOT_GIVEN, AnswerStream, Backoff, Caller, NotGiven
from llmgw_client.admin import Admin
from llmgw_client.types import (
    ChatCompletion,
    ChatCompletionChunk,
    CreateEmbeddingResponse,
    Generation,
    Model,
    ModelList,
)

__all__ = ["ChatCompletionStream", "LLMGateway"]

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2

_SERVICE = "/llmgateway.v1.LLMGatewayService/"
_CHAT = _SERVICE + "CreateChatCompletion"
_CHAT_STREAM = _SERVICE + "CreateChatCompletionStream"
_EMBEDDINGS = _SERVICE + "CreateEmbeddings"
_LIST_MODELS = _SERVICE + "ListModels"
_GET_MODEL = _SERVICE + "GetModel"
_GET_GENERATION = _SERVICE + "GetGeneration"

#: A streamed chat answer: `async for chunk in stream`, `async with stream`, `await stream.close()`.
ChatCompletionStream: TypeAlias = AnswerStream[v1.ChatCompletionChunk, ChatCompletionChunk]
Headers: TypeAlias = Mapping[str, str] | None
Timeout: TypeAlias = float | NotGiven | None
Retries: TypeAlias = int | NotGiven


class LLMGateway:
    """An llmgw gateway over gRPC.

    `target` is `host:port` (default `LLMGW_TARGET`, else `localhost:50051`); `api_key` defaults to
    `LLMGW_API_KEY` (none: the gateway must run without keys). `tls`: True for the system's trust store,
    or an `ssl.SSLContext`. `timeout` (seconds, None for none) and `max_retries` apply to every call
    unless the call gives its own. Use it as `async with LLMGateway(...) as client:`, or call
    `await client.close()` when done. The connection opens at the first call.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        tls: bool | ssl.SSLContext = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        host, port = _host_port(target or os.environ.get("LLMGW_TARGET") or DEFAULT_TARGET)
        self._caller = Caller(
            lambda: Channel(host, port, ssl=tls or None),
            api_key=api_key if api_key is not None else os.environ.get("LLMGW_API_KEY"),
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            backoff=backoff,
        )
        self.chat = Chat(self._caller)
        self.embeddings = Embeddings(self._caller)
        self.models = Models(self._caller)
        self.generations = Generations(self._caller)
        self.admin = Admin(self._caller)

    async def close(self) -> None:
        """Close the connection; calls in flight fail (`await client.close()`, as with the openai SDK)."""
        self._caller.close()

    async def __aenter__(self) -> LLMGateway:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Chat:
    __slots__ = ("completions",)

    def __init__(self, caller: Caller) -> None:
        self.completions = Completions(caller)


class Completions:
    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: Literal[False] = False,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: Literal[True],
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletionStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: bool,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletion | ChatCompletionStream: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: bool = False,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletion | ChatCompletionStream:
        """A chat completion, as `openai`'s `chat.completions.create`: any OpenAI parameter as a keyword
        (those the proto does not model travel in its `extra`), `stream=True` for the answer as it comes.
        A stream is retried only until its first chunk."""
        body = _body(model=model, messages=list(messages), params=params, extra_body=extra_body)
        request = _requests.chat_request(body)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        if stream:
            return await self._caller.stream(
                _CHAT_STREAM, request, v1.ChatCompletionChunk, options, _convert.chat_chunk
            )
        reply, info = await self._caller.unary(_CHAT, request, v1.ChatCompletion, options)
        return _convert.chat_completion(reply, info)


class Embeddings:
    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def create(
        self,
        *,
        model: str,
        input: str | list[str] | list[int] | list[list[int]],
        encoding_format: Literal["float", "base64"] | NotGiven = NOT_GIVEN,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> CreateEmbeddingResponse:
        """Embeddings, as `openai`'s `embeddings.create`. Like the openai SDK, when no `encoding_format`
        is given the vectors travel as base64 and come back decoded into floats."""
        decode = isinstance(encoding_format, NotGiven)
        params["encoding_format"] = "base64" if decode else encoding_format
        body = _body(model=model, input=input, params=params, extra_body=extra_body)
        request = _requests.embeddings_request(body)
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_EMBEDDINGS, request, v1.CreateEmbeddingsResponse, options)
        return _convert.embeddings(reply, info, decode_base64=decode)


class Models:
    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def list(
        self, *, timeout: Timeout = NOT_GIVEN, max_retries: Retries = NOT_GIVEN, extra_headers: Headers = None
    ) -> ModelList:
        """The models this key may use."""
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _LIST_MODELS, v1.ListModelsRequest(), v1.ListModelsResponse, options
        )
        return _convert.model_list(reply, info)

    async def retrieve(
        self,
        model: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
    ) -> Model:
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(_GET_MODEL, v1.GetModelRequest(id=model), v1.Model, options)
        return _convert.model(reply, info)


class Generations:
    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def retrieve(
        self,
        generation_id: str,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: Retries = NOT_GIVEN,
        extra_headers: Headers = None,
    ) -> Generation:
        """The record of one request (what it cost, how it ended), by its generation id."""
        options = self._caller.options(timeout=timeout, max_retries=max_retries, extra_headers=extra_headers)
        reply, info = await self._caller.unary(
            _GET_GENERATION, v1.GetGenerationRequest(id=generation_id), v1.GetGenerationResponse, options
        )
        return _convert.generation(reply, info)


def _body(
    *, params: Mapping[str, Any], extra_body: Mapping[str, Any] | None, **fields: Any
) -> dict[str, Any]:
    """The OpenAI request body: the named fields, the parameters given (None ones left out, as not given)
    and `extra_body` over them."""
    body = fields | {key: value for key, value in params.items() if value is not None}
    if extra_body:
        body.update(extra_body)
    return body


def _host_port(target: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a bare host (port 50051)."""
    host, sep, port = target.rpartition(":")
    if not sep or "]" in port:
        return target.strip("[]"), 50051
    if not port.isdigit():
        raise ValueError(f"target must be host:port, got {target!r}")
    return host.strip("[]"), int(port)
