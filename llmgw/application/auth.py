"""Who is calling: the one check both fronts make before anything else, and the rules on what a key may do.

A presented key is looked up by its public id (through a short in-process cache, so the hot path does no
store round trip), its secret's keyed hash compared in constant time, its state and scope checked. A key
changed by an admin call is dropped from this process's cache at once and, with `Revocations`, from every
other replica's; otherwise a change reaches other processes within `cache_ttl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

from llmgw.application.ports import KeyStore, Revocations
from llmgw.domain.errors import NotFound, PermissionDenied, ServiceUnavailable, Unauthenticated
from llmgw.domain.generation import GenerationRecord
from llmgw.domain.keys import ApiKey, Scope, hash_secret, parse_key

log = logging.getLogger(__name__)

#: The public id the operator's `auth.admin_key` goes by in logs, records and audit rows.
CONFIG_ADMIN_ID = "config"
#: Seconds between writes of the keys' last-used times (kept in memory meanwhile).
TOUCH_INTERVAL = 30.0
#: Public ids the cache holds at most; beyond, expired entries go, then all (an unknown-key flood).
CACHE_MAX = 50_000

_MISSING = (
    "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>' "
    "(gRPC: the same metadata)."
)
_INVALID = "Invalid API key."


def _unauthenticated(message: str) -> Unauthenticated:
    return Unauthenticated(message, code="invalid_api_key")


class Authenticator:
    """Keys in, the key's stored state out, or `Unauthenticated`. With `enabled` false every call is let
    through as nobody's (None)."""

    def __init__(
        self,
        store: KeyStore,
        *,
        pepper: bytes,
        enabled: bool = True,
        admin_key: str = "",
        cache_ttl: float = 5.0,
        store_timeout: float = 2.0,
        revocations: Revocations | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = enabled
        self._store = store
        self._pepper = pepper
        self._ttl = cache_ttl
        self._store_timeout = store_timeout
        self._clock = clock
        self._wall = wall
        self.revocations = revocations
        self._config_admin = (
            ApiKey(
                public_id=CONFIG_ADMIN_ID,
                name="auth.admin_key",
                secret_hash=hash_secret(admin_key, pepper),
                scopes=frozenset({Scope.ADMIN}),
            )
            if admin_key
            else None
        )
        self._cache: dict[str, _Cached] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._used: dict[str, float] = {}
        self._toucher: asyncio.Task[None] | None = None

    @property
    def pepper(self) -> bytes:
        return self._pepper

    async def admit(self, credential: str | None, scope: Scope | None) -> ApiKey | None:
        """The caller's key, if it is valid and has `scope` (None: any valid key); None when auth is off.
        401 for a missing, unknown, malformed, expired or disabled key, 403 for a key without the scope."""
        if not self.enabled:
            return None
        key = await self.authenticate(credential)
        if scope is not None:
            require(key, scope)
        return key

    async def is_admin(self, credential: str | None) -> bool:
        """Whether `credential` is a valid admin key (True for anyone while auth is off); never raises
        for a bad key."""
        if not self.enabled:
            return True
        try:
            key = await self.authenticate(credential)
        except (Unauthenticated, ServiceUnavailable):
            return False
        return key.can(Scope.ADMIN)

    async def authenticate(self, credential: str | None) -> ApiKey:
        if not credential:
            raise _unauthenticated(_MISSING)
        now = self._wall()
        presented = parse_key(credential)
        entry = None
        if presented is not None:
            entry = self._cache.get(presented.public_id)
            if entry is None or entry.until <= self._clock():
                await self._lookup(presented.public_id)
                entry = self._cache.get(presented.public_id)
        key = entry.key if entry is not None else None
        if key is None or presented is None:
            # Not one of ours: the operator's own admin key, or nothing.
            admin = self._config_admin
            if admin is not None and admin.matches(credential, self._pepper, now):
                return admin
            raise _unauthenticated(_INVALID)
        assert entry is not None, "a key came from the cache"
        if not self._verified(entry, presented.secret, now):
            raise _unauthenticated(_INVALID)
        if key.disabled:
            raise _unauthenticated("This API key is disabled.")
        if not key.usable(now):
            raise _unauthenticated("This API key has expired.")
        self._used[key.public_id] = now
        return key

    def _verified(self, entry: _Cached, secret: str, now: float) -> bool:
        """Whether `secret` is the cached key's. The secret last proven for it is kept with the entry
        (gone with it, at the TTL or a change): the same secret again is compared with it in constant
        time instead of being hashed again, which is most of what a key check costs."""
        key = entry.key
        assert key is not None
        proven = entry.secret
        if proven is not None and hmac.compare_digest(proven, secret):
            return entry.current or key.in_grace(now)
        current, previous = key.matched(secret, self._pepper)
        if current or previous:
            entry.secret, entry.current = secret, current
        return current or (previous and key.in_grace(now))

    async def _lookup(self, public_id: str) -> None:
        """Read the key into the cache (absent keys too); concurrent lookups of one key share one read."""
        # One store read per key however many requests wait on it, run apart from any of them, so that
        # a client that leaves does not fail the others.
        lookup = self._lookups.get(public_id)
        if lookup is None:
            lookup = asyncio.get_running_loop().create_task(self._fetch(public_id))
            lookup.add_done_callback(_retrieve)
            self._lookups[public_id] = lookup
        await asyncio.shield(lookup)

    async def _fetch(self, public_id: str) -> None:
        try:
            async with asyncio.timeout(self._store_timeout):
                key = await self._store.get_key(public_id)
        except Exception as exc:
            if self._lookups.get(public_id) is asyncio.current_task():
                del self._lookups[public_id]
            log.warning("key lookup failed: %s: %s", type(exc).__name__, exc)
            raise ServiceUnavailable(
                "The key store does not answer; retry shortly.", code="key_store_unavailable"
            ) from exc
        # Forgotten while it was read (an admin call changed it): the answer may be stale, so not cached,
        # and the request that asked is answered as for an unknown key (a changed key: retry).
        if self._lookups.get(public_id) is not asyncio.current_task():
            return
        del self._lookups[public_id]
        if len(self._cache) >= CACHE_MAX:
            self._evict()
        self._cache[public_id] = _Cached(self._clock() + self._ttl, key)

    def _evict(self) -> None:
        now = self._clock()
        for public_id in [p for p, entry in self._cache.items() if entry.until <= now]:
            del self._cache[public_id]
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()

    def forget(self, public_id: str) -> None:
        """Drop the key from this process's cache: its next use reads the store."""
        self._cache.pop(public_id, None)
        self._lookups.pop(public_id, None)

    def forget_all(self) -> None:
        """Drop every cached key (revocations may have been missed)."""
        self._cache.clear()
        self._lookups.clear()

    async def changed(self, public_id: str) -> None:
        """An admin call changed the key: forget it here, and tell the other replicas."""
        self.forget(public_id)
        if self.revocations is None:
            return
        try:
            await self.revocations.publish(public_id)
        except Exception as exc:  # noqa: BLE001  (the TTL still bounds how long other replicas keep it)
            log.warning(
                "could not broadcast the change of key %s: %s: %s", public_id, type(exc).__name__, exc
            )

    def start(self) -> None:
        """Write the keys' last-used times every `TOUCH_INTERVAL` seconds."""
        self._toucher = asyncio.get_running_loop().create_task(self._touch_forever())

    async def stop(self) -> None:
        toucher, self._toucher = self._toucher, None
        if toucher is not None:
            toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await toucher
        await self.flush_used()

    async def flush_used(self) -> None:
        used, self._used = self._used, {}
        used.pop(CONFIG_ADMIN_ID, None)
        if not used:
            return
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._store.touch_keys(used)
        except Exception as exc:  # noqa: BLE001  (last-used times are a convenience; the next flush has newer)
            log.warning("could not write keys' last-used times: %s: %s", type(exc).__name__, exc)

    async def _touch_forever(self) -> None:
        while True:
            await asyncio.sleep(TOUCH_INTERVAL)
            await self.flush_used()


class _Cached:
    """A key as read from the store (None: there is none) until `until` (monotonic), and the secret last
    proven to be its (`current`: its current secret, else its previous one)."""

    __slots__ = ("current", "key", "secret", "until")

    def __init__(self, until: float, key: ApiKey | None) -> None:
        self.until = until
        self.key = key
        self.secret: str | None = None
        self.current = False


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a lookup's failure seen even when every request waiting on it has gone."""
    if not task.cancelled():
        task.exception()


def require(key: ApiKey, scope: Scope) -> None:
    if not key.can(scope):
        raise PermissionDenied(f"This API key lacks the '{scope.value}' scope.", code="permission_denied")


def require_model(key: ApiKey | None, model_id: str) -> None:
    """403 for a key that may not use `model_id`, naming that model and no other."""
    if key is not None and not key.may_use(model_id):
        raise PermissionDenied(
            f"This API key may not use the model '{model_id}'.", code="permission_denied", param="model"
        )


def may_read(key: ApiKey | None, record: GenerationRecord) -> bool:
    """A record is the key's that made it, its team's keys' with `usage:read`, and admins'."""
    if key is None or Scope.ADMIN in key.scopes or record.key_id == key.public_id:
        return True
    return bool(record.team_id) and record.team_id == key.team_id and Scope.USAGE_READ in key.scopes


def hidden_generation(generation_id: str) -> NotFound:
    return NotFound(f"Generation '{generation_id}' not found.", code="generation_not_found", param="id")
