"""The OpenAI-compatible upstream client: one connection pool per provider, timeouts, error mapping."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
from array import array
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from llmgw.domain.catalog import ModelSpec
from llmgw.domain.chat import (
    ChatCompletion,
    ChatRequest,
    ChunkBatch,
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
from llmgw.infrastructure.config.settings import ProviderKind, ProviderSettings
from llmgw.infrastructure.json_text import field_span
from llmgw.infrastructure.providers.dashscope import DashScopeQuirks
from llmgw.infrastructure.providers.http import HTTPPool, Response, UpstreamConnectionError
from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks
from llmgw.infrastructure.providers.openrouter import OpenRouterQuirks
from llmgw.infrastructure.providers.sse import DONE, SSEDecoder
from llmgw.infrastructure.providers.upstream_errors import error_from_status

log = logging.getLogger(__name__)

_QUIRKS: Mapping[ProviderKind, OpenAIQuirks] = {
    ProviderKind.OPENAI: OpenAIQuirks(),
    ProviderKind.DASHSCOPE: DashScopeQuirks(),
    ProviderKind.OPENROUTER: OpenRouterQuirks(),
}
# Parallel sub-requests when an embeddings batch is split for an upstream's input limit.
_EMBEDDING_PARALLELISM = 4
# Below each provider's base_url.
_CHAT_PATH = "/chat/completions"
_EMBEDDINGS_PATH = "/embeddings"


def create_pool(settings: ProviderSettings) -> HTTPPool:
    """The provider's keep-alive connection pool; must be created inside the running loop."""
    headers = {"Content-Type": "application/json", **settings.headers}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    return HTTPPool(
        settings.base_url,
        limit=settings.max_connections,
        connect_timeout=settings.connect_timeout,
        headers=headers,
    )


class OpenAICompatibleProvider:
    """A provider entry of any kind; the kind's quirks shape requests and read stream errors."""

    def __init__(self, settings: ProviderSettings, pool: HTTPPool) -> None:
        self._settings = settings
        self._pool = pool
        self._quirks = _QUIRKS[settings.kind]

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def has_credentials(self) -> bool:
        return self._settings.has_credentials

    async def close(self) -> None:
        await self._pool.close()

    async def complete(self, model: ModelSpec, request: ChatRequest) -> ChatCompletion:
        body = await self._post_json(_CHAT_PATH, self._quirks.chat_body(model, request, stream=False))
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        usage = body.get("usage")
        return ChatCompletion(
            body=body,
            usage=Usage.from_openai(usage) if isinstance(usage, dict) else None,
            finish_reason=str(first.get("finish_reason") or ""),
            upstream_id=str(body.get("id") or ""),
        )

    async def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[ChunkBatch]:
        settings = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout
        body = _json_body(self._quirks.chat_body(model, request, stream=True))
        response = await self._send(
            _CHAT_PATH, body, min(loop.time() + settings.first_token_timeout, deadline)
        )
        try:
            await self._raise_for_status(response, deadline)
            decoder = SSEDecoder()
            wait = settings.first_token_timeout
            finished = False
            while not finished:
                data = await self._read(response, min(loop.time() + wait, deadline))
                wait = settings.idle_timeout
                batch = ChunkBatch()
                try:
                    for payload in decoder.feed(data) if data else decoder.close():
                        if payload == DONE:
                            finished = batch.final = True
                            break
                        batch.append(self._chunk(payload))
                except UpstreamError:
                    if batch:
                        yield batch  # what arrived before the error still reaches the client first
                    raise
                if batch:
                    yield batch
                if not data and not finished:
                    raise UpstreamUnavailable(f"{self.name}: the stream ended before [DONE].")
            await self._drain(response, loop.time() + settings.idle_timeout)
        finally:
            response.close()

    async def embed(self, model: ModelSpec, request: EmbeddingsRequest) -> Embeddings:
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
            result = await self._embed_split(body, inputs, limit)
        else:
            raw = await self._post(_EMBEDDINGS_PATH, body)
            passed = None if encode_base64 else _passed_embeddings(raw)
            if passed is not None:
                return passed
            result = self._json_object(raw)
        if encode_base64:
            _encode_base64(result)
        usage = result.get("usage")
        return Embeddings(body=result, usage=Usage.from_openai(usage) if isinstance(usage, dict) else None)

    async def _embed_split(self, body: JSONObject, inputs: list[Any], limit: int) -> JSONObject:
        """Split a batch the upstream would refuse, send the parts concurrently, merge in input order."""
        gate = asyncio.Semaphore(_EMBEDDING_PARALLELISM)

        async def part(start: int) -> JSONObject:
            async with gate:
                return await self._post_json(
                    _EMBEDDINGS_PATH, {**body, "input": inputs[start : start + limit]}
                )

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

    async def _post_json(self, path: str, payload: JSONObject) -> JSONObject:
        return self._json_object(await self._post(path, payload))

    async def _post(self, path: str, payload: JSONObject) -> bytes:
        """The answer's body, once its status says it is not an error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.timeout
        try:
            async with asyncio.timeout_at(deadline):  # one timer for the whole exchange
                response = await self._pool.post(path, _json_body(payload))
                try:
                    raw = await response.read_all()
                except BaseException:
                    response.close()  # a half-read answer (or a client that left) must not go back to the pool
                    raise
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.name}: no answer within the time allowed.") from exc
        except UpstreamConnectionError as exc:
            raise UpstreamUnavailable(f"{self.name}: the exchange failed ({exc}).") from exc
        response.release()
        if response.status >= 400:
            raise error_from_status(
                response.status, raw, response.headers, provider=self.name, secret=self._settings.api_key
            )
        return raw

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

    async def _send(self, path: str, body: bytes, deadline: float) -> Response:
        try:
            async with asyncio.timeout_at(deadline):
                return await self._pool.post(path, body)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.name}: no answer within the time allowed.") from exc
        except UpstreamConnectionError as exc:
            raise UpstreamUnavailable(f"{self.name}: cannot reach the upstream ({exc}).") from exc

    async def _raise_for_status(self, response: Response, deadline: float) -> None:
        if response.status < 400:
            return
        raw = await self._read_all(response, deadline)
        raise error_from_status(
            response.status, raw, response.headers, provider=self.name, secret=self._settings.api_key
        )

    async def _read(self, response: Response, deadline: float) -> bytes:
        try:
            # What already arrived needs no timer; most reads of a fast upstream are like that.
            data = response.read_nowait()
            if data or response.at_eof():
                return data
            async with asyncio.timeout_at(deadline):
                return await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.name}: the stream went silent.") from exc
        except UpstreamConnectionError as exc:
            raise UpstreamUnavailable(f"{self.name}: the connection broke mid-stream.") from exc

    async def _read_all(self, response: Response, deadline: float) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await response.read_all()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.name}: no answer within the time allowed.") from exc
        except UpstreamConnectionError as exc:
            raise UpstreamUnavailable(f"{self.name}: the connection broke ({exc}).") from exc

    async def _drain(self, response: Response, deadline: float) -> None:
        """Read what follows [DONE] so the connection goes back to the pool instead of being closed."""
        if not response.at_eof():
            try:
                async with asyncio.timeout_at(deadline):
                    await response.read_all()
            except (TimeoutError, UpstreamConnectionError):
                return
        response.release()


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
