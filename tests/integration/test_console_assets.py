"""The console's files on the REST port: served without a key, with strict headers, while every API call
still needs one; off with `console.enabled = false`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

import aiohttp
import pytest
from multidict import CIMultiDict

from llmgw.infrastructure.config.settings import ConsoleSettings
from llmgw.infrastructure.rest.console import ASSETS, CONTENT_SECURITY_POLICY
from tests.auth_setup import Authed, authed_gateway
from tests.fakes.upstream import FakeUpstream
from tests.harness import running_gateway, settings_for

SCRIPTS = sorted(path.name for path in ASSETS.glob("*.js"))


@pytest.fixture
async def authed(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Authed]:
    async with authed_gateway(fakes) as running:
        yield running


async def fetch(url: str, **headers: str) -> tuple[int, Mapping[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, CIMultiDict(response.headers), await response.read()


async def test_the_console_page_is_served_without_a_key_with_strict_headers(authed: Authed) -> None:
    status, headers, body = await fetch(f"{authed.gw.rest_url}/console/")

    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-cache"
    assert b'<script type="module" src="app.js"></script>' in body


async def test_the_bare_path_redirects_to_the_console(authed: Authed) -> None:
    status, headers, _ = await fetch(f"{authed.gw.rest_url}/console")

    assert status == 301
    assert headers["Location"] == "/console/"


@pytest.mark.parametrize(
    ("name", "content_type"), [*((name, "text/javascript") for name in SCRIPTS), ("style.css", "text/css")]
)
async def test_each_asset_has_its_content_type(authed: Authed, name: str, content_type: str) -> None:
    status, headers, body = await fetch(f"{authed.gw.rest_url}/console/{name}")

    assert status == 200
    assert headers["Content-Type"] == f"{content_type}; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert body == (ASSETS / name).read_bytes()


async def test_an_unchanged_asset_is_not_sent_again(authed: Authed) -> None:
    _, headers, _ = await fetch(f"{authed.gw.rest_url}/console/app.js")

    status, _, body = await fetch(
        f"{authed.gw.rest_url}/console/app.js", **{"If-None-Match": headers["ETag"]}
    )

    assert status == 304
    assert body == b""


def test_every_module_a_script_imports_is_a_console_file() -> None:
    for name in SCRIPTS:
        for imported in re.findall(r'from "\./([\w.-]+)"', (ASSETS / name).read_text()):
            assert (ASSETS / imported).is_file(), f"{name} imports {imported}, which is not there"


def test_the_page_has_no_inline_script_or_style_and_no_script_writes_html() -> None:
    """The CSP forbids them anyway; this says where, before a browser would."""
    page = (ASSETS / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert re.findall(r"\s(?:on\w+|style)=", page) == []
    for name in SCRIPTS:
        assert not re.search(
            r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", (ASSETS / name).read_text()
        )


@pytest.mark.parametrize("path", ["nothing.js", "../console.py", "%2e%2e/console.py", "sub/../../app.py"])
async def test_no_other_file_is_served(authed: Authed, path: str) -> None:
    status, _, body = await fetch(f"{authed.gw.rest_url}/console/{path}")

    assert status in (401, 404)
    assert b"import" not in body


async def test_the_api_the_console_calls_still_needs_a_key(authed: Authed) -> None:
    for path in ("/admin/v1/usage", "/admin/v1/generations", "/admin/v1/keys"):
        status, _, body = await fetch(f"{authed.gw.rest_url}{path}")
        assert status == 401, (path, body)


async def test_the_console_is_not_served_when_disabled(fakes: dict[str, FakeUpstream]) -> None:
    settings = replace(settings_for(fakes), console=ConsoleSettings(enabled=False))
    async with running_gateway(settings) as gw:
        for path in ("/console/", "/console/app.js", "/console"):
            status, _, _ = await fetch(f"{gw.rest_url}{path}")
            assert status == 404, path
