"""The `aiohttp` transport: aiohttp's `ClientSession`, for providers reached through a proxy or wherever
a full-featured client is preferred to the `fast` one.

Proxies come from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (`trust_env`), or from the provider's `proxy`
key, which wins (`""` means none). Bodies are decoded by the port's `BodyDecoder` rather than aiohttp's,
so both transports bound a compressed answer the same way.
"""

from __future__ import annotations

import asyncio
import io
import ssl

import aiohttp

from llmgw.infrastructure.providers.transport import (
    BodyDecoder,
    ReadsToTheEnd,
    TransportError,
    check_endpoint,
)

_USER_AGENT = "llmgw"
# aiohttp warns that writing a larger `bytes` body in one go may block the loop; it sends a BytesIO in pieces.
_LARGE_BODY = 1 << 20


class _Answer(ReadsToTheEnd):
    """aiohttp's response behind the `UpstreamResponse` port."""

    __slots__ = ("_decoder", "_done", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, max_response_bytes: int) -> None:
        self._response = response
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.headers.items()}
        self._decoder = BodyDecoder(self.headers.get("content-encoding", ""), max_response_bytes)
        self._done = False

    async def read(self, deadline: float | None = None) -> bytes:
        while not self._done:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self._response.content.readany()
            except aiohttp.ClientError as exc:
                raise TransportError(f"the connection broke ({exc})") from exc
            if not data:
                self._done = True
                return self._decoder.flush()
            decoded = self._decoder.decode(data)
            if decoded:
                return decoded
        return b""

    def release(self) -> None:
        if self._done:
            self._response.release()
        else:
            self._response.close()

    def close(self) -> None:
        self._response.close()


class AiohttpTransport:
    """One `ClientSession` per provider, at most `limit` connections; must be created inside the loop."""

    def __init__(
        self,
        base_url: str,
        *,
        limit: int,
        connect_timeout: float,
        headers: dict[str, str],
        max_response_bytes: int,
        proxy: str | None = None,
        keepalive: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        check_endpoint(base_url, headers)
        self._base = base_url.rstrip("/")
        self._proxy = proxy or None
        self._max_response_bytes = max_response_bytes
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=keepalive, ssl=ssl_context or True),
            headers={"User-Agent": _USER_AGENT, **headers},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
            auto_decompress=False,
            trust_env=proxy is None,  # an explicit proxy, or "" for none, overrides the environment
        )

    async def post(self, path: str, body: bytes) -> _Answer:
        if self._session.closed:
            raise TransportError("the transport is closed")
        data = io.BytesIO(body) if len(body) > _LARGE_BODY else body
        try:
            response = await self._session.post(self._base + path, data=data, proxy=self._proxy)
        except TimeoutError:
            raise  # the caller's deadline, or the connect timeout: both are time that ran out
        except aiohttp.ClientError as exc:
            raise TransportError(f"cannot reach the upstream ({exc})") from exc
        try:
            return _Answer(response, self._max_response_bytes)
        except BaseException:
            response.close()
            raise

    async def close(self) -> None:
        await self._session.close()
