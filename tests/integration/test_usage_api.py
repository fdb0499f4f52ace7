"""The usage API and the generations listing over REST and gRPC (issue 16, point 3): sums equal the
records' to the micro-dollar, CSV on `Accept: text/csv`, bad parameters named, and who may read what:
admin everything, `usage:read` its own team's (or, in no team, its own key's), others nothing."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from grpclib import GRPCError, Status

from llmgw.domain.generation import GenerationRecord, GenerationStatus
from llmgw.domain.limits import usd_to_micros
from llmgw.domain.usage_report import GenerationQuery
from llmgw.infrastructure.grpc.messages import admin_v1
from tests.auth_setup import ADMIN_KEY, Authed, Issued, authed_gateway, bearer, call, new_key, new_team
from tests.fakes.upstream import FakeUpstream, Script

PRICED = "dashscope/qwen-turbo"
OTHER = "local/llama"


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


class Traffic:
    def __init__(self, authed: Authed, team: str, member: Issued, reader: Issued, outsider: Issued) -> None:
        self.authed = authed
        self.team = team
        self.member = member  # inference, in `team`
        self.reader = reader  # usage:read, in `team`
        self.outsider = outsider  # inference, in no team
        self.ids: list[str] = []


@pytest.fixture
async def traffic(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Traffic]:
    async with authed_gateway(fakes) as authed:
        gw = authed.gw
        team = await new_team(gw, "team-x")
        member = await new_key(gw, team_id=team, scopes=["inference"])
        reader = await new_key(gw, team_id=team, scopes=["inference", "usage:read"])
        outsider = await new_key(gw, scopes=["inference"])
        traffic = Traffic(authed, team, member, reader, outsider)
        for key, model in ((member, PRICED), (member, OTHER), (reader, PRICED), (outsider, PRICED)):
            status, body = await call(
                gw, "POST", "/v1/chat/completions", headers=bearer(key.text), json=chat(model)
            )
            assert status == 200, body
            traffic.ids.append(body["id"])
        fakes["local"].script(Script(status=500, error_body={"error": {"message": "boom"}}))
        status, body = await call(
            gw, "POST", "/v1/chat/completions", headers=bearer(member.text), json=chat(OTHER)
        )
        assert status == 502
        await gw.gateway.recorder.flush()
        (failed,) = await authed.store.list_generations(
            GenerationQuery(limit=10, status=GenerationStatus.ERROR)
        )
        traffic.ids.append(failed.id)
        yield traffic


def grpc_bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def today() -> str:
    return datetime.now(UTC).date().isoformat()


async def get(traffic: Traffic, path: str, key: str = ADMIN_KEY, accept: str = "") -> tuple[int, Any]:
    headers = bearer(key) | ({"Accept": accept} if accept else {})
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{traffic.authed.gw.rest_url}{path}", headers=headers) as response,
    ):
        if accept == "text/csv" and response.status == 200:
            assert response.headers["Content-Type"].startswith("text/csv")
            return response.status, await response.text()
        return response.status, await response.json()


async def records_of(traffic: Traffic) -> list[GenerationRecord]:
    return [await traffic.authed.gw.gateway.get_generation(generation_id) for generation_id in traffic.ids]


async def test_the_report_sums_equal_the_records_to_the_micro_dollar(traffic: Traffic) -> None:
    status, report = await get(traffic, f"/admin/v1/usage?from={today()}&to={today()}&group_by=model")
    assert status == 200, report
    records = await records_of(traffic)
    assert len(records) == 5
    assert report["object"] == "usage_report"
    assert report["group_by"] == ["model"]
    rows = {row["model"]: row for row in report["data"]}
    assert set(rows) == {PRICED, OTHER}
    for model, row in rows.items():
        mine = [r for r in records if r.model == model]
        assert row["requests"] == len(mine)
        assert row["errors"] == sum(r.status == "error" for r in mine)
        assert row["prompt_tokens"] == sum(r.prompt_tokens for r in mine)
        assert row["cost_micros"] == sum(usd_to_micros(r.cost_usd) for r in mine if r.cost_usd is not None)
        assert set(row) == {
            "model",
            "requests",
            "errors",
            "cancelled",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cost_usd",
            "cost_micros",
        }
    assert rows[PRICED]["cost_micros"] > 0
    assert report["totals"]["requests"] == 5
    assert report["totals"]["errors"] == 1

    status, by_key = await get(traffic, "/admin/v1/usage?group_by=key,day")
    assert status == 200
    counts = {row["key_id"]: row["requests"] for row in by_key["data"]}
    assert counts == {traffic.member.id: 3, traffic.reader.id: 1, traffic.outsider.id: 1}
    assert all(row["day"] == today() for row in by_key["data"])


async def test_csv_carries_the_same_numbers(traffic: Traffic) -> None:
    _, report = await get(traffic, "/admin/v1/usage?group_by=model")
    status, text = await get(traffic, "/admin/v1/usage?group_by=model", accept="text/csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [{k: str(v) for k, v in row.items()} for row in report["data"]] == rows
    status, listing = await get(traffic, "/admin/v1/generations?limit=100", accept="text/csv")
    assert status == 200
    assert len(list(csv.DictReader(io.StringIO(listing)))) == 5


async def test_the_listing_filters_and_pages_newest_first(traffic: Traffic) -> None:
    status, page = await get(traffic, "/admin/v1/generations?limit=2")
    assert status == 200, page
    assert page["object"] == "list"
    assert page["has_more"]
    ids = [g["id"] for g in page["data"]]
    while page["has_more"]:
        _, page = await get(traffic, f"/admin/v1/generations?limit=2&after={page['next_cursor']}")
        ids += [g["id"] for g in page["data"]]
    assert ids == sorted(traffic.ids, reverse=True)
    _, errors = await get(traffic, "/admin/v1/generations?status=error")
    assert [g["status"] for g in errors["data"]] == ["error"]
    _, mine = await get(traffic, f"/admin/v1/generations?key_id={traffic.member.id}&model={OTHER}")
    assert len(mine["data"]) == 2
    # `from` is included and `to` excluded, in any of the three forms.
    newest = await traffic.authed.gw.gateway.get_generation(ids[0])
    _, since = await get(traffic, f"/admin/v1/generations?from={newest.created_at}")
    assert [g["id"] for g in since["data"]] == [ids[0]]
    _, until = await get(traffic, f"/admin/v1/generations?from={today()}&to={newest.created_at}")
    assert [g["id"] for g in until["data"]] == ids[1:]
    _, future = await get(traffic, "/admin/v1/generations?from=2999-01-01T00:00:00Z")
    assert future["data"] == []


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("/admin/v1/usage?from=2026-13-01", "from"),
        ("/admin/v1/usage?from=2026-02-02&to=2026-02-01", "from"),
        ("/admin/v1/usage?from=2020-01-01&to=2026-01-01", "from"),
        ("/admin/v1/usage?group_by=week", "group_by"),
        ("/admin/v1/usage?group_by=day,hour", "group_by"),
        ("/admin/v1/generations?status=done", "status"),
        ("/admin/v1/generations?limit=0", "limit"),
        ("/admin/v1/generations?from=yesterday", "from"),
    ],
)
async def test_bad_parameters_are_refused_naming_them(traffic: Traffic, query: str, param: str) -> None:
    status, body = await get(traffic, query)
    assert status == 400, body
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"


async def test_a_usage_read_key_sees_its_own_team_only(traffic: Traffic) -> None:
    status, report = await get(traffic, "/admin/v1/usage?group_by=key", key=traffic.reader.text)
    assert status == 200, report
    assert {row["key_id"] for row in report["data"]} == {traffic.member.id, traffic.reader.id}
    _, listing = await get(traffic, "/admin/v1/generations?limit=100", key=traffic.reader.text)
    assert len(listing["data"]) == 4
    assert {g["team_id"] for g in listing["data"]} == {traffic.team}
    for query, param in (
        (f"/admin/v1/usage?key_id={traffic.outsider.id}", "key_id"),
        ("/admin/v1/usage?team_id=team-other", "team_id"),
        (f"/admin/v1/generations?key_id={traffic.outsider.id}", "key_id"),
    ):
        status, body = await get(traffic, query, key=traffic.reader.text)
        assert status == 403, body
        assert body["error"]["param"] == param


async def test_keys_without_usage_read_are_refused(traffic: Traffic) -> None:
    for path in ("/admin/v1/usage", "/admin/v1/generations"):
        status, body = await get(traffic, path, key=traffic.member.text)
        assert status == 403, body
        assert body["error"]["type"] == "permission_error"
    status, _ = await call(traffic.authed.gw, "GET", "/admin/v1/usage")
    assert status == 401


async def test_a_usage_read_key_in_no_team_reads_its_own_key_only(traffic: Traffic) -> None:
    gw = traffic.authed.gw
    loner = await new_key(gw, scopes=["inference", "usage:read"])
    status, body = await call(
        gw, "POST", "/v1/chat/completions", headers=bearer(loner.text), json=chat(PRICED)
    )
    assert status == 200
    await gw.gateway.recorder.flush()
    _, report = await get(traffic, "/admin/v1/usage?group_by=key", key=loner.text)
    assert [(row["key_id"], row["requests"]) for row in report["data"]] == [(loner.id, 1)]
    _, listing = await get(traffic, "/admin/v1/generations", key=loner.text)
    assert [g["id"] for g in listing["data"]] == [body["id"]]


async def test_the_grpc_twins_answer_the_same(traffic: Traffic) -> None:
    gw = traffic.authed.gw
    stub = admin_v1.AdminServiceStub(gw.channel, metadata=grpc_bearer(ADMIN_KEY))
    report = await stub.get_usage(admin_v1.GetUsageRequest(group_by="model"))
    _, rest = await get(traffic, "/admin/v1/usage?group_by=model")
    assert {row.model: (row.requests, row.cost_micros) for row in report.data} == {
        row["model"]: (row["requests"], row["cost_micros"]) for row in rest["data"]
    }
    assert report.totals is not None
    assert report.totals.requests == 5
    listing = await stub.list_generations(admin_v1.ListGenerationsRequest(limit=100))
    assert [g.id for g in listing.data] == sorted(traffic.ids, reverse=True)

    reader = admin_v1.AdminServiceStub(gw.channel, metadata=grpc_bearer(traffic.reader.text))
    scoped = await reader.get_usage(admin_v1.GetUsageRequest(group_by="key"))
    assert {row.key_id for row in scoped.data} == {traffic.member.id, traffic.reader.id}
    member = admin_v1.AdminServiceStub(gw.channel, metadata=grpc_bearer(traffic.member.text))
    with pytest.raises(GRPCError) as caught:
        await member.get_usage(admin_v1.GetUsageRequest())
    assert caught.value.status is Status.PERMISSION_DENIED
    with pytest.raises(GRPCError) as bad:
        await stub.get_usage(admin_v1.GetUsageRequest(group_by="week"))
    assert bad.value.status is Status.INVALID_ARGUMENT
