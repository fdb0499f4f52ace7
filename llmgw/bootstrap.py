"""The composition root: settings in, one `Gateway` out, every resource closed on the way back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import cast

from llmgw.application.admin import Admin
from llmgw.application.auth import Authenticator
from llmgw.application.circuits import Circuits
from llmgw.application.gateway import Gateway
from llmgw.application.limits import Limiter
from llmgw.application.ports import GenerationStore, KeyStore, LimitStore, Provider
from llmgw.application.recording import GenerationRecorder
from llmgw.application.retries import RetryPolicy
from llmgw.application.routing import Router
from llmgw.application.telemetry import Observer
from llmgw.domain.limits import NO_LIMITS, Limits, ScopeKind, micros_to_usd
from llmgw.domain.limits import Scope as LimitScope
from llmgw.infrastructure.config.settings import AuthSettings, Settings, StorageSettings
from llmgw.infrastructure.config.show import mask_url_password
from llmgw.infrastructure.limits.memory import MemoryLimitStore
from llmgw.infrastructure.metrics import BudgetOf, Metrics
from llmgw.infrastructure.providers.client import OpenAICompatibleProvider, create_transport
from llmgw.infrastructure.storage.errors import StoreUnavailable
from llmgw.infrastructure.storage.factory import create_store
from llmgw.infrastructure.tracing import Tracing, exporting_provider
from llmgw.infrastructure.tracing import enabled as tracing_enabled

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The gateway cannot start. The message says why in one line, safe to print (passwords masked)."""


@asynccontextmanager
async def build_gateway(
    settings: Settings,
    *,
    store: GenerationStore | None = None,
    providers: Mapping[str, Provider] | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[Gateway]:
    """Must run inside the event loop: transports and the writer task belong to it. `store` and
    `providers` replace what `settings.storage` and `settings.providers` would build (tests pass fakes);
    the gateway opens and closes a store it is given, and leaves given providers to their owner. `tracing`
    replaces what `settings.tracing` would build (tests pass one exporting to memory), and is left open.

    Raises `StartupError` when the store cannot be opened within `storage.timeout`. On the way out the
    last records get `storage.timeout` to be written and the store as long again to close, whatever it
    does; so the store adds at most twice `storage.timeout` to a shutdown."""
    check_auth(settings.auth)
    storage = settings.storage
    async with AsyncExitStack() as stack:
        store = store if store is not None else create_store(storage.url, timeout=storage.timeout)
        await open_store(store, storage)
        stack.push_async_callback(close_store, store, storage.timeout)
        recorder = GenerationRecorder(store, retention_days=storage.retention_days, timeout=storage.timeout)
        recorder.start()
        # Registered after the store, so it runs first: pending records are flushed before the store closes.
        stack.push_async_callback(recorder.stop, storage.timeout)
        if providers is None:
            built: dict[str, Provider] = {}
            for name, provider_settings in settings.providers.items():
                provider = OpenAICompatibleProvider(provider_settings, create_transport(provider_settings))
                stack.push_async_callback(provider.close)
                built[name] = provider
            providers = built
        auth = await stack.enter_async_context(_authenticator(settings, store))
        circuits = Circuits(failures=settings.circuit.failures, cooldown=settings.circuit.cooldown)
        router = Router(
            settings.models,
            providers,
            is_available=circuits.is_available,
            opened_first=circuits.opened_first,
            claim=circuits.claim,
        )
        limiter = await stack.enter_async_context(_limiter(settings, store))
        observers = await stack.enter_async_context(_observers(settings, router, tracing))
        gateway = Gateway(
            router,
            recorder,
            max_in_flight=settings.server.max_in_flight,
            provider_max_in_flight={name: p.max_in_flight for name, p in settings.providers.items()},
            circuits=circuits,
            retry_policies={name: _retry_policy(settings, name) for name in providers},
            auth=auth,
            admin=Admin(
                cast(KeyStore, store), auth, records=store, rotation_grace=settings.auth.rotation_grace
            ),
            limiter=limiter,
            observers=observers,
        )
        for observer in observers:
            if isinstance(observer, Metrics):
                observer.watch(gateway, _budget_reader(cast(KeyStore, store), limiter))
        try:
            yield gateway
        finally:
            # Reservations of the requests that ended are settled before the limit store closes.
            await gateway.settled()


@asynccontextmanager
async def _observers(
    settings: Settings, router: Router, tracing: Tracing | None
) -> AsyncIterator[tuple[Observer, ...]]:
    """Metrics (unless `metrics.enabled` is false) and traces (`tracing`, or when a collector is
    configured)."""
    built: list[Observer] = []
    async with AsyncExitStack() as stack:
        if settings.metrics.enabled:
            metrics = Metrics(settings.metrics, catalog=[model.id for model in router.models])
            stack.push_async_callback(metrics.stop)
            built.append(metrics)
        if tracing is not None:
            built.append(tracing)
        elif tracing_enabled(settings.tracing):
            tracing = Tracing(exporting_provider(settings.tracing), settings.tracing)
            stack.push_async_callback(tracing.close)
            built.append(tracing)
        yield tuple(built)


def _budget_reader(keys: KeyStore, limiter: Limiter) -> BudgetOf:
    """What the metrics' budget gauge reads: the budget left of the key, else of the team, with that id."""

    async def budget_of(owner: str) -> tuple[str, float] | None:
        key = await keys.get_key(owner)
        if key is not None and key.limits.tracks_budget:
            usage = await limiter.usage(LimitScope(ScopeKind.KEY, key.public_id, key.limits))
            return "key", micros_to_usd(usage.status.remaining_micros or 0)
        team = await keys.get_team(owner)
        if team is not None and team.limits.tracks_budget:
            usage = await limiter.usage(LimitScope(ScopeKind.TEAM, team.id, team.limits))
            return "team", micros_to_usd(usage.status.remaining_micros or 0)
        return None

    return budget_of


def check_auth(settings: AuthSettings) -> None:
    """Keys on need a pepper: without one no stored key could be checked (nor made)."""
    if settings.enabled and not settings.pepper:
        raise StartupError(
            "auth.pepper is required while auth.enabled is true: set a secret of 32+ characters "
            "(e.g. LLMGW_AUTH__PEPPER=$(openssl rand -base64 48)) and keep it, or every key stops working; "
            "or set auth.enabled = false to let anyone who reaches the ports spend"
        )


@asynccontextmanager
async def _authenticator(settings: Settings, store: GenerationStore) -> AsyncIterator[Authenticator]:
    """The key check, its last-used writer, and with `cache.redis_url` the revocations shared with every
    replica."""
    auth = Authenticator(
        cast(KeyStore, store),
        pepper=settings.auth.pepper.encode(),
        enabled=settings.auth.enabled,
        admin_key=settings.auth.admin_key,
        cache_ttl=settings.auth.cache_ttl,
        store_timeout=settings.storage.timeout,
    )
    async with AsyncExitStack() as stack:
        if settings.auth.enabled and settings.cache.redis_url:
            from llmgw.infrastructure.revocations import RedisRevocations

            revocations = RedisRevocations(
                settings.cache.redis_url, on_revoked=auth.forget, on_reconnected=auth.forget_all
            )
            try:
                await revocations.start()
            except Exception as exc:
                raise StartupError(f"cannot reach cache.redis_url: {type(exc).__name__}: {exc}") from exc
            stack.push_async_callback(revocations.stop)
            auth.revocations = revocations
        if settings.auth.enabled:
            auth.start()
            stack.push_async_callback(auth.stop)
        yield auth


@asynccontextmanager
async def _limiter(settings: Settings, store: GenerationStore) -> AsyncIterator[Limiter]:
    """Admission against limits: counters in Redis with `cache.redis_url` (every worker and replica
    shares them), else in this process; either way budget counters found missing are rebuilt from the
    generation records of `store`."""
    keys = cast(KeyStore, store)
    limits = settings.limits
    counters: LimitStore
    if settings.cache.redis_url:
        from llmgw.infrastructure.limits.redis import RedisLimitStore

        counters = RedisLimitStore(settings.cache.redis_url)
    else:
        counters = MemoryLimitStore()

    async def team_limits(team_id: str) -> Limits:
        team = await keys.get_team(team_id)
        return team.limits if team is not None else NO_LIMITS

    limiter = Limiter(
        counters,
        global_limits=limits.gateway,
        team_limits=team_limits,
        team_cache_ttl=settings.auth.cache_ttl,
        default_max_tokens=limits.default_max_tokens,
        on_budget_store_error=limits.on_store_error,
        on_rate_store_error=limits.on_store_error_rates,
        spend=store.spend,
    )
    try:
        yield limiter
    finally:
        await limiter.close()
        await counters.close()


def _retry_policy(settings: Settings, provider: str) -> RetryPolicy:
    """A provider's policy, with its own `timeout` as the deadline of the requests it is asked first."""
    configured = settings.providers.get(provider)
    if configured is None:  # a provider given to `build_gateway`, not built from settings
        return settings.retry
    return replace(configured.retry or settings.retry, timeout=configured.timeout)


async def open_store(store: GenerationStore, storage: StorageSettings) -> None:
    """Open `store` within `storage.timeout`, or raise `StartupError` naming `storage.url` (masked)."""
    where = f"cannot open the generation store at storage.url = {mask_url_password(storage.url)}"
    try:
        async with asyncio.timeout(storage.timeout):
            await store.open()
    except TimeoutError as exc:
        raise StartupError(f"{where}: no answer within storage.timeout ({storage.timeout:g} s)") from exc
    except StoreUnavailable as exc:
        raise StartupError(f"{where}: {exc}") from exc


async def close_store(store: GenerationStore, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await store.close()
    except TimeoutError:
        log.warning("the generation store did not close within storage.timeout (%g s); left open", within)
