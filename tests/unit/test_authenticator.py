"""The Authenticator over an in-memory store, with its clocks in the test's hands: the cache's TTL and
`forget`, one store read for many concurrent lookups, a store failure told from a bad key, a bounded
cache under a flood of unknown ids, last-used times, the operator's key, and constant-time checks."""

from __future__ import annotations

import asyncio
import hmac
import statistics
import time
from collections.abc import Mapping
from dataclasses import replace

import pytest

import llmgw.application.auth as auth_module
from llmgw.application.auth import CONFIG_ADMIN_ID, Authenticator
from llmgw.domain.errors import PermissionDenied, ServiceUnavailable, Unauthenticated
from llmgw.domain.keys import PREFIX, ApiKey, Scope, hash_secret, mint_key, parse_key
from llmgw.infrastructure.storage.memory import MemoryStore

PEPPER = b"p" * 32
ADMIN_KEY = "a" * 40
NOW = 1_700_000_000.0


class Clock:
    """Monotonic and wall time both moved by the test."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = NOW

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class CountingStore(MemoryStore):
    """Counts key reads; can be made to wait or fail."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None
        self.touched: list[dict[str, float]] = []

    async def get_key(self, public_id: str) -> ApiKey | None:
        self.reads.append(public_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return await super().get_key(public_id)

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        self.touched.append(dict(used))
        await super().touch_keys(used)


def authenticator(store: CountingStore, clock: Clock, **options: object) -> Authenticator:
    return Authenticator(
        store,
        pepper=PEPPER,
        admin_key=ADMIN_KEY,
        cache_ttl=5.0,
        clock=lambda: clock.mono,
        wall=lambda: clock.wall,
        **options,  # type: ignore[arg-type]
    )


async def stored_key(store: MemoryStore, **fields: object) -> tuple[str, ApiKey]:
    text, presented = mint_key()
    key = ApiKey(
        public_id=presented.public_id,
        name="unit",
        secret_hash=hash_secret(presented.secret, PEPPER),
        **fields,  # type: ignore[arg-type]
    )
    await store.put_key(key)
    return text, key


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


# Cache


async def test_a_disabled_key_works_from_the_cache_until_the_ttl_passes(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    assert (await auth.authenticate(text)).public_id == key.public_id
    await store.put_key(replace(key, disabled=True))  # changed elsewhere: this process was not told

    clock.advance(4.9)
    assert (await auth.authenticate(text)).public_id == key.public_id
    assert store.reads == [key.public_id]

    clock.advance(0.2)
    with pytest.raises(Unauthenticated) as refused:
        await auth.authenticate(text)
    assert refused.value.code == "invalid_api_key"
    assert refused.value.message == "This API key is disabled."
    assert store.reads == [key.public_id, key.public_id]


async def test_forget_makes_a_disabled_key_refused_at_once(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    await auth.authenticate(text)
    await store.put_key(replace(key, disabled=True))
    auth.forget(key.public_id)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(text)


async def test_forget_all_drops_every_cached_key(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    one, first = await stored_key(store)
    two, second = await stored_key(store)
    await auth.authenticate(one)
    await auth.authenticate(two)
    await store.delete_key(first.public_id)
    await store.delete_key(second.public_id)
    auth.forget_all()
    for text in (one, two):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(text)


async def test_an_unknown_id_is_cached_too(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    text, _ = mint_key()
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(text)
    assert len(store.reads) == 1


async def test_expiry_is_checked_against_the_wall_clock_even_from_the_cache(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, _ = await stored_key(store, expires_at=NOW + 1.0)
    await auth.authenticate(text)
    clock.advance(1.0)
    with pytest.raises(Unauthenticated) as refused:
        await auth.authenticate(text)
    assert refused.value.message == "This API key has expired."
    assert len(store.reads) == 1


async def test_many_concurrent_lookups_of_one_id_read_the_store_once(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    store.gate = asyncio.Event()
    waiting = [asyncio.create_task(auth.authenticate(text)) for _ in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    store.gate.set()
    found = await asyncio.gather(*waiting)
    assert {k.public_id for k in found} == {key.public_id}
    assert store.reads == [key.public_id]


async def test_a_caller_that_leaves_does_not_fail_the_others_waiting_on_the_same_read(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    store.gate = asyncio.Event()
    leaving = asyncio.create_task(auth.authenticate(text))
    staying = asyncio.create_task(auth.authenticate(text))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    store.gate.set()
    assert (await staying).public_id == key.public_id
    assert leaving.cancelled()
    assert store.reads == [key.public_id]


# Store failures


async def test_a_store_failure_is_service_unavailable_not_a_bad_key(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    store.failure = ConnectionError("store down")
    with pytest.raises(ServiceUnavailable) as failed:
        await auth.authenticate(text)
    assert failed.value.code == "key_store_unavailable"
    assert not isinstance(failed.value, Unauthenticated)
    # Not cached: the next call reads again, and succeeds once the store is back.
    store.failure = None
    assert (await auth.authenticate(text)).public_id == key.public_id
    assert store.reads == [key.public_id, key.public_id]


async def test_a_hanging_store_is_service_unavailable_after_the_store_timeout(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock, store_timeout=0.05)
    text, _ = await stored_key(store)
    store.gate = asyncio.Event()
    with pytest.raises(ServiceUnavailable):
        await auth.authenticate(text)


async def test_a_store_failure_does_not_lock_out_the_operator_key(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    store.failure = ConnectionError("store down")
    assert (await auth.authenticate(ADMIN_KEY)).public_id == CONFIG_ADMIN_ID
    assert await auth.is_admin(ADMIN_KEY)


async def test_is_admin_is_false_not_an_error_while_the_store_fails(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, _ = await stored_key(store, scopes=frozenset({Scope.ADMIN}))
    store.failure = ConnectionError("store down")
    assert not await auth.is_admin(text)


# A flood of unknown ids


async def test_a_flood_of_unknown_ids_does_not_grow_the_cache_beyond_its_bound(
    store: CountingStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "CACHE_MAX", 16)
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    await auth.authenticate(text)
    for _ in range(200):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(mint_key()[0])
        assert len(auth._cache) <= 16
    # A real key still gets in (read again if the flood pushed it out).
    assert (await auth.authenticate(text)).public_id == key.public_id
    assert len(auth._cache) <= 16


# Last-used times


async def test_last_used_times_are_written_by_flush_used(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    _, unused = await stored_key(store)
    await auth.authenticate(text)
    clock.advance(3.0)
    await auth.authenticate(text)
    await auth.authenticate(ADMIN_KEY)
    assert (await store.get_key(key.public_id)).last_used_at is None  # type: ignore[union-attr]

    await auth.flush_used()
    assert store.touched == [{key.public_id: NOW + 3.0}]  # the latest use; never the config admin key
    assert (await store.get_key(key.public_id)).last_used_at == NOW + 3.0  # type: ignore[union-attr]
    assert (await store.get_key(unused.public_id)).last_used_at is None  # type: ignore[union-attr]

    await auth.flush_used()  # nothing new: no write
    assert len(store.touched) == 1


async def test_a_refused_key_is_not_marked_used(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    text, _ = await stored_key(store, disabled=True)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(text)
    await auth.flush_used()
    assert store.touched == []


# The operator's admin key, scopes, auth off


async def test_the_configured_admin_key_is_accepted_and_near_misses_are_not(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    admin = await auth.admit(ADMIN_KEY, Scope.ADMIN)
    assert admin is not None
    assert admin.public_id == CONFIG_ADMIN_ID
    assert admin.can(Scope.INFERENCE)
    assert admin.can(Scope.USAGE_READ)
    for wrong in (ADMIN_KEY[:-1], ADMIN_KEY + "a", "b" * 40, ADMIN_KEY.upper(), f"Bearer {ADMIN_KEY}"):
        with pytest.raises(Unauthenticated) as refused:
            await auth.authenticate(wrong)
        assert refused.value.code == "invalid_api_key"


async def test_no_configured_admin_key_accepts_no_empty_one(store: CountingStore, clock: Clock) -> None:
    auth = Authenticator(store, pepper=PEPPER, clock=lambda: clock.mono, wall=lambda: clock.wall)
    for credential in ("", None, "x"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(credential)


async def test_admit_checks_the_scope(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    text, _ = await stored_key(store, scopes=frozenset({Scope.USAGE_READ}))
    assert await auth.admit(text, None) is not None
    assert await auth.admit(text, Scope.USAGE_READ) is not None
    for scope in (Scope.INFERENCE, Scope.ADMIN):
        with pytest.raises(PermissionDenied) as denied:
            await auth.admit(text, scope)
        assert denied.value.code == "permission_denied"


async def test_a_missing_key_is_told_apart(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock)
    for credential in (None, ""):
        with pytest.raises(Unauthenticated) as refused:
            await auth.admit(credential, Scope.INFERENCE)
        assert "Missing API key" in refused.value.message
    assert store.reads == []


async def test_with_auth_off_anyone_is_let_through(store: CountingStore, clock: Clock) -> None:
    auth = authenticator(store, clock, enabled=False)
    assert await auth.admit(None, Scope.ADMIN) is None
    assert await auth.admit("garbage", Scope.INFERENCE) is None
    assert await auth.is_admin(None)
    assert store.reads == []


# Constant time


async def test_a_presented_secret_is_compared_with_compare_digest(
    store: CountingStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    await auth.authenticate(text)  # cached: the spy sees only the comparison
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("llmgw.domain.keys.hmac.compare_digest", spy)
    wrong = f"{PREFIX}{key.public_id}-{'A' * 43}"
    with pytest.raises(Unauthenticated):
        await auth.authenticate(wrong)
    proven = parse_key(text)
    assert proven is not None
    # First the secret proven by the earlier call (kept with the cached key), then the stored hash.
    assert calls == [
        (proven.secret, "A" * 43),
        (hash_secret("A" * 43, PEPPER), key.secret_hash),
    ]

    calls.clear()
    with pytest.raises(Unauthenticated):
        await auth.authenticate("c" * 40)  # not one of ours: the operator's key is compared the same way
    assert calls


async def test_rejecting_a_wrong_secret_takes_as_long_however_much_of_it_matches(
    store: CountingStore, clock: Clock
) -> None:
    auth = authenticator(store, clock)
    text, key = await stored_key(store)
    await auth.authenticate(text)
    secret = text[len(PREFIX) + len(key.public_id) + 1 :]
    flip = {c: ("B" if c == "A" else "A") for c in set(secret)}
    none_match = f"{PREFIX}{key.public_id}-{''.join(flip[c] for c in secret)}"
    most_match = f"{PREFIX}{key.public_id}-{secret[:42]}{flip[secret[42]]}"
    assert text not in (none_match, most_match)

    async def reject(candidate: str) -> float:
        started = time.perf_counter()
        try:
            await auth.authenticate(candidate)
        except Unauthenticated:
            return time.perf_counter() - started
        raise AssertionError("accepted a wrong secret")

    for _ in range(200):  # warm up
        await reject(none_match)
        await reject(most_match)
    zero: list[float] = []
    many: list[float] = []
    for _ in range(3000):
        zero.append(await reject(none_match))
        many.append(await reject(most_match))
    ratio = statistics.median(many) / statistics.median(zero)
    assert 0.5 < ratio < 2.0, ratio


async def test_a_proven_previous_secret_stops_working_when_its_grace_ends_though_it_is_remembered(
    store: CountingStore, clock: Clock
) -> None:
    old_text, key = await stored_key(store)
    _, presented = mint_key()
    rotated = key.rotated(hash_secret(presented.secret, PEPPER), clock.wall, 2.0)
    await store.put_key(rotated)
    auth = authenticator(store, clock)  # its cache holds the key 5 s

    assert (await auth.authenticate(old_text)).public_id == key.public_id  # proven, and remembered
    clock.advance(1.0)
    assert (await auth.authenticate(old_text)).public_id == key.public_id
    clock.advance(1.5)  # past the grace, within the cache's TTL
    with pytest.raises(Unauthenticated):
        await auth.authenticate(old_text)
    assert store.reads == [key.public_id], "refused from the cache, by the grace's end alone"


async def test_only_the_proven_secret_skips_hashing_a_wrong_one_of_the_same_shape_is_refused(
    store: CountingStore, clock: Clock
) -> None:
    text, key = await stored_key(store)
    auth = authenticator(store, clock)
    await auth.authenticate(text)
    presented = parse_key(text)
    assert presented is not None
    near = presented.secret[:-1] + ("B" if presented.secret[-1] != "B" else "C")

    with pytest.raises(Unauthenticated):
        await auth.authenticate(f"{PREFIX}{key.public_id}-{near}")
    assert (await auth.authenticate(text)).public_id == key.public_id


async def test_a_forgotten_key_forgets_its_proven_secret(store: CountingStore, clock: Clock) -> None:
    text, key = await stored_key(store)
    auth = authenticator(store, clock)
    await auth.authenticate(text)
    await store.put_key(
        replace(key, secret_hash=hash_secret("x" * 43, PEPPER))
    )  # rotated elsewhere, no grace

    auth.forget(key.public_id)

    with pytest.raises(Unauthenticated):
        await auth.authenticate(text)
