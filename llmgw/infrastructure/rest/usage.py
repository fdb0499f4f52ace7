"""`/admin/v1/usage` and `/admin/v1/generations`: usage reports from the rollups and the generations
listing over REST, as JSON or, with `Accept: text/csv`, as CSV.

These two read with `usage:read` as well as `admin` (who may read what is `Admin`'s rule): the edge lets
any valid key through to them (`OWN_RULE_PATHS`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

import orjson
from aiohttp import web

from llmgw.application.admin import Admin, Page
from llmgw.domain.errors import InvalidRequest, ServiceUnavailable
from llmgw.domain.generation import GenerationRecord
from llmgw.infrastructure.admin_json import COUNTER_FIELDS, DIMENSION_FIELDS, usage_report_json
from llmgw.infrastructure.rest.generations import record_json
from llmgw.infrastructure.rest.json_body import json_response
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY

USAGE_PATH = "/admin/v1/usage"
GENERATIONS_PATH = "/admin/v1/generations"
#: The admin routes any valid key may call: the use case decides what it may read.
OWN_RULE_PATHS = frozenset({USAGE_PATH, GENERATIONS_PATH})
#: The header of a CSV page that has a next one: its cursor (JSON says `next_cursor`).
NEXT_CURSOR_HEADER = "x-next-cursor"
# `record_json`'s fields, in its order: every record field.
_RECORD_COLUMNS = tuple(field.name for field in fields(GenerationRecord))


def _admin(request: web.Request) -> Admin:
    admin = request.app[GATEWAY].admin
    if admin is None:
        raise ServiceUnavailable("The admin API is not set up on this gateway.", code="admin_unavailable")
    return admin


def _wants_csv(request: web.Request) -> bool:
    return "text/csv" in request.headers.get("Accept", "")


def _text(request: web.Request, name: str) -> str:
    return request.query.get(name, "")


async def usage(request: web.Request) -> web.Response:
    """`?from=&to=` (UTC days, both included), `group_by=` (comma-separated: day, hour, key, team, model,
    provider; default day; empty: totals only), `key_id=&team_id=&model=&provider=` filters."""
    query = request.query
    report = await _admin(request).usage(
        request[CALLER],
        first_day=query.get("from") or None,
        last_day=query.get("to") or None,
        group_by=query.get("group_by"),
        key_id=_text(request, "key_id"),
        team_id=_text(request, "team_id"),
        model=_text(request, "model"),
        provider=_text(request, "provider"),
    )
    shown = usage_report_json(report)
    if not _wants_csv(request):
        return json_response(shown)
    columns = [DIMENSION_FIELDS[dimension] for dimension in report.group_by] + list(COUNTER_FIELDS)
    filename = f"usage-{shown['from']}-{shown['to']}.csv"
    return _csv(columns, shown["data"], filename)


async def generations(request: web.Request) -> web.Response:
    """`?key_id=&team_id=&model=&status=&from=&to=&limit=&after=`: newest first; `after` is the previous
    page's `next_cursor`."""
    page = await _admin(request).list_generations(
        request[CALLER],
        key_id=_text(request, "key_id"),
        team_id=_text(request, "team_id"),
        model=_text(request, "model"),
        status=_text(request, "status"),
        since=_text(request, "from") or None,
        until=_text(request, "to") or None,
        limit=_limit(request),
        after=_text(request, "after"),
    )
    if _wants_csv(request):
        return _generations_csv(page)
    return json_response(
        {
            "object": "list",
            "data": [record_json(record) for record in page.items],
            "has_more": bool(page.next_cursor),
            "next_cursor": page.next_cursor or None,
        }
    )


def _limit(request: web.Request) -> int | None:
    text = request.query.get("limit")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest("limit is a whole number.", param="limit") from None


def _generations_csv(page: Page[GenerationRecord]) -> web.Response:
    """One flat row per record, the columns of `record_json`: null as an empty cell, the attempts and
    limit scopes as JSON text."""
    rows = []
    for record in page.items:
        shown = record_json(record)
        shown["attempts"] = orjson.dumps(shown["attempts"]).decode()
        shown["limits"] = orjson.dumps(shown["limits"]).decode()
        rows.append(shown)
    response = _csv(_RECORD_COLUMNS, rows, "generations.csv")
    if page.next_cursor:
        response.headers[NEXT_CURSOR_HEADER] = page.next_cursor
    return response


def _csv(columns: Sequence[str], rows: Iterable[dict[str, Any]], filename: str) -> web.Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def routes() -> list[web.RouteDef]:
    return [web.get(USAGE_PATH, usage), web.get(GENERATIONS_PATH, generations)]
