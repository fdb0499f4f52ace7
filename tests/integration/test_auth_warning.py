"""With auth off the gateway still starts, but says so loudly whenever a port it serves is reachable beyond
loopback: anyone there spends the providers' keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmgw.infrastructure.config.settings import NO_AUTH, AuthSettings, ListenAddress, Settings
from tests.harness import running_gateway, settings_for

WARNING = "auth.enabled is false and the gateway listens beyond loopback"


def _listening_on(host: str, auth: AuthSettings) -> Settings:
    settings = settings_for({}, auth=auth)
    address = ListenAddress(host, 0)
    return replace(
        settings,
        http=replace(settings.http, listen=address),
        grpc=replace(settings.grpc, listen=address),
    )


async def test_auth_off_on_every_interface_is_warned_about_at_start(caplog: pytest.LogCaptureFixture) -> None:
    async with running_gateway(_listening_on("0.0.0.0", NO_AUTH)):  # noqa: S104
        pass

    [warning] = [r for r in caplog.records if WARNING in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert "0.0.0.0:" in warning.getMessage()


async def test_auth_off_on_loopback_only_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    async with running_gateway(_listening_on("127.0.0.1", NO_AUTH)):
        pass

    assert not [r for r in caplog.records if WARNING in r.getMessage()]


async def test_auth_on_beyond_loopback_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    auth = AuthSettings(pepper="p" * 32)
    async with running_gateway(_listening_on("0.0.0.0", auth)):  # noqa: S104
        pass

    assert not [r for r in caplog.records if WARNING in r.getMessage()]
