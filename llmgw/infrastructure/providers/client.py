"""The OpenAI-compatible upstream client: a provider's requests over its transport, timeouts, error mapping."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import urllib.request
from array import array
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from llmgw.domain.catalog import ModelSpec
from llmgw.domain.chat import (
    ChatCompletion,
    ChatRequest,
    Embeddings,
    EmbeddingsRequest,
    JSONObject,
)
from llmgw.domain.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgw.domain.usage import Usage
from llmgw.infrastructure.config.settings import ProviderKind, ProviderSettings, TransportKind
from llmgw.infrastructure.config.validation import api_key_env_var
from llmgw.infrastructure.json_text import field_span
from llmgw.infrastructure.providers.aiohttp_transport import AiohttpTransport
from llmgw.infrastructure.providers.completion_chunks import completion_as_chunks
from llmgw.infrastructure.providers.dashscope import DashScopeQuirks
from llmgw.infrastructure.providers.fast_transport import FastTransport
from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks
from llmgw.infrastructure.providers.transport import Transport, TransportError, UpstreamResponse
from llmgw.infrastructure.providers.upstream_errors import error_from_event, error_from_status
from llmgw.infrastructure.sse import DONE, SSEDecoder, SSELineTooLong

log = logging.getLogger(__name__)

T = TypeVar("T")

_QUIRKS: Mapping[ProviderKind, OpenAIQuirks] = {
    ProviderKind.OPENAI: OpenAIQuirks(),
    ProviderKind.DASHSCOPE: DashScopeQuirks(),
    ProviderKind.OPENROUTER: OpenAIQuirks(),
}
# Kinds whose upstream refuses every call without a key (an `openai` kind may be a local server that needs none).
_KEYED_KINDS = frozenset({ProviderKind.DASHSCOPE, ProviderKind.OPENROUTER})
# Parallel sub-requests when an embeddings batch is split for an upstream's input limit.
_EMBEDDING_PARALLELISM = 4
# Below each provider's base_url.
_CHAT_PATH = "/chat/completions"
_EMBEDDINGS_PATH = "/embeddings"
_NO_ANSWER = "no answer within the time allowed"


def create_transport(settings: ProviderSettings) -> Transport:
    """The provider's transport, inside the running loop: `fast` unless configured otherwise or a proxy
    applies (the `fast` transport speaks to no proxy)."""
    headers = {"Content-Type": "application/json", **settings.headers}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    proxied = _proxied(settings)
    kind = settings.transport or (TransportKind.AIOHTTP if proxied else TransportKind.FAST)
    if kind is TransportKind.FAST and proxied:
        log.warning(
            "provider %s: a proxy applies to %s, so it uses the aiohttp transport",
            settings.name,
            settings.base_url,
        )
        kind = TransportKind.AIOHTTP
    common: dict[str, Any] = {
        "limit": settings.max_connections,
        "connect_timeout": settings.connect_timeout,
        "headers": headers,
        "max_response_bytes": settings.max_response_bytes,
    }
    if kind is TransportKind.AIOHTTP:
        return AiohttpTransport(settings.base_url, proxy=settings.proxy, **common)
    return FastTransport(settings.base_url, **common)


def _proxied(settings: ProviderSettings) -> bool:
    """Whether the provider's requests go through a proxy: its `proxy` key, else what aiohttp's
    `trust_env` would use: the environment's `HTTPS_PROXY`/`HTTP_PROXY`, unless `NO_PROXY` names the host."""
    if settings.proxy is not None:
        return bool(settings.proxy)
    parts = urlsplit(settings.base_url)
    if not urllib.request.getproxies().get(parts.scheme):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class OpenAICompatibleProvider:
    """A provider entry of any kind; the kind's quirks shape requests and read stream errors."""

    def __init__(self, settings: ProviderSettings, transport: Transport) -> None:
        self._settings = settings
        self._transport = transport
        self._quirks = _QUIRKS[settings.kind]

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def has_credentials(self) -> bool:
        return self._settings.has_credentials

    async def close(self) -> None:
        await self._transport.close()

    async def complete(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> ChatCompletion:
        self._require_key()
        body = self._json_object(
            await self._post(_CHAT_PATH, self._quirks.chat_body(model, request, stream=False), deadline)
        )
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        usage = body.get("usage")
        return ChatCompletion(
            body=body,
            usage=Usage.from_openai(usage) if isinstance(usage, dict) else None,
            finish_reason=str(first.get("finish_reason") or ""),
            upstream_id=str(body.get("id") or ""),
        )

    async def stream(
        self, model: ModelSpec, request: ChatRequest, *, deadline: float | None = None
    ) -> AsyncIterator[list[JSONObject]]:
        self._require_key()
        settings = self._settings
        loop = asyncio.get_running_loop()
        deadline = self._deadline(deadline)
        body = _json_body(self._quirks.chat_body(model, request, stream=True))
        first_byte = min(loop.time() + settings.first_token_timeout, deadline)
        response = await self._within(self._transport.post(_CHAT_PATH, body), first_byte, _NO_ANSWER)
        try:
            if response.status >= 400 or _is_json(response):
                yield await self._whole_answer_as_chunks(response, deadline)
                return
            decoder = SSEDecoder(settings.max_response_bytes)
            wait = settings.first_token_timeout
            while True:
                try:
                    data = await response.read(min(loop.time() + wait, deadline))
                except (TimeoutError, TransportError) as exc:
                    raise self._failure(exc, "the stream went silent") from exc
                wait = settings.idle_timeout
                try:
                    payloads = decoder.feed(data) if data else decoder.close()
                except SSELineTooLong as exc:
                    raise UpstreamUnavailable(f"{self.name}: {exc}.") from exc
                chunks: list[JSONObject] = []
                try:
                    for payload in payloads:
                        if payload == DONE:
                            if chunks:
                                yield chunks
                            await self._finish(response, loop.time() + settings.idle_timeout)
                            return
                        chunks.append(self._chunk(payload))
                except UpstreamError:
                    if chunks:
                        yield chunks  # what arrived before the error reaches the client first
                    raise
                if chunks:
                    yield chunks
                if not data:
                    raise UpstreamUnavailable(f"{self.name}: the stream ended before [DONE].")
        finally:
            response.close()  # a no-op once `_finish` gave the connection back

    async def _whole_answer_as_chunks(self, response: UpstreamResponse, deadline: float) -> list[JSONObject]:
        """A streaming request answered with one body: its error, or the completion as a stream."""
        raw = await self._within(response.read_all(), deadline, _NO_ANSWER)
        if response.status >= 400:
            raise self._status_error(response, raw)
        answer = self._json_object(raw)
        if answer.get("error"):
            raise error_from_event(answer["error"], provider=self.name, secret=self._settings.api_key)
        return completion_as_chunks(answer)

    async def embed(
        self, model: ModelSpec, request: EmbeddingsRequest, *, deadline: float | None = None
    ) -> Embeddings:
        self._require_key()
        deadline = self._deadline(deadline)
        quirks = self._quirks
        body = quirks.embeddings_body(model, request)
        inputs = body.get("input")
        if not quirks.supports_token_input and not _is_text_input(inputs):
            raise InvalidRequest(
                f"Provider '{self.name}' accepts only text input for embeddings.", param="input"
            )
        limit = quirks.max_embedding_inputs
        encode_base64 = request.encoding_format == "base64" and not quirks.supports_base64_embeddings
        if limit is not None and isinstance(inputs, list) and len(inputs) > limit:
            result = await self._embed_split(body, inputs, limit, deadline)
        else:
            raw = await self._post(_EMBEDDINGS_PATH, body, deadline)
            passed = None if encode_base64 else _passed_embeddings(raw)
            if passed is not None:
                return passed
            result = self._json_object(raw)
        if encode_base64:
            _encode_base64(result)
        usage = result.get("usage")
        return Embeddings(body=result, usage=Usage.from_openai(usage) if isinstance(usage, dict) else None)

    async def _embed_split(
        self, body: JSONObject, inputs: list[Any], limit: int, deadline: float
    ) -> JSONObject:
        """Split a batch the upstream would refuse, send the parts concurrently, merge in input order."""
        gate = asyncio.Semaphore(_EMBEDDING_PARALLELISM)

        async def part(start: int) -> JSONObject:
            async with gate:
                payload = {**body, "input": inputs[start : start + limit]}
                return self._json_object(await self._post(_EMBEDDINGS_PATH, payload, deadline))

        starts = range(0, len(inputs), limit)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(part(start)) for start in starts]
        except ExceptionGroup as failed:
            # One failed part fails the request with that part's own error, not a wrapper.
            first = next((e for e in failed.exceptions if isinstance(e, GatewayError)), None)
            if first is None:
                raise
            raise first from None
        data: list[Any] = []
        usage = Usage()
        for start, task in zip(starts, tasks, strict=True):
            result = task.result()
            for item in sorted(result.get("data") or [], key=lambda item: item.get("index", 0)):
                data.append({**item, "index": start + item.get("index", 0)})
            if isinstance(result.get("usage"), dict):
                usage = usage + Usage.from_openai(result["usage"])
        merged = tasks[0].result()
        merged["data"] = data
        merged["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}
        return merged

    def _require_key(self) -> None:
        """A provider of a kind that needs a key and has none answers at once, naming what to set,
        instead of sending a request the upstream can only refuse."""
        if not self._settings.api_key and self._settings.kind in _KEYED_KINDS:
            raise UpstreamUnavailable(
                f"{self.name}: no API key is configured; set {api_key_env_var(self.name)} "
                f"or llm.providers.{self.name}.api_key.",
                code="missing_credentials",
            )

    def _chunk(self, payload: bytes) -> JSONObject:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamUnavailable(f"{self.name}: the stream carried a chunk that is not JSON.") from exc
        if not isinstance(chunk, dict):
            raise UpstreamUnavailable(f"{self.name}: the stream carried a chunk that is not an object.")
        if "error" in chunk:  # checked first: this runs for every chunk of every stream
            error = self._quirks.stream_error(chunk, provider=self.name, secret=self._settings.api_key)
            if error is not None:
                raise error
        return chunk

    def _deadline(self, deadline: float | None) -> float:
        """This call's deadline: the provider's `timeout` from now, or the request's if that is sooner."""
        own = asyncio.get_running_loop().time() + self._settings.timeout
        return own if deadline is None or own < deadline else deadline

    async def _post(self, path: str, payload: JSONObject, deadline: float | None) -> bytes:
        """The answer's body, once its status says it is not an error; one deadline for the exchange."""
        deadline = self._deadline(deadline)
        status, headers, raw = await self._within(
            self._exchange(path, _json_body(payload)), deadline, _NO_ANSWER
        )
        if status >= 400:
            raise error_from_status(status, raw, headers, provider=self.name, secret=self._settings.api_key)
        return raw

    async def _exchange(self, path: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        response = await self._transport.post(path, body)
        try:
            raw = await response.read_all()
        except BaseException:
            response.close()  # a half-read answer (or a client that left) must not go back to the pool
            raise
        response.release()
        return response.status, response.headers, raw

    def _status_error(self, response: UpstreamResponse, raw: bytes) -> UpstreamError:
        return error_from_status(
            response.status, raw, response.headers, provider=self.name, secret=self._settings.api_key
        )

    def _json_object(self, raw: bytes) -> JSONObject:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamUnavailable(
                f"{self.name}: the upstream answered with a body that is not JSON."
            ) from exc
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"{self.name}: the upstream answered with JSON that is not an object.")
        return body

    async def _within(self, step: Awaitable[T], deadline: float, timed_out: str) -> T:
        """Await one step of an exchange by `deadline`."""
        try:
            async with asyncio.timeout_at(deadline):
                return await step
        except (TimeoutError, TransportError) as exc:
            raise self._failure(exc, timed_out) from exc

    def _failure(self, exc: TimeoutError | TransportError, timed_out: str) -> UpstreamError:
        """The one place where running out of time and a broken transport become domain errors."""
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"{self.name}: {timed_out}.")
        return UpstreamUnavailable(f"{self.name}: {exc}.")

    async def _finish(self, response: UpstreamResponse, deadline: float) -> None:
        """Read what follows [DONE] so the connection goes back to the pool instead of being closed."""
        try:
            await self._within(response.read_all(), deadline, "the stream did not end")
        except UpstreamError:
            return
        response.release()


def _is_json(response: UpstreamResponse) -> bool:
    return response.headers.get("content-type", "").lower().startswith("application/json")


def _passed_embeddings(raw: bytes) -> Embeddings | None:
    """The answer as text, its usage read without parsing the vectors; None if it does not look like an
    OpenAI embeddings object (it is then parsed, and judged, as any other answer)."""
    text = raw.strip()
    if not (text.startswith(b"{") and text.endswith(b"}") and b'"data":' in text):
        return None
    span = field_span(text, "usage")
    if span is None or not isinstance(span[2], dict):
        return None
    return Embeddings(body={}, usage=Usage.from_openai(span[2]), text=text)


def _is_text_input(inputs: Any) -> bool:
    return isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs))


def _encode_base64(result: JSONObject) -> None:
    """Encode float vectors the way OpenAI does for `base64`: little-endian float32, base64."""
    for item in result.get("data") or []:
        vector = item.get("embedding")
        if isinstance(vector, list):
            floats = array("f", vector)
            if sys.byteorder != "little":
                floats.byteswap()
            item["embedding"] = base64.b64encode(floats.tobytes()).decode("ascii")


def _json_body(payload: JSONObject) -> bytes:
    """The request's JSON for the upstream. orjson writes at most 255 levels of nesting; a client's body
    nested deeper (orjson reads up to 1024) is the client's error, not the gateway's."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise InvalidRequest(f"The request cannot be sent upstream as JSON: {exc}.") from exc
