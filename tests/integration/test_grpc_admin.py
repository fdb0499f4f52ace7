"""The admin API over real gRPC: keys and teams managed through `AdminService`, each call audited, and the
keys it issues admitted (or refused) on the inference API at once; reflection needs a key, health does not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from grpclib import GRPCError, Status
from grpclib.health.v1 import health_pb2
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.reflection.v1 import reflection_pb2
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.testing import ChannelFor

from llmgw.application.gateway import Gateway
from llmgw.infrastructure.config.settings import AuthSettings
from llmgw.infrastructure.grpc.admin_service import AdminService
from llmgw.infrastructure.grpc.messages import admin_v1, v1
from llmgw.infrastructure.grpc.upb_codec import EncodedAwareCodec
from tests.fakes.upstream import FakeUpstream
from tests.harness import Running, running_gateway, settings_for

ADMIN_KEY = "a" * 40
AUTH = AuthSettings(enabled=True, pepper="p" * 32, admin_key=ADMIN_KEY)


@pytest.fixture
async def gw(fakes: dict[str, FakeUpstream]) -> AsyncIterator[Running]:
    async with running_gateway(settings_for(fakes, auth=AUTH)) as running:
        yield running


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def admin(gw: Running, key: str | None = ADMIN_KEY) -> admin_v1.AdminServiceStub:
    return admin_v1.AdminServiceStub(gw.channel, metadata=_bearer(key) if key is not None else None)


def inference(gw: Running, key: str) -> v1.LlmGatewayServiceStub:
    return v1.LlmGatewayServiceStub(gw.channel, metadata=_bearer(key))


async def _refused(call: Any) -> Status:
    with pytest.raises(GRPCError) as caught:
        await call
    return caught.value.status


async def test_a_created_key_is_shown_in_full_once_and_works_at_once(gw: Running) -> None:
    expires = time.time() + 3600
    created = await admin(gw).create_key(
        admin_v1.CreateKeyRequest(
            name="search bot",
            models=["dashscope/*"],
            expires_at=expires,
            metadata={"owner": "search"},
        )
    )
    info = created.key_info
    assert info is not None
    assert created.key.startswith(f"sk-llmgw-{info.id}-")
    assert (info.name, info.scopes, info.models, info.metadata) == (
        "search bot",
        ["inference"],
        ["dashscope/*"],
        {"owner": "search"},
    )
    assert info.expires_at == pytest.approx(expires)
    assert info.last_used_at is None
    assert info.previous_secret_valid_until is None

    models = await inference(gw, created.key).list_models(v1.ListModelsRequest())
    assert {m.id for m in models.data} == {m.id for m in gw.settings.models if m.id.startswith("dashscope/")}

    fetched = await admin(gw).get_key(admin_v1.GetKeyRequest(id=info.id))
    assert fetched.id == info.id
    assert fetched.name == "search bot"
    assert created.key.split("-")[-1] not in fetched.to_json()  # the secret is never shown again


async def test_keys_are_listed_a_page_at_a_time_by_cursor(gw: Running) -> None:
    ids = sorted(
        [
            (await admin(gw).create_key(admin_v1.CreateKeyRequest(name=f"k{n}"))).key_info.id  # type: ignore[union-attr]
            for n in range(3)
        ]
    )
    first = await admin(gw).list_keys(admin_v1.ListKeysRequest(limit=2))
    assert [k.id for k in first.data] == ids[:2]
    assert first.has_more
    assert first.next_cursor == ids[1]
    second = await admin(gw).list_keys(admin_v1.ListKeysRequest(limit=2, after=first.next_cursor))
    assert [k.id for k in second.data] == ids[2:]
    assert (second.has_more, second.next_cursor) == (False, "")


async def test_an_update_changes_only_the_fields_it_sets(gw: Running) -> None:
    created = await admin(gw).create_key(
        admin_v1.CreateKeyRequest(name="old", models=["local/*"], metadata={"a": "1"})
    )
    key_id = created.key_info.id  # type: ignore[union-attr]
    expires = time.time() + 7200

    updated = await admin(gw).update_key(
        admin_v1.UpdateKeyRequest(
            id=key_id,
            name="new",
            scopes=admin_v1.StringList(values=["inference", "usage:read"]),
            expires_at=expires,
        )
    )
    assert updated.name == "new"
    assert updated.scopes == ["inference", "usage:read"]
    assert updated.models == ["local/*"]
    assert updated.metadata == {"a": "1"}
    assert updated.expires_at == pytest.approx(expires)

    # Set to empty: every model, no metadata; an expiry of 0: never.
    cleared = await admin(gw).update_key(
        admin_v1.UpdateKeyRequest(
            id=key_id, models=admin_v1.StringList(), metadata=admin_v1.StringMap(), expires_at=0
        )
    )
    assert (cleared.name, cleared.models, cleared.metadata, cleared.expires_at) == ("new", [], {}, None)
    models = await inference(gw, created.key).list_models(v1.ListModelsRequest())
    assert len(models.data) == len(gw.settings.models)


async def test_a_rotated_key_works_and_its_old_secret_too_within_the_grace(gw: Running) -> None:
    created = await admin(gw).create_key(admin_v1.CreateKeyRequest(name="rotating"))
    key_id = created.key_info.id  # type: ignore[union-attr]

    rotated = await admin(gw).rotate_key(admin_v1.RotateKeyRequest(id=key_id, grace_seconds=60))
    assert rotated.key != created.key
    assert rotated.key.startswith(f"sk-llmgw-{key_id}-")
    assert rotated.key_info.previous_secret_valid_until == pytest.approx(time.time() + 60, abs=5)  # type: ignore[union-attr]
    await inference(gw, rotated.key).list_models(v1.ListModelsRequest())
    await inference(gw, created.key).list_models(v1.ListModelsRequest())

    again = await admin(gw).rotate_key(admin_v1.RotateKeyRequest(id=key_id, grace_seconds=0))
    assert again.key_info.previous_secret_valid_until is None  # type: ignore[union-attr]
    await inference(gw, again.key).list_models(v1.ListModelsRequest())
    refused = await _refused(inference(gw, rotated.key).list_models(v1.ListModelsRequest()))
    assert refused is Status.UNAUTHENTICATED


async def test_a_disabled_key_is_refused_and_a_deleted_one_is_gone(gw: Running) -> None:
    created = await admin(gw).create_key(admin_v1.CreateKeyRequest(name="short-lived"))
    key_id = created.key_info.id  # type: ignore[union-attr]
    await inference(gw, created.key).list_models(v1.ListModelsRequest())

    disabled = await admin(gw).disable_key(admin_v1.DisableKeyRequest(id=key_id))
    assert disabled.disabled
    refused = await _refused(inference(gw, created.key).list_models(v1.ListModelsRequest()))
    assert refused is Status.UNAUTHENTICATED

    deleted = await admin(gw).delete_key(admin_v1.DeleteKeyRequest(id=key_id))
    assert (deleted.id, deleted.deleted) == (key_id, True)
    assert await _refused(admin(gw).get_key(admin_v1.GetKeyRequest(id=key_id))) is Status.NOT_FOUND
    assert await _refused(admin(gw).delete_key(admin_v1.DeleteKeyRequest(id=key_id))) is Status.NOT_FOUND


async def test_teams_are_created_listed_updated_and_deleted_once_empty(gw: Running) -> None:
    team = await admin(gw).create_team(admin_v1.CreateTeamRequest(name="search", metadata={"cc": "42"}))
    assert team.id.startswith("team-")
    assert (team.name, team.metadata) == ("search", {"cc": "42"})
    member = await admin(gw).create_key(admin_v1.CreateKeyRequest(name="member", team_id=team.id))
    member_id = member.key_info.id  # type: ignore[union-attr]
    await admin(gw).create_key(admin_v1.CreateKeyRequest(name="loner"))

    listed = await admin(gw).list_teams(admin_v1.ListTeamsRequest())
    assert [t.id for t in listed.data] == [team.id]
    assert not listed.has_more
    in_team = await admin(gw).list_keys(admin_v1.ListKeysRequest(team_id=team.id))
    assert [k.id for k in in_team.data] == [member_id]

    renamed = await admin(gw).update_team(admin_v1.UpdateTeamRequest(id=team.id, name="search & ads"))
    assert (renamed.name, renamed.metadata) == ("search & ads", {"cc": "42"})
    assert (await admin(gw).get_team(admin_v1.GetTeamRequest(id=team.id))).name == "search & ads"

    still_used = await _refused(admin(gw).delete_team(admin_v1.DeleteTeamRequest(id=team.id)))
    assert still_used is Status.INVALID_ARGUMENT
    await admin(gw).update_key(admin_v1.UpdateKeyRequest(id=member_id, team_id=""))
    deleted = await admin(gw).delete_team(admin_v1.DeleteTeamRequest(id=team.id))
    assert (deleted.id, deleted.deleted) == (team.id, True)
    assert await _refused(admin(gw).get_team(admin_v1.GetTeamRequest(id=team.id))) is Status.NOT_FOUND


async def test_the_audit_trail_shows_each_call_with_its_actor(gw: Running) -> None:
    created = await admin(gw).create_key(admin_v1.CreateKeyRequest(name="audited", scopes=["inference"]))
    key_id = created.key_info.id  # type: ignore[union-attr]
    await admin(gw).update_key(admin_v1.UpdateKeyRequest(id=key_id, name="audited twice"))

    page = await admin(gw).list_audit(admin_v1.ListAuditRequest(limit=3))
    assert [(e.action, e.actor, e.target) for e in page.data] == [
        ("audit.list", "config", ""),
        ("key.update", "config", key_id),
        ("key.create", "config", key_id),
    ]
    assert page.data[1].details is not None
    assert page.data[1].details.to_dict() == {"name": "audited twice"}
    assert page.data[2].details.to_dict() == {"name": "audited", "scopes": ["inference"]}  # type: ignore[union-attr]
    assert not page.has_more

    older = await admin(gw).list_audit(admin_v1.ListAuditRequest(limit=1, before=page.data[1].id))
    assert [e.action for e in older.data] == ["key.create"]


async def test_only_admin_keys_may_call_the_admin_service(gw: Running) -> None:
    created = await admin(gw).create_key(admin_v1.CreateKeyRequest(name="plain"))
    request = admin_v1.ListKeysRequest()
    assert await _refused(admin(gw, created.key).list_keys(request)) is Status.PERMISSION_DENIED
    assert await _refused(admin(gw, None).list_keys(request)) is Status.UNAUTHENTICATED
    assert await _refused(admin(gw, "sk-llmgw-nope").list_keys(request)) is Status.UNAUTHENTICATED


async def test_bad_input_is_an_invalid_argument(gw: Running) -> None:
    bad_scope = admin(gw).create_key(admin_v1.CreateKeyRequest(name="x", scopes=["root"]))
    assert await _refused(bad_scope) is Status.INVALID_ARGUMENT
    no_name = admin(gw).create_key(admin_v1.CreateKeyRequest())
    assert await _refused(no_name) is Status.INVALID_ARGUMENT
    past = admin(gw).create_key(admin_v1.CreateKeyRequest(name="x", expires_at=1.0))
    assert await _refused(past) is Status.INVALID_ARGUMENT
    assert await _refused(admin(gw).list_keys(admin_v1.ListKeysRequest(limit=-1))) is Status.INVALID_ARGUMENT
    no_team = admin(gw).create_key(admin_v1.CreateKeyRequest(name="x", team_id="team-missing"))
    assert await _refused(no_team) is Status.INVALID_ARGUMENT
    negative = admin(gw).rotate_key(admin_v1.RotateKeyRequest(id="whatever", grace_seconds=-1))
    assert await _refused(negative) is Status.INVALID_ARGUMENT


async def test_health_is_open_but_reflection_needs_a_key(gw: Running) -> None:
    health = await HealthStub(gw.channel).Check(
        health_pb2.HealthCheckRequest(service="llmgateway.admin.v1.AdminService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    async def reflect(metadata: dict[str, str] | None) -> tuple[list[str], list[bytes]]:
        """The services listed, and the files describing AdminService."""
        async with ServerReflectionStub(gw.channel).ServerReflectionInfo.open(metadata=metadata) as stream:
            await stream.send_message(reflection_pb2.ServerReflectionRequest(list_services=""))
            listed = await stream.recv_message()
            symbol = "llmgateway.admin.v1.AdminService"
            await stream.send_message(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol), end=True
            )
            described = await stream.recv_message()
            assert listed is not None
            assert described is not None
            return (
                [s.name for s in listed.list_services_response.service],
                list(described.file_descriptor_response.file_descriptor_proto),
            )

    with pytest.raises(GRPCError) as caught:
        await reflect(None)
    assert caught.value.status is Status.UNAUTHENTICATED
    created = await admin(gw).create_key(admin_v1.CreateKeyRequest(name="any scope will do"))
    services, files = await reflect(_bearer(created.key))
    assert "llmgateway.admin.v1.AdminService" in services
    assert any(b"llmgateway/admin/v1/admin.proto" in file for file in files)


async def test_without_an_admin_api_the_service_is_unavailable() -> None:
    gateway = cast(Gateway, SimpleNamespace(auth=None, admin=None, observers=()))
    async with ChannelFor([AdminService(gateway)], codec=EncodedAwareCodec()) as channel:
        stub = admin_v1.AdminServiceStub(channel)
        refused = await _refused(stub.list_keys(admin_v1.ListKeysRequest()))
    assert refused is Status.UNAVAILABLE
