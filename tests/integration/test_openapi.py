"""The OpenAPI document: valid OpenAPI 3.1, describing every route the REST app registers (and none it does
not), served at `/openapi.json` without a key, what the REST front really answers, and the same as what
the generator writes from the protos now."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from llmgw.infrastructure.rest.app import create_app
from llmgw.infrastructure.rest.openapi_document import PATH, render
from tests.auth_setup import (
    ADMIN,
    ADMIN_KEY,
    ALLOWED_MODEL,
    Authed,
    authed_gateway,
    bearer,
    call,
    new_key,
    new_team,
)
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running

DOCUMENT: dict[str, Any] = json.loads(PATH.read_text(encoding="utf-8"))
CHAT = {"model": ALLOWED_MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def authed(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Authed]:
    async with authed_gateway(fakes) as running:
        yield running


def assert_matches(answer: Any, component: str) -> None:
    """`answer` is valid against the document's schema `component` (refs resolved in the document)."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": DOCUMENT["components"]}
    jsonschema.Draft202012Validator(schema).validate(answer)


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


def test_the_checked_in_document_is_what_the_generator_writes_from_the_protos_now() -> None:
    assert PATH.read_text(encoding="utf-8") == render(), "run `tox -e proto` and commit openapi.json"


async def test_the_document_describes_every_route_the_rest_app_registers_and_no_other(gw: Running) -> None:
    # The console serves pages, not API routes; /metrics on the REST port is off by default.
    app = create_app(gw.gateway, max_body_bytes=1000, cors_origins=("*",), console_enabled=False)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in {"HEAD", "OPTIONS"}  # aiohttp's and CORS's
    }
    documented = {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert registered - documented == set(), "routes the document misses"
    assert documented - registered == set(), "documented routes the app does not have"


async def test_the_document_is_served_at_openapi_json_without_a_key(authed: Authed) -> None:
    status, answer = await call(authed.gw, "GET", "/openapi.json")
    assert status == 200
    assert answer == DOCUMENT


async def test_the_rest_fronts_answers_match_the_documents_schemas(authed: Authed) -> None:
    gw, admin = authed.gw, bearer(ADMIN_KEY)
    team = await new_team(gw)
    key = await new_key(gw, scopes=ADMIN, team_id=team, rpm=10, budget_usd=5.0, budget_period="day")
    assert_matches(key.body, "IssuedKey")
    user = bearer(key.text)
    answers = {
        "ApiKeyList": await call(gw, "GET", "/admin/v1/keys", headers=admin),
        "LimitUsage": await call(gw, "GET", f"/admin/v1/keys/{key.id}/usage", headers=admin),
        "TeamList": await call(gw, "GET", "/admin/v1/teams", headers=admin),
        "AuditList": await call(gw, "GET", "/admin/v1/audit", headers=admin),
        "llmgateway.v1.ListModelsResponse": await call(gw, "GET", "/v1/models", headers=user),
        "ChatCompletion": await call(gw, "POST", "/v1/chat/completions", headers=user, json=CHAT),
        "Embeddings": await call(
            gw, "POST", "/v1/embeddings", headers=user, json={"model": "local/embed", "input": "hi"}
        ),
        "Readiness": await call(gw, "GET", "/readyz", headers=admin),
    }
    generation_id = answers["ChatCompletion"][1]["id"]
    answers["GenerationAnswer"] = await call(gw, "GET", f"/v1/generation/{generation_id}", headers=user)
    answers["OpenRouterGenerationAnswer"] = await call(
        gw, "GET", f"/api/v1/generation?id={generation_id}", headers=user
    )
    for component, (status, answer) in answers.items():
        assert status == 200, (component, answer)
        assert_matches(answer, component)
    status, refused = await call(gw, "GET", "/v1/models")
    assert status == 401
    assert_matches(refused, "Error")
