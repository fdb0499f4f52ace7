"""The composition root: settings in, one `Gateway` out, every resource closed on the way back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

from llmgw.application.gateway import Gateway
from llmgw.application.ports import GenerationStore, Provider
from llmgw.application.recording import GenerationRecorder
from llmgw.application.routing import Router
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.providers.client import OpenAICompatibleProvider, create_transport
from llmgw.infrastructure.storage.factory import create_store


@asynccontextmanager
async def build_gateway(
    settings: Settings,
    *,
    store: GenerationStore | None = None,
    providers: Mapping[str, Provider] | None = None,
) -> AsyncIterator[Gateway]:
    """Must run inside the event loop: transports and the writer task belong to it. `store` and
    `providers` replace what `settings.storage` and `settings.providers` would build (tests pass fakes);
    the gateway opens and closes a store it is given, and leaves given providers to their owner."""
    async with AsyncExitStack() as stack:
        store = store if store is not None else create_store(settings.storage.url)
        await store.open()
        stack.push_async_callback(store.close)
        recorder = GenerationRecorder(store, retention_days=settings.storage.retention_days)
        recorder.start()
        # Registered after the store, so it runs first: pending records are flushed before the store closes.
        stack.push_async_callback(recorder.stop)
        if providers is None:
            built: dict[str, Provider] = {}
            for name, provider_settings in settings.providers.items():
                provider = OpenAICompatibleProvider(provider_settings, create_transport(provider_settings))
                stack.push_async_callback(provider.close)
                built[name] = provider
            providers = built
        yield Gateway(Router(settings.models, providers), recorder)
