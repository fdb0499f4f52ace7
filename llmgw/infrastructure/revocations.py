"""Key changes broadcast over Redis pub/sub (`cache.redis_url`): a key disabled, deleted, rotated or
re-scoped through one replica is dropped from every replica's cache at once, not after `auth.cache_ttl`.

Pub/sub keeps nothing for a subscriber that was away, so after a lost connection the subscriber
forgets every cached key (`on_reconnected`) before listening again: the next use of each reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "llmgw:keys:changed"
#: Seconds between tries while Redis does not answer.
RECONNECT_DELAY = 1.0


class RedisRevocations:
    def __init__(
        self,
        url: str,
        *,
        on_revoked: Callable[[str], None],
        on_reconnected: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._on_revoked = on_revoked
        self._on_reconnected = on_reconnected
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe; fails when Redis cannot be reached now (a replica that would miss revocations)."""
        await self._client.ping()
        self._listener = asyncio.get_running_loop().create_task(self._listen_forever())
        async with asyncio.timeout(5.0):
            await self._subscribed.wait()

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await self._client.aclose()

    async def publish(self, public_id: str) -> None:
        await self._client.publish(CHANNEL, public_id)

    async def _listen_forever(self) -> None:
        first = True
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if not first:
                        self._on_reconnected()
                    first = False
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_revoked(message["data"].decode(errors="replace"))
            except (RedisError, OSError) as exc:
                log.warning(
                    "key revocations: lost Redis (%s: %s); retrying, caches rely on auth.cache_ttl meanwhile",
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(RECONNECT_DELAY)
