"""Browser fixtures: one gateway (keys on, fake upstreams, a SQLite file already holding 100,000 records) on
an event loop of its own in a thread, and Playwright driving Debian's Chromium from the test thread, one
browser for all the tests of a module and a fresh context per test.

Module-scoped, not session-scoped: while Playwright's sync API runs, the main thread counts as running an
event loop, so the suite's async tests can only run once it has stopped.

A test that fails leaves `failure-1.png` (one per tab it opened), the page as it was, in its temporary
folder."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus
from llmgw.infrastructure.storage.sqlite import SQLiteStore
from tests.auth_setup import ADMIN_KEY, auth_settings
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

T = TypeVar("T")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Records written into the store before the gateway starts: the console must stay fast over them.
SEEDED_RECORDS = 100_000
SEEDED_MODEL = "seed/model"
#: A chat model each kind of test may use: priced, so requests cost something.
PRICED_MODEL = "dashscope/qwen-turbo"
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@dataclass
class Gateway:
    """The running gateway, and a way to run coroutines on its loop (the fakes live there too)."""

    gw: Running
    fakes: dict[str, FakeUpstream]
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return self.gw.rest_url

    @property
    def console_url(self) -> str:
        return f"{self.gw.rest_url}/console/"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def client(self, key: str = ADMIN_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=10.0)

    def admin_get(self, path: str, **params: str) -> Any:
        return self._admin("GET", f"{path}?{urllib.parse.urlencode(params)}")

    def admin_post(self, path: str, body: dict[str, Any]) -> Any:
        return self._admin("POST", path, body)

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One admin API call with the operator's key, from the test thread."""
        connection = http.client.HTTPConnection("127.0.0.1", self.gw.fronts.ports["http"], timeout=10)
        try:
            headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
            connection.request(method, path, None if body is None else json.dumps(body), headers)
            answer = connection.getresponse()
            shown = json.load(answer)
            assert answer.status == 200, shown
            return shown
        finally:
            connection.close()

    def wait_until_listed(self, generation_id: str) -> None:
        """Records reach the listing and the rollups from the recorder's writer within milliseconds."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            listed = self.admin_get("/admin/v1/generations", limit="20")["data"]
            if any(record["id"] == generation_id for record in listed):
                return
            time.sleep(0.02)
        raise AssertionError(f"{generation_id} was never listed")


def _seeded(count: int) -> list[GenerationRecord]:
    """`count` chat records over the last 30 days, one in ten an error; ids minted as the gateway does,
    so they sort by time."""
    rng = random.Random(17)
    now = time.time()
    records = []
    for i in range(count):
        created = now - 86400 * 29 - 3600 + (86400 * 29) * i / count
        failed = i % 10 == 0
        records.append(
            GenerationRecord(
                id=f"gen-{int(created * 1000):012x}{rng.getrandbits(64):016x}",
                request_id=f"req-seed-{i}",
                kind=GenerationKind.CHAT,
                model=SEEDED_MODEL,
                provider="seed",
                upstream_model="model",
                created_at=created,
                streamed=False,
                status=GenerationStatus.ERROR if failed else GenerationStatus.COMPLETED,
                prompt_tokens=0 if failed else 20,
                completion_tokens=0 if failed else 10,
                total_tokens=0 if failed else 30,
                cost_usd=None if failed else 0.00002,
                latency_ms=120.0,
                error_code="upstream_error" if failed else "",
                key_id=f"seedkey{i % 7}",
            )
        )
    return records


async def _seed(url: str) -> None:
    store = SQLiteStore(url)
    await store.open()
    try:
        records = _seeded(SEEDED_RECORDS)
        for at in range(0, len(records), 10_000):
            await store.put_many(records[at : at + 10_000])
    finally:
        await store.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()
    stack = AsyncExitStack()
    url = f"sqlite:///{tmp_path_factory.mktemp('console')}/llmgw.db"

    async def start() -> Gateway:
        fakes = {"dashscope": FakeUpstream("dashscope"), "local": FakeUpstream("openai")}
        for fake in fakes.values():
            await fake.start()
            stack.push_async_callback(fake.close)
        await _seed(url)
        settings = replace(settings_for(fakes, storage_url=url), auth=auth_settings())
        running = await stack.enter_async_context(running_gateway(settings))
        return Gateway(running, fakes, loop)

    try:
        started = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=120)
        yield started
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH: install Debian's (apt-get install chromium; .ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each phase's report on the test, for `page` to see whether the test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def open_tab(
    browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Page]]:
    """Opens fresh tabs (nothing in their sessionStorage), 1280 by 800 px unless `options` say otherwise
    (Playwright's context options); when the test fails, each leaves `failure-N.png` in its tmp_path."""
    contexts: list[BrowserContext] = []

    def open_one(**options: Any) -> Page:
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
        context.set_default_timeout(5000)
        contexts.append(context)
        return context.new_page()

    yield open_one
    failed = any(report.failed for report in request.node.stash.get(REPORTS, {}).values())
    for number, context in enumerate(contexts, 1):
        if failed:
            for tab in context.pages:
                tab.screenshot(path=tmp_path / f"failure-{number}.png", full_page=True)
        context.close()


@pytest.fixture
def page(open_tab: Callable[..., Page]) -> Page:
    return open_tab()


def sign_in(page: Page, gateway: Gateway, key: str = ADMIN_KEY) -> None:
    page.goto(gateway.console_url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def signed_in(page: Page, gateway: Gateway, key: str = ADMIN_KEY) -> None:
    """Signed in, and the overview loaded."""
    sign_in(page, gateway, key)
    expect(page.locator("[data-loaded=overview]")).to_be_visible()


def visit(page: Page, route: str, loaded: str) -> None:
    """Go to `#/route` as a link would, and wait until that page has its data (`data-loaded`)."""
    page.evaluate("route => { window.location.hash = route; }", f"#/{route}")
    expect(page.locator(f"[data-loaded={loaded}]")).to_be_visible()
