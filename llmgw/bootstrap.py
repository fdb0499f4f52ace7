"""The composition root: settings in, one `Gateway` out, every resource closed on the way back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from llmgw.application.gateway import Gateway
from llmgw.application.recording import GenerationRecorder
from llmgw.application.routing import Router
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.providers.client import OpenAICompatibleProvider, create_pool
from llmgw.infrastructure.storage.factory import create_store


@asynccontextmanager
async def build_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Must run inside the event loop: sessions and the writer task belong to it."""
    async with AsyncExitStack() as stack:
        store = create_store(settings.storage.url)
        await store.open()
        stack.push_async_callback(store.close)
        recorder = GenerationRecorder(store, retention_days=settings.storage.retention_days)
        recorder.start()
        # Registered after the store, so it runs first: pending records are flushed before the store closes.
        stack.push_async_callback(recorder.stop)
        providers: dict[str, OpenAICompatibleProvider] = {}
        for name, provider_settings in settings.providers.items():
            provider = OpenAICompatibleProvider(provider_settings, create_pool(provider_settings))
            stack.push_async_callback(provider.close)
            providers[name] = provider
        yield Gateway(Router(settings.models, providers), recorder)
