"""Keys on the REST front, through the official `openai` SDK and raw HTTP where the SDK cannot say it:
who gets in (401 otherwise), what a key may do (403), whose records it may read (404 otherwise), and that
nothing refused ever reaches an upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw.application.retries import RetryPolicy
from llmgw.domain.keys import Scope
from tests.auth_setup import (
    ADMIN,
    ADMIN_KEY,
    ALLOWED_MODEL,
    DISALLOWED_MODEL,
    INFERENCE,
    LOCAL_MODELS,
    LOCAL_ONLY,
    USAGE_READ,
    Authed,
    authed_gateway,
    bearer,
    call,
    disable,
    in_a_moment,
    malformed_keys,
    new_key,
    new_team,
    rotate,
    unknown_key,
    with_wrong_secret,
)
from tests.fakes.upstream import FakeUpstream, Script
from tests.harness import catalog, settings_for

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
CHAT_BODY = {"model": ALLOWED_MODEL, "messages": HELLO}
CATALOG_IDS = {model.id for model in catalog()}


@pytest.fixture
async def authed(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Authed]:
    async with authed_gateway(fakes) as running:
        yield running


@asynccontextmanager
async def sdk(authed: Authed, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key=key, base_url=f"{authed.gw.rest_url}/v1", max_retries=0, timeout=10.0
    ) as client:
        yield client


async def chat(authed: Authed, key: str, model: str = ALLOWED_MODEL) -> str:
    """A chat completion through the SDK; its generation id."""
    async with sdk(authed, key) as client:
        completion = await client.chat.completions.create(model=model, messages=HELLO)
    assert completion.id.startswith("gen-")
    return completion.id


def assert_sdk_error(
    exc: openai.APIStatusError, status: int, kind: str, code: str, *, message: str | None = None
) -> None:
    assert exc.status_code == status, exc.body
    assert exc.type == kind
    assert exc.code == code
    if message is not None:
        assert isinstance(exc.body, dict)
        assert exc.body["message"] == message


def assert_error(status: int, body: Any, expected_status: int, kind: str, code: str) -> None:
    assert status == expected_status, body
    assert body["error"]["type"] == kind
    assert body["error"]["code"] == code


def assert_unauthenticated(status: int, body: Any) -> None:
    assert_error(status, body, 401, "authentication_error", "invalid_api_key")


def assert_forbidden(status: int, body: Any) -> None:
    assert_error(status, body, 403, "permission_error", "permission_denied")


# Every kind of route the edge guards: inference, generation lookups, admin.
GUARDED = [
    ("POST", "/v1/chat/completions", CHAT_BODY),
    ("POST", "/v1/embeddings", {"model": "local/embed", "input": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{ALLOWED_MODEL}", None),
    ("GET", "/v1/generation/gen-0123456789abcdef", None),
    ("GET", "/api/v1/generation?id=gen-0123456789abcdef", None),
    ("GET", "/admin/v1/keys", None),
    ("POST", "/admin/v1/keys", {"name": "sneaky", "scopes": ADMIN}),
]


# Missing, malformed, unknown, wrong secret


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_no_key_at_all_is_refused_on_every_guarded_route(
    authed: Authed, method: str, path: str, body: Any
) -> None:
    status, answer = await call(authed.gw, method, path, json=body)
    assert_unauthenticated(status, answer)
    assert "Missing API key" in answer["error"]["message"]
    assert authed.sent_upstream() == 0
    assert await authed.store.list_keys() == []  # the admin POST made nothing


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer "}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"x-api-key": ""}],
    ids=["empty_bearer", "basic_auth", "empty_x_api_key"],
)
async def test_an_empty_or_non_bearer_credential_counts_as_none(
    authed: Authed, headers: dict[str, str]
) -> None:
    status, answer = await call(authed.gw, "POST", "/v1/chat/completions", headers=headers, json=CHAT_BODY)
    assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == 0


@pytest.mark.parametrize("kind", sorted(malformed_keys()))
async def test_a_malformed_key_is_refused(authed: Authed, kind: str) -> None:
    key = malformed_keys()[kind]
    async with sdk(authed, key) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
        with pytest.raises(openai.AuthenticationError) as listing:
            await client.models.list()
    for exc in (refused.value, listing.value):
        assert_sdk_error(exc, 401, "authentication_error", "invalid_api_key", message="Invalid API key.")
    status, answer = await call(
        authed.gw, "POST", "/v1/chat/completions", headers={"x-api-key": key}, json=CHAT_BODY
    )
    assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == 0


async def test_a_well_formed_key_in_no_store_is_refused(authed: Authed) -> None:
    async with sdk(authed, unknown_key()) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
    assert_sdk_error(
        refused.value, 401, "authentication_error", "invalid_api_key", message="Invalid API key."
    )
    assert authed.sent_upstream() == 0


async def test_a_real_public_id_with_a_wrong_secret_is_refused_and_the_real_key_still_works(
    authed: Authed,
) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE)
    forged = with_wrong_secret(key.text)
    async with sdk(authed, forged) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
    assert_sdk_error(
        refused.value, 401, "authentication_error", "invalid_api_key", message="Invalid API key."
    )
    status, answer = await call(authed.gw, "GET", "/v1/models", headers={"x-api-key": forged})
    assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == 0

    await chat(authed, key.text)
    assert authed.sent_upstream() == 1


async def test_a_valid_key_works_as_bearer_of_any_case_and_as_x_api_key(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE)
    for headers in ({"Authorization": f"bearer {key.text}"}, {"x-api-key": key.text}):
        status, answer = await call(
            authed.gw, "POST", "/v1/chat/completions", headers=headers, json=CHAT_BODY
        )
        assert status == 200, answer
        assert answer["model"] == ALLOWED_MODEL
    assert len(authed.fakes["local"].requests) == 2


# Expired, disabled, rotated


async def test_an_expired_key_is_refused(authed: Authed) -> None:
    expired = await authed.put_key(expires_at=time.time() - 1)
    async with sdk(authed, expired) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
    assert_sdk_error(refused.value, 401, "authentication_error", "invalid_api_key")
    assert authed.sent_upstream() == 0


async def test_a_key_made_to_expire_works_until_then_and_is_refused_after(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE, expires_at=in_a_moment(0.6))
    await chat(authed, key.text)
    assert authed.sent_upstream() == 1
    await asyncio.sleep(0.7)
    async with sdk(authed, key.text) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
    assert_sdk_error(refused.value, 401, "authentication_error", "invalid_api_key")
    assert authed.sent_upstream() == 1


async def test_a_disabled_key_is_refused_at_once(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE)
    await chat(authed, key.text)  # now in the cache
    await disable(authed.gw, key.id)
    async with sdk(authed, key.text) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
    assert_sdk_error(refused.value, 401, "authentication_error", "invalid_api_key")
    assert authed.sent_upstream() == 1


async def test_a_key_written_disabled_is_refused(authed: Authed) -> None:
    key = await authed.put_key(disabled=True)
    status, answer = await call(
        authed.gw, "POST", "/v1/chat/completions", headers=bearer(key), json=CHAT_BODY
    )
    assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == 0


async def test_a_rotated_key_old_secret_works_within_the_grace_and_not_after(
    fakes: dict[str, FakeUpstream],
) -> None:
    async with authed_gateway(fakes, cache_ttl=0.2) as authed:
        old = await new_key(authed.gw, scopes=INFERENCE)
        await chat(authed, old.text)
        new = await rotate(authed.gw, old.id, grace_seconds=0.5)
        assert new.id == old.id
        assert new.text != old.text
        assert new.body["previous_secret_valid_until"] is not None

        await chat(authed, old.text)  # within the grace
        await chat(authed, new.text)
        assert authed.sent_upstream() == 3

        await asyncio.sleep(0.7)
        async with sdk(authed, old.text) as client:
            with pytest.raises(openai.AuthenticationError) as refused:
                await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
        assert_sdk_error(refused.value, 401, "authentication_error", "invalid_api_key")
        assert authed.sent_upstream() == 3
        await chat(authed, new.text)
        assert authed.sent_upstream() == 4


async def test_a_rotation_without_grace_refuses_the_old_secret_at_once(authed: Authed) -> None:
    old = await new_key(authed.gw, scopes=INFERENCE)
    await chat(authed, old.text)
    new = await rotate(authed.gw, old.id, grace_seconds=0)
    status, answer = await call(
        authed.gw, "POST", "/v1/chat/completions", headers=bearer(old.text), json=CHAT_BODY
    )
    assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == 1
    await chat(authed, new.text)
    assert authed.sent_upstream() == 2


# Scopes


async def test_a_usage_read_key_may_not_chat_embed_nor_list_models(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=USAGE_READ)
    async with sdk(authed, key.text) as client:
        with pytest.raises(openai.PermissionDeniedError) as chat_refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError) as stream_refused:
            await client.chat.completions.create(model=ALLOWED_MODEL, messages=HELLO, stream=True)
        with pytest.raises(openai.PermissionDeniedError) as embed_refused:
            await client.embeddings.create(model="local/embed", input="hi")
        with pytest.raises(openai.PermissionDeniedError) as list_refused:
            await client.models.list()
    for exc in (chat_refused.value, stream_refused.value, embed_refused.value, list_refused.value):
        assert_sdk_error(
            exc,
            403,
            "permission_error",
            "permission_denied",
            message="This API key lacks the 'inference' scope.",
        )
    assert authed.sent_upstream() == 0


@pytest.mark.parametrize("scopes", [INFERENCE, USAGE_READ, [*INFERENCE, *USAGE_READ]])
async def test_a_key_without_admin_may_not_use_the_admin_api(authed: Authed, scopes: list[str]) -> None:
    key = await new_key(authed.gw, scopes=scopes)
    for method, path, body in [
        ("GET", "/admin/v1/keys", None),
        ("POST", "/admin/v1/keys", {"name": "escalated", "scopes": ADMIN}),
        ("POST", f"/admin/v1/keys/{key.id}:rotate", {"grace_seconds": 0}),
        ("POST", "/admin/v1/teams", {"name": "t"}),
        ("GET", "/admin/v1/audit", None),
    ]:
        status, answer = await call(authed.gw, method, path, headers=bearer(key.text), json=body)
        assert_forbidden(status, answer)
        assert answer["error"]["message"] == "This API key lacks the 'admin' scope."
    assert [k.public_id for k in await authed.store.list_keys()] == [key.id]
    assert authed.sent_upstream() == 0


async def test_an_admin_key_may_do_everything(authed: Authed) -> None:
    admin = await new_key(authed.gw, scopes=ADMIN)
    await chat(authed, admin.text)
    status, answer = await call(authed.gw, "GET", "/admin/v1/keys", headers=bearer(admin.text))
    assert status == 200, answer
    assert admin.id in {k["id"] for k in answer["data"]}


# Models


async def test_a_key_limited_to_some_models_is_refused_another_naming_only_that_model(authed: Authed) -> None:
    key = await new_key(authed.gw, scopes=INFERENCE, models=LOCAL_ONLY)
    async with sdk(authed, key.text) as client:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.chat.completions.create(model=DISALLOWED_MODEL, messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError) as stream_refused:
            await client.chat.completions.create(model=DISALLOWED_MODEL, messages=HELLO, stream=True)
        with pytest.raises(openai.PermissionDeniedError) as embed_refused:
            await client.embeddings.create(model="dashscope/text-embedding-v3", input="hi")
    for exc, model in [
        (refused.value, DISALLOWED_MODEL),
        (stream_refused.value, DISALLOWED_MODEL),
        (embed_refused.value, "dashscope/text-embedding-v3"),
    ]:
        assert_sdk_error(exc, 403, "permission_error", "permission_denied")
        assert isinstance(exc.body, dict)
        message = exc.body["message"]
        assert model in message
        assert not [other for other in CATALOG_IDS - {model} if other in message], message
        assert "local/*" not in message
        assert exc.body["param"] == "model"
    assert authed.sent_upstream() == 0

    await chat(authed, key.text, ALLOWED_MODEL)
    assert len(authed.fakes["local"].requests) == 1
    assert authed.sent_upstream() == 1


async def test_models_are_listed_and_shown_only_as_the_key_may_use_them(authed: Authed) -> None:
    limited = await new_key(authed.gw, scopes=INFERENCE, models=LOCAL_ONLY)
    everything = await new_key(authed.gw, scopes=INFERENCE)
    async with sdk(authed, limited.text) as client:
        listed = {model.id async for model in client.models.list()}
        shown = await client.models.retrieve(ALLOWED_MODEL)
        with pytest.raises(openai.PermissionDeniedError) as hidden:
            await client.models.retrieve(DISALLOWED_MODEL)
    assert listed == LOCAL_MODELS
    assert shown.id == ALLOWED_MODEL
    assert_sdk_error(hidden.value, 403, "permission_error", "permission_denied")
    async with sdk(authed, everything.text) as client:
        assert {model.id async for model in client.models.list()} == CATALOG_IDS
    assert authed.sent_upstream() == 0


async def test_a_limited_key_is_never_answered_by_a_fallback_model_it_may_not_use(
    fakes: dict[str, FakeUpstream],
) -> None:
    """`local/llama` falls back to `dashscope/qwen-turbo` when its upstream fails: a key limited to
    `local/*` must not be served (nor billed) by the dashscope model."""
    base = settings_for(fakes, retry=RetryPolicy(max_attempts=2))
    models = tuple(
        replace(model, fallbacks=(DISALLOWED_MODEL,)) if model.id == ALLOWED_MODEL else model
        for model in base.models
    )
    async with authed_gateway(fakes, settings=replace(base, models=models)) as authed:
        key = await new_key(authed.gw, scopes=INFERENCE, models=LOCAL_ONLY)
        fakes["local"].script(Script(status=503))
        status, answer = await call(
            authed.gw, "POST", "/v1/chat/completions", headers=bearer(key.text), json=CHAT_BODY
        )
        assert fakes["dashscope"].requests == [], (
            f"a key limited to local/* reached dashscope: {status} {answer}"
        )
        assert status != 200 or answer.get("model") == ALLOWED_MODEL, answer


# Generations


async def test_a_generation_is_read_by_its_key_its_team_readers_and_admins_only(authed: Authed) -> None:
    team = await new_team(authed.gw, "search")
    owner = await new_key(authed.gw, scopes=INFERENCE, team_id=team)
    reader = await new_key(authed.gw, scopes=USAGE_READ, team_id=team)
    teammate = await new_key(authed.gw, scopes=INFERENCE, team_id=team)
    stranger = await new_key(authed.gw, scopes=[*INFERENCE, *USAGE_READ])
    other_team_reader = await new_key(
        authed.gw, scopes=USAGE_READ, team_id=await new_team(authed.gw, "other")
    )
    admin = await new_key(authed.gw, scopes=ADMIN)
    generation_id = await chat(authed, owner.text)
    sent = authed.sent_upstream()

    for reading in (owner.text, reader.text, admin.text, ADMIN_KEY):
        status, answer = await call(
            authed.gw, "GET", f"/v1/generation/{generation_id}", headers=bearer(reading)
        )
        assert status == 200, answer
        record = answer["generation"]
        assert (record["id"], record["key_id"], record["team_id"]) == (generation_id, owner.id, team)
        status, answer = await call(
            authed.gw, "GET", f"/api/v1/generation?id={generation_id}", headers=bearer(reading)
        )
        assert status == 200, answer
        assert answer["data"]["id"] == generation_id

    for refused in (teammate.text, stranger.text, other_team_reader.text):
        for path in (f"/v1/generation/{generation_id}", f"/api/v1/generation?id={generation_id}"):
            status, answer = await call(authed.gw, "GET", path, headers=bearer(refused))
            assert_error(status, answer, 404, "not_found_error", "generation_not_found")
            assert answer["error"]["message"] == f"Generation '{generation_id}' not found."
    status, answer = await call(authed.gw, "GET", f"/v1/generation/{generation_id}", headers=bearer("nope"))
    assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == sent


# Health


async def test_livez_and_readyz_are_open_and_readyz_details_need_an_admin_key(authed: Authed) -> None:
    inference = await new_key(authed.gw, scopes=INFERENCE)
    admin = await new_key(authed.gw, scopes=ADMIN)
    for base in (authed.gw.rest_url, authed.gw.health_url):
        status, answer = await call(authed.gw, "GET", "/livez", base=base)
        assert (status, answer) == (200, {"status": "ok"})
        for headers in ({}, bearer(inference.text), bearer("garbage"), bearer(unknown_key())):
            status, answer = await call(authed.gw, "GET", "/readyz", headers=headers, base=base)
            assert (status, answer) == (200, {"status": "ready"})
        for headers in (bearer(admin.text), bearer(ADMIN_KEY), {"x-api-key": ADMIN_KEY}):
            status, answer = await call(authed.gw, "GET", "/readyz", headers=headers, base=base)
            assert status == 200, answer
            assert answer["status"] == "ready"
            assert {"providers", "store", "circuits"} <= set(answer)
    assert authed.sent_upstream() == 0


# The operator's admin key


async def test_the_configured_admin_key_runs_the_admin_api_and_is_audited_as_config(authed: Authed) -> None:
    status, made = await call(
        authed.gw, "POST", "/admin/v1/keys", headers={"x-api-key": ADMIN_KEY}, json={"name": "ci"}
    )
    assert status == 200, made
    assert made["scopes"] == [Scope.INFERENCE.value]
    status, listed = await call(authed.gw, "GET", "/admin/v1/keys", headers=bearer(ADMIN_KEY))
    assert status == 200, listed
    assert [k["id"] for k in listed["data"]] == [made["id"]]
    status, audit = await call(authed.gw, "GET", "/admin/v1/audit", headers=bearer(ADMIN_KEY))
    assert status == 200, audit
    assert {entry["actor"] for entry in audit["data"]} == {"config"}
    await chat(authed, ADMIN_KEY)  # admin implies inference
    await chat(authed, made["key"])


async def test_a_near_miss_of_the_configured_admin_key_is_refused(authed: Authed) -> None:
    for near in (ADMIN_KEY[:-1], ADMIN_KEY + "a", ADMIN_KEY.upper(), ADMIN_KEY[:-1] + "b"):
        status, answer = await call(authed.gw, "GET", "/admin/v1/keys", headers=bearer(near))
        assert_unauthenticated(status, answer)
    assert authed.sent_upstream() == 0


# Auth off


async def test_with_auth_off_every_route_is_open(fakes: dict[str, FakeUpstream]) -> None:
    async with authed_gateway(fakes, enabled=False) as authed:
        status, answer = await call(authed.gw, "POST", "/v1/chat/completions", json=CHAT_BODY)
        assert status == 200, answer
        async with sdk(authed, "anything-at-all") as client:
            listed = {model.id async for model in client.models.list()}
            completion = await client.chat.completions.create(model=DISALLOWED_MODEL, messages=HELLO)
        assert listed == CATALOG_IDS
        status, record = await call(authed.gw, "GET", f"/v1/generation/{completion.id}")
        assert status == 200, record
        assert record["generation"]["key_id"] is None
        status, answer = await call(authed.gw, "GET", "/admin/v1/keys")
        assert status == 200, answer
        assert authed.sent_upstream() == 2
