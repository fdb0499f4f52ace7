"""`/admin/v1/…`: keys, teams, what they used of their limits, and the audit trail over REST (the edge
already checked the `admin` scope); usage reports and the generations listing are `usage`'s routes.

A created or rotated key's full text is in the answer's `key`, this once; listings are
`{"object": "list", "data": [...], "has_more": bool, "next_cursor": str | null}`, and the next page is
asked with `?after=<next_cursor>` (the audit trail: `?before=`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from llmgw.application.admin import ANONYMOUS_ACTOR, Admin, Page
from llmgw.domain.errors import InvalidRequest, ServiceUnavailable
from llmgw.infrastructure.admin_json import audit_json, key_json, team_json, usage_json
from llmgw.infrastructure.rest import usage
from llmgw.infrastructure.rest.json_body import json_response, read_json
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY

_ID = "{id:[^/:]+}"


def _admin(request: web.Request) -> tuple[Admin, str]:
    admin = request.app[GATEWAY].admin
    if admin is None:
        raise ServiceUnavailable("The admin API is not set up on this gateway.", code="admin_unavailable")
    caller = request[CALLER]
    return admin, caller.public_id if caller is not None else ANONYMOUS_ACTOR


async def _object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    return body


def _limit(request: web.Request) -> int | None:
    text = request.query.get("limit")
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest("limit is a whole number.", param="limit") from None


def _listing(page: Page[Any], render: Any) -> web.Response:
    return json_response(
        {
            "object": "list",
            "data": [render(item) for item in page.items],
            "has_more": bool(page.next_cursor),
            "next_cursor": page.next_cursor or None,
        }
    )


async def create_key(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    issued = await admin.create_key(actor, await _object(request))
    return json_response({**key_json(issued.key), "key": issued.text})


async def list_keys(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    page = await admin.list_keys(
        actor,
        after=request.query.get("after", ""),
        limit=_limit(request),
        team_id=request.query.get("team_id"),
    )
    return _listing(page, key_json)


async def get_key(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    return json_response(key_json(await admin.get_key(actor, request.match_info["id"])))


async def key_usage(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    usage = await admin.key_usage(actor, request.match_info["id"], request.app[GATEWAY].limiter)
    return json_response(usage_json(usage))


async def update_key(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    key = await admin.update_key(actor, request.match_info["id"], await _object(request))
    return json_response(key_json(key))


async def rotate_key(request: web.Request) -> web.Response:
    """Body (optional): `{"grace_seconds": N}`, how long the old secret still works (default
    `auth.rotation_grace`)."""
    admin, actor = _admin(request)
    body = await _object(request) if request.can_read_body else {}
    grace = body.pop("grace_seconds", None)
    if body:
        raise InvalidRequest(f"Unknown field '{next(iter(body))}'; expected grace_seconds.")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float))):
        raise InvalidRequest("grace_seconds is a number of seconds.", param="grace_seconds")
    issued = await admin.rotate_key(actor, request.match_info["id"], grace=grace)
    return json_response({**key_json(issued.key), "key": issued.text})


async def disable_key(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    return json_response(key_json(await admin.disable_key(actor, request.match_info["id"])))


async def delete_key(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    public_id = request.match_info["id"]
    await admin.delete_key(actor, public_id)
    return json_response({"id": public_id, "object": "api_key", "deleted": True})


async def create_team(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    return json_response(team_json(await admin.create_team(actor, await _object(request))))


async def list_teams(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    page = await admin.list_teams(actor, after=request.query.get("after", ""), limit=_limit(request))
    return _listing(page, team_json)


async def get_team(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    return json_response(team_json(await admin.get_team(actor, request.match_info["id"])))


async def team_usage(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    usage = await admin.team_usage(actor, request.match_info["id"], request.app[GATEWAY].limiter)
    return json_response(usage_json(usage))


async def update_team(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    team = await admin.update_team(actor, request.match_info["id"], await _object(request))
    return json_response(team_json(team))


async def delete_team(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    team_id = request.match_info["id"]
    await admin.delete_team(actor, team_id)
    return json_response({"id": team_id, "object": "team", "deleted": True})


async def list_audit(request: web.Request) -> web.Response:
    admin, actor = _admin(request)
    page = await admin.audit(actor, before=request.query.get("before", ""), limit=_limit(request))
    return _listing(page, audit_json)


def routes() -> list[web.RouteDef]:
    keys = "/admin/v1/keys"
    teams = "/admin/v1/teams"
    return [
        web.post(keys, create_key),
        web.get(keys, list_keys),
        web.get(f"{keys}/{_ID}", get_key),
        web.get(f"{keys}/{_ID}/usage", key_usage),
        web.patch(f"{keys}/{_ID}", update_key),
        web.delete(f"{keys}/{_ID}", delete_key),
        web.post(f"{keys}/{_ID}:rotate", rotate_key),
        web.post(f"{keys}/{_ID}:disable", disable_key),
        web.post(teams, create_team),
        web.get(teams, list_teams),
        web.get(f"{teams}/{_ID}", get_team),
        web.get(f"{teams}/{_ID}/usage", team_usage),
        web.patch(f"{teams}/{_ID}", update_team),
        web.delete(f"{teams}/{_ID}", delete_team),
        web.get("/admin/v1/audit", list_audit),
        *usage.routes(),
    ]
