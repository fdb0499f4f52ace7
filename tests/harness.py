"""A composed gateway on real sockets, pointed at fake upstreams: what integration and e2e tests drive."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from grpclib.client import Channel

from llmgw.application.gateway import Gateway
from llmgw.application.ports import GenerationStore
from llmgw.application.retries import RetryPolicy
from llmgw.bootstrap import build_gateway
from llmgw.domain.catalog import Capability, ModelSpec, Pricing
from llmgw.infrastructure.config.settings import (
    NO_AUTH,
    AuthSettings,
    GrpcSettings,
    HealthSettings,
    HttpSettings,
    ListenAddress,
    ProviderKind,
    ProviderSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.tracing import Tracing
from llmgw.serving import RunningFronts, serve_fronts
from tests.fakes.upstream import FakeUpstream

SECRETS = {
    "dashscope": "sk-dashscope-SECRET-0123456789",
    "openrouter": "sk-or-v1-SECRET-abcdefabcdef",
    "local": "sk-local-SECRET-42",
}
CHAT = frozenset({Capability.CHAT})
CHAT_PLUS = frozenset({Capability.CHAT, Capability.VISION, Capability.TOOLS})


ONE_ATTEMPT = RetryPolicy(max_attempts=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def catalog() -> tuple[ModelSpec, ...]:
    def model(
        model_id: str,
        caps: frozenset[Capability],
        *,
        upstream: str | None = None,
        pricing: Pricing | None = None,
    ) -> ModelSpec:
        provider, _, rest = model_id.partition("/")
        return ModelSpec(
            id=model_id,
            name=model_id,
            provider=provider,
            upstream_model=upstream or rest,
            capabilities=caps,
            pricing=pricing,
            owned_by=provider,
        )

    return (
        model(
            "dashscope/qwen-turbo", CHAT_PLUS, pricing=Pricing(prompt=0.5, completion=1.5, cached_prompt=0.1)
        ),
        model("dashscope/qwen3-think", CHAT | {Capability.REASONING}, upstream="qwen3-235b-a22b"),
        model("dashscope/qwen-vl-max", CHAT_PLUS),
        model("dashscope/text-embedding-v3", frozenset({Capability.EMBEDDINGS})),
        model("openrouter/openai/gpt-4o", CHAT_PLUS, pricing=Pricing(prompt=2.5, completion=10.0)),
        model("local/llama", CHAT_PLUS),
        model("local/embed", frozenset({Capability.EMBEDDINGS})),
        model("local/no-price", CHAT),
    )


def provider(name: str, kind: ProviderKind, fake: FakeUpstream, **overrides: Any) -> ProviderSettings:
    return replace(
        ProviderSettings(
            name=name,
            kind=kind,
            base_url=fake.base_url,
            api_key=SECRETS[name],
            timeout=10.0,
            connect_timeout=2.0,
            first_token_timeout=5.0,
            idle_timeout=5.0,
        ),
        **overrides,
    )


def settings_for(
    fakes: Mapping[str, FakeUpstream],
    *,
    storage_url: str = "memory://",
    timeouts: Mapping[str, Mapping[str, float]] | None = None,
    max_body_bytes: int = 1_000_000,
    retry: RetryPolicy = ONE_ATTEMPT,
    auth: AuthSettings = NO_AUTH,
) -> Settings:
    """Three providers, one of each kind, pointed at their fakes; every listener on a port of its own.

    One attempt per request unless `retry` says otherwise: most tests script one upstream answer per
    request and look at what the client gets from it (the chaos suite tests retries)."""
    kinds = {
        "dashscope": ProviderKind.DASHSCOPE,
        "openrouter": ProviderKind.OPENROUTER,
        "local": ProviderKind.OPENAI,
    }
    timeouts = timeouts or {}
    return Settings(
        providers={
            name: provider(name, kinds[name], fake, **timeouts.get(name, {})) for name, fake in fakes.items()
        },
        models=tuple(m for m in catalog() if m.provider in fakes),
        # Port 0: the gateway binds and reports the ports, so no other socket can take them in between.
        http=HttpSettings(listen=ListenAddress("127.0.0.1", 0), max_body_bytes=max_body_bytes),
        grpc=GrpcSettings(listen=ListenAddress("127.0.0.1", 0)),
        health=HealthSettings(listen=ListenAddress("127.0.0.1", 0)),
        storage=StorageSettings(url=storage_url, retention_days=30),
        server=ServerSettings(workers=1, shutdown_grace=2.0),
        retry=retry,
        auth=auth,
    )


@dataclass
class Running:
    settings: Settings
    gateway: Gateway
    fronts: RunningFronts
    channel: Channel

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.fronts.ports['http']}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.fronts.ports['health']}"

    @property
    def grpc(self) -> v1.LlmGatewayServiceStub:
        return v1.LlmGatewayServiceStub(self.channel)


@asynccontextmanager
async def running_gateway(
    settings: Settings, *, store: GenerationStore | None = None, tracing: Tracing | None = None
) -> AsyncIterator[Running]:
    """`llmgw serve` in this event loop: gRPC, REST and health around one gateway; `store` replaces the
    one `settings.storage` names (a fake, to see what is written)."""
    async with (
        build_gateway(settings, store=store, tracing=tracing) as gateway,
        serve_fronts(gateway, settings, "serve") as fronts,
    ):
        channel = Channel("127.0.0.1", fronts.ports["grpc"])
        try:
            yield Running(settings, gateway, fronts, channel)
        finally:
            channel.close()
