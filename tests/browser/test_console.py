"""The console in Chromium against a running gateway: sign in, see the traffic, manage keys, read records."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from playwright.sync_api import Page, expect

from llmgw.domain.keys import parse_key
from tests.auth_setup import ADMIN_KEY
from tests.browser.conftest import PRICED_MODEL, SEEDED_MODEL, Gateway, sign_in, signed_in, visit
from tests.fakes.upstream import Script

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
ERROR_MODEL = "local/llama"


def chat(gateway: Gateway, key: str = ADMIN_KEY, model: str = PRICED_MODEL) -> str:
    with gateway.client(key) as client:
        answer = client.chat.completions.create(model=model, messages=HELLO)
    return answer.id


# Signing in


def test_nothing_but_the_sign_in_form_shows_without_a_key(page: Page, gateway: Gateway) -> None:
    page.goto(f"{gateway.console_url}#/keys")

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Pages")).to_be_hidden()
    assert page.locator("table").count() == 0


def test_a_wrong_key_is_refused_in_words(page: Page, gateway: Gateway) -> None:
    sign_in(page, gateway, key="sk-llmgw-nosuchkey000-" + "x" * 43)

    expect(page.get_by_role("alert")).to_contain_text("The key was refused")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_an_inference_only_key_is_told_why_it_sees_nothing(page: Page, gateway: Gateway) -> None:
    created = gateway.admin_post("/admin/v1/keys", {"name": "inference only", "scopes": ["inference"]})

    sign_in(page, gateway, key=created["key"])

    expect(page.get_by_role("alert")).to_contain_text("neither the admin nor the usage:read scope")


def test_the_key_stays_in_the_tab_across_reloads_and_sign_out_forgets_it(
    page: Page, gateway: Gateway
) -> None:
    signed_in(page, gateway)
    assert page.evaluate("sessionStorage.getItem('llmgw.console.key')") == ADMIN_KEY

    page.reload()
    expect(page.locator("[data-loaded=overview]")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('llmgw.console.key')") is None


# Overview


def test_the_overview_charts_show_the_requests_made_through_the_sdk(page: Page, gateway: Gateway) -> None:
    made = [chat(gateway) for _ in range(3)]
    gateway.wait_until_listed(made[-1])
    today = gateway.admin_get("/admin/v1/usage", group_by="model", **{"from": _today(), "to": _today()})
    expected = next(row for row in today["data"] if row["model"] == PRICED_MODEL)

    signed_in(page, gateway)
    page.get_by_role("radio", name="Today").check()

    expect(page.locator("[data-loaded=overview]")).to_be_visible()
    expect(page.get_by_text(f"per hour of {_today()} (UTC)")).to_be_visible()
    requests_chart = page.locator("figure[data-chart=requests]")
    assert requests_chart.locator("rect.bar").count() == 24
    assert int(requests_chart.get_attribute("data-total") or 0) >= expected["requests"] >= 3
    hour = time.strftime("%H", time.gmtime())
    bar = requests_chart.locator("rect.bar").nth(int(hour))
    assert float(bar.get_attribute("data-value") or 0) >= 3
    assert float(page.locator("figure[data-chart=cost]").get_attribute("data-total") or 0) > 0
    model_row = page.locator("[data-breakdown=model] tr", has_text=PRICED_MODEL)
    expect(model_row).to_contain_text(str(expected["requests"]))
    expect(page.locator("[data-breakdown=provider] tr", has_text="dashscope")).to_be_visible()


def test_the_overview_of_30_days_reads_a_store_of_100_000_records_in_under_a_second(
    page: Page, gateway: Gateway
) -> None:
    signed_in(page, gateway)

    started = time.perf_counter()
    page.get_by_role("radio", name="30 days").check()
    # Today's overview was loaded already: done is when the 30 days' bars are drawn.
    expect(page.locator("figure[data-chart=requests] rect.bar")).to_have_count(30)
    expect(page.locator("[data-loaded=overview]")).to_be_visible()
    elapsed = time.perf_counter() - started

    seeded = page.locator("[data-breakdown=model] tr", has_text=SEEDED_MODEL)
    expect(seeded).to_contain_text("100,000")
    assert elapsed < 1.0, f"the 30-day overview took {elapsed:.2f} s"


def test_the_overview_fits_a_390_px_screen_without_sideways_scrolling(
    open_tab: Callable[..., Page], gateway: Gateway
) -> None:
    # Not `is_mobile`: a phone's browser would widen its layout viewport to fit, hiding an overflow.
    page = open_tab(viewport={"width": 390, "height": 844}, has_touch=True)
    signed_in(page, gateway)

    pages = [
        ("overview?period=30d", "overview"),
        ("requests", "requests"),
        ("spend", "spend"),
        ("keys", "keys"),
    ]
    for route, loaded in pages:
        visit(page, route, loaded)
        overflow = page.evaluate("document.documentElement.scrollWidth - 390")
        assert overflow <= 0, f"#/{route} is {overflow} px wider than the screen"
    visit(page, "overview?period=30d", "overview")
    chart = page.locator("figure[data-chart=requests]").bounding_box()
    assert chart is not None
    assert chart["x"] >= 0
    assert chart["x"] + chart["width"] <= 390


def test_times_are_shown_in_the_browsers_zone_and_named(
    open_tab: Callable[..., Page], gateway: Gateway
) -> None:
    page = open_tab(timezone_id="Asia/Tokyo")
    generation_id = chat(gateway)
    gateway.wait_until_listed(generation_id)
    signed_in(page, gateway)

    expect(page.locator("#zone")).to_have_text("Times: Asia/Tokyo · chart buckets: UTC")
    visit(page, f"requests/{generation_id}", "generation")
    created = gateway.admin_get(f"/v1/generation/{generation_id}")["generation"]["created_at"]
    tokyo_hour = (int(created[11:13]) + 9) % 24
    shown = re.compile(rf"Created .*\b{tokyo_hour:02d}:{created[14:16]}:.*\(Asia/Tokyo\)")
    expect(page.get_by_text(shown)).to_be_visible()


# Keys


def test_a_key_created_in_the_console_works_until_rotated_and_disabled(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    visit(page, "keys", "keys")

    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("browser key")
    dialog.get_by_label("Models").fill("dashscope/*")
    dialog.get_by_label("Requests per minute").fill("100")
    dialog.get_by_role("button", name="Create").click()
    first = page.locator("#secret").inner_text()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("dialog").get_by_role("status")).not_to_be_empty()
    page.get_by_role("button", name="Done").click()
    presented = parse_key(first)
    assert presented is not None, first
    row = page.locator(f"tr[data-key='{presented.public_id}']")
    expect(row).to_contain_text("dashscope/*")
    expect(row).to_contain_text("100 rpm")
    assert chat(gateway, first).startswith("gen-")
    with pytest.raises(openai.PermissionDeniedError):  # it may use dashscope's models only
        chat(gateway, first, model=ERROR_MODEL)

    row.get_by_role("button", name="Rotate").click()
    page.get_by_label("Seconds the old secret keeps working").fill("0")
    page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    second = page.locator("#secret").inner_text()
    page.get_by_role("button", name="Done").click()
    assert second != first
    assert chat(gateway, second).startswith("gen-")
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, first)

    row.get_by_role("button", name="Disable").click()
    page.get_by_role("dialog").get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(gateway, second)
    assert refused.value.status_code == 401


def test_a_key_is_edited_and_put_in_a_team_made_in_the_console(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    visit(page, "teams", "teams")
    page.get_by_role("button", name="Create team").click()
    page.get_by_role("dialog").get_by_label("Name").fill("search team")
    page.get_by_role("dialog").get_by_label("Budget (USD)").fill("5")
    page.get_by_role("dialog").get_by_label("Budget period").select_option("day")
    page.get_by_role("dialog").get_by_role("button", name="Create").click()
    team_row = page.locator("tr[data-team]", has_text="search team")
    expect(team_row).to_contain_text("$5.00 / day")
    created = gateway.admin_post("/admin/v1/keys", {"name": "to edit"})

    visit(page, "keys", "keys")
    row = page.locator(f"tr[data-key='{created['id']}']")
    row.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    team = dialog.get_by_label("Team").locator("option", has_text="search team").get_attribute("value")
    dialog.get_by_label("Team").select_option(team)
    dialog.get_by_label("usage:read").check()
    dialog.get_by_role("button", name="Save").click()

    expect(row).to_contain_text("search team")
    expect(row).to_contain_text("inference, usage:read")


def test_an_api_refusal_in_a_form_is_shown_in_words(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    visit(page, "keys", "keys")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("no scopes")
    dialog.get_by_label("inference").uncheck()
    dialog.get_by_role("button", name="Create").click()

    expect(dialog.get_by_role("alert")).to_contain_text("The gateway did not accept the request: scopes")
    expect(dialog.get_by_role("alert")).to_contain_text("HTTP 400")


# Requests


def test_the_requests_list_filters_by_status_and_model_and_opens_a_record(
    page: Page, gateway: Gateway
) -> None:
    gateway.run(_fail_next(gateway))
    with pytest.raises(openai.InternalServerError):
        chat(gateway, model=ERROR_MODEL)
    good = chat(gateway, model=ERROR_MODEL)
    gateway.wait_until_listed(good)
    signed_in(page, gateway)
    visit(page, "requests", "requests")

    page.get_by_label("Model").fill(ERROR_MODEL)
    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Filter").click()

    expect(page).to_have_url(re.compile(r"#/requests\?model=local%2Fllama&status=error"))
    rows = page.locator("tr[data-generation]")
    expect(rows.first).to_be_visible()
    assert all("error" in text and ERROR_MODEL in text for text in rows.all_inner_texts())
    failed_id = rows.first.get_attribute("data-generation")
    assert failed_id is not None
    assert failed_id != good

    rows.first.get_by_role("link").click()
    expect(page.locator("[data-loaded=generation]")).to_be_visible()
    expect(page.get_by_role("heading", name=failed_id)).to_be_visible()
    record = gateway.admin_get(f"/v1/generation/{failed_id}")["generation"]
    for name in ("id", "status", "model", "provider", "error_code", "latency_ms", "attempts", "created_at"):
        expect(page.locator(f"dd[data-field={name}]")).to_be_visible()
    expect(page.locator("dd[data-field=status]")).to_have_text("error")
    expect(page.locator("dd[data-field=error_code]")).to_have_text(str(record["error_code"]))
    expect(page.get_by_role("table").locator("tbody tr")).to_have_count(len(record["attempts"]))

    page.go_back()
    expect(page.locator("[data-loaded=requests]")).to_be_visible()
    expect(page.get_by_label("Status")).to_have_value("error")


def test_the_requests_list_pages_with_its_cursor(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    visit(page, f"requests?model={SEEDED_MODEL}", "requests")
    first_page = page.locator("tr[data-generation]").first.get_attribute("data-generation")

    page.get_by_role("link", name="Older requests").click()
    expect(page.locator("[data-loaded=requests]")).to_be_visible()
    expect(page.locator("tr[data-generation]").first).not_to_have_attribute(
        "data-generation", first_page or ""
    )
    page.get_by_role("link", name="Newest").click()

    expect(page.locator("tr[data-generation]").first).to_have_attribute("data-generation", first_page or "")


# Spend and health


def test_spend_shows_each_teams_budget_used_sorts_and_exports_csv(page: Page, gateway: Gateway) -> None:
    team = gateway.admin_post(
        "/admin/v1/teams", {"name": "budgeted", "budget_usd": 1, "budget_period": "month"}
    )
    member = gateway.admin_post("/admin/v1/keys", {"name": "member", "team_id": team["id"]})
    chat(gateway, member["key"])
    signed_in(page, gateway)
    visit(page, "spend", "spend")

    team_row = page.locator("[data-spend=teams] tbody tr", has_text="budgeted")
    used = float(team_row.locator("meter").get_attribute("value") or 0)
    assert 0 < used < 1
    expect(team_row).to_contain_text("of $1.00 / month")
    keys = page.locator("[data-spend=keys]")
    expect(keys.locator("tbody tr", has_text="seedkey0")).to_be_visible()
    keys.get_by_role("button", name="Name").click()
    expect(keys.get_by_role("columnheader", name="Name")).to_have_attribute("aria-sort", "ascending")
    names = keys.locator("tbody th").all_inner_texts()
    assert names == sorted(names, key=lambda name: name.casefold())
    with page.expect_download() as download:
        keys.get_by_role("button", name="Export keys as CSV").click()
    text = download.value.path().read_text()
    assert text.startswith("name,id,requests,total_tokens,cost_usd,")
    assert "seedkey0" in text


def test_a_custom_period_shows_one_bar_per_day(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    page.get_by_role("radio", name="Custom").check()
    page.get_by_label("First day (UTC)").fill("2026-01-30")
    page.get_by_label("Last day (UTC)").fill("2026-02-02")
    page.get_by_role("button", name="Show").click()

    expect(page).to_have_url(re.compile(r"period=custom&from=2026-01-30&to=2026-02-02"))
    expect(page.locator("figure[data-chart=requests] rect.bar")).to_have_count(4)
    expect(page.get_by_text("per UTC day, 2026-01-30 to 2026-02-02")).to_be_visible()


def test_health_shows_providers_and_the_store(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    visit(page, "health", "health")

    expect(page.locator("[data-status]")).to_have_text("ready")
    expect(page.locator("tr[data-provider=dashscope]")).to_contain_text("configured")
    expect(page.get_by_text("Record store")).to_be_visible()
    expect(page.get_by_text("Dropped records")).to_be_visible()


def test_a_usage_read_key_sees_reports_but_not_keys(page: Page, gateway: Gateway) -> None:
    created = gateway.admin_post("/admin/v1/keys", {"name": "reader", "scopes": ["usage:read"]})
    signed_in(page, gateway, key=created["key"])

    expect(page.get_by_role("link", name="Keys")).to_be_hidden()
    visit(page, "keys", "overview")  # an admin page falls back to the overview
    visit(page, "health", "health")
    expect(page.get_by_text("shown to admin keys only")).to_be_visible()


# Keyboard


def test_every_page_is_reached_and_used_from_the_keyboard(page: Page, gateway: Gateway) -> None:
    signed_in(page, gateway)
    page.reload()  # the focus starts at the top of the page
    expect(page.locator("[data-loaded=overview]")).to_be_visible()
    reached = []
    for _ in range(20):  # Tab through the page until the focus leaves it
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement === document.body"):
            break
        reached.append(
            page.evaluate("document.activeElement.textContent.trim() || document.activeElement.value")
        )
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", f"{reached[-1]!r} shows no focus"
    expected = [
        "Skip to content",
        "Overview",
        "Spend",
        "Keys",
        "Teams",
        "Requests",
        "Health",
        "Sign out",
        "7d",
    ]
    assert reached == expected  # the period is one radio group: one stop, arrows move in it
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("ArrowRight")
    expect(page.locator("figure[data-chart=requests] rect.bar")).to_have_count(30)
    expect(page.get_by_role("radio", name="30 days")).to_be_focused()

    page.get_by_role("link", name="Requests").focus()
    page.keyboard.press("Enter")
    expect(page.locator("[data-loaded=requests]")).to_be_visible()
    visit(page, "keys", "keys")
    page.get_by_role("button", name="Create key").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_role("dialog").get_by_label("Name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_role("button", name="Create key")).to_be_focused()


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


async def _fail_next(gateway: Gateway) -> None:
    gateway.fakes["local"].script(Script(status=500))
