"""`llmgw keys|teams|audit`: keys and teams managed on the configured store, every call audited as `cli`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from llmgw.application.auth import Authenticator
from llmgw.cli import main
from llmgw.domain.errors import Unauthenticated
from llmgw.domain.keys import ApiKey
from llmgw.infrastructure.storage.sqlite import SQLiteStore

PEPPER = "a-pepper-for-tests-only-0123456789abcdef"
KEY = re.compile(r"sk-llmgw-([a-z0-9]{12})-[A-Za-z0-9_-]{43}")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "default.toml").write_text(
        f'[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n[auth]\npepper = "{PEPPER}"\n'
    )
    return tmp_path


class Llmgw:
    """Runs `llmgw … --config-path <config>`, returning (exit status, stdout, stderr)."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._config = config
        self._capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        status = main([*argv, "--config-path", str(self._config)])
        captured = self._capsys.readouterr()
        return status, captured.out, captured.err

    def create(self, *argv: str) -> tuple[str, str]:
        """A new key's full text and its public id."""
        status, out, _ = self("keys", "create", *argv)
        assert status == 0
        match = KEY.fullmatch(out.splitlines()[0])
        assert match is not None
        return match.group(0), match.group(1)


@pytest.fixture
def llmgw(config: Path, capsys: pytest.CaptureFixture[str]) -> Llmgw:
    return Llmgw(config, capsys)


def test_create_prints_the_key_alone_on_the_first_line_and_says_on_stderr_it_is_shown_once(
    llmgw: Llmgw,
) -> None:
    status, out, err = llmgw("keys", "create", "--name", "me")
    assert status == 0
    match = KEY.fullmatch(out.splitlines()[0])
    assert match is not None
    assert out == match.group(0) + "\n"
    assert "only time" in err
    assert match.group(1) in err


def test_a_key_created_by_the_cli_is_accepted_by_the_gateway_on_the_same_store(
    llmgw: Llmgw, config: Path
) -> None:
    text, public_id = llmgw.create("--name", "me", "--model", "gpt-4o*")
    key = _on_store(config, lambda auth: auth.authenticate(text))
    assert key.public_id == public_id
    assert key.models == ("gpt-4o*",)
    assert [scope.value for scope in key.scopes] == ["inference"]
    with pytest.raises(Unauthenticated):
        _on_store(config, lambda auth: auth.authenticate(text), pepper="another-pepper-another-pepper-0000")


def _on_store(
    config: Path, check: Callable[[Authenticator], Awaitable[ApiKey]], *, pepper: str = PEPPER
) -> ApiKey:
    """`check` run on an `Authenticator` over the store the CLI wrote, as a gateway would build it."""

    async def run() -> ApiKey:
        store = SQLiteStore(f"sqlite:///{config}/x.db")
        await store.open()
        try:
            return await check(Authenticator(store, pepper=pepper.encode()))
        finally:
            await store.close()

    return asyncio.run(run())


def test_list_shows_every_key_in_a_table_and_as_json(llmgw: Llmgw) -> None:
    _, first = llmgw.create("--name", "first")
    _, admin = llmgw.create("--name", "ops", "--admin", "--expires-at", "2099-01-01T00:00:00Z")
    status, out, _ = llmgw("keys", "list")
    assert status == 0
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["ID", "NAME", "TEAM", "SCOPES", "MODELS", "EXPIRES", "DISABLED", "LAST-USED"]
    assert sorted(rows) == sorted(
        [
            [first, "first", "-", "inference", "*", "-", "no", "-"],
            [admin, "ops", "-", "admin", "*", "2099-01-01T00:00:00Z", "no", "-"],
        ]
    )
    status, out, _ = llmgw("keys", "list", "--json")
    assert {json.loads(line)["id"] for line in out.splitlines()} == {first, admin}


def test_show_prints_the_key_as_json_without_its_secret_or_hash(llmgw: Llmgw) -> None:
    text, public_id = llmgw.create("--name", "me", "--metadata", "owner=ana", "--scope", "usage:read")
    status, out, _ = llmgw("keys", "show", public_id)
    assert status == 0
    shown = json.loads(out)
    assert shown["id"] == public_id
    assert shown["scopes"] == ["usage:read"]
    assert shown["metadata"] == {"owner": "ana"}
    assert text.rsplit("-", 1)[1] not in out
    assert not any(
        "hash" in field or "secret" in field for field in shown if field != "previous_secret_valid_until"
    )


def test_rotate_prints_a_new_key_with_the_same_id_and_a_grace_of_0_ends_the_old_one(
    llmgw: Llmgw, config: Path
) -> None:
    old, public_id = llmgw.create("--name", "me")
    status, out, err = llmgw("keys", "rotate", public_id, "--grace", "0")
    assert status == 0
    new = out.splitlines()[0]
    match = KEY.fullmatch(new)
    assert match is not None
    assert match.group(1) == public_id
    assert new != old
    assert "only time" in err
    assert _on_store(config, lambda auth: auth.authenticate(new)).public_id == public_id
    with pytest.raises(Unauthenticated):
        _on_store(config, lambda auth: auth.authenticate(old))


def test_rotate_refuses_a_grace_that_is_not_a_duration(llmgw: Llmgw) -> None:
    _, public_id = llmgw.create("--name", "me")
    with pytest.raises(SystemExit) as exited:
        llmgw("keys", "rotate", public_id, "--grace", "soon")
    assert exited.value.code == 2


def test_disable_then_enable_switch_the_key_off_and_on(llmgw: Llmgw) -> None:
    _, public_id = llmgw.create("--name", "me")
    status, out, _ = llmgw("keys", "disable", public_id)
    assert status == 0
    assert json.loads(out)["disabled"] is True
    status, out, _ = llmgw("keys", "enable", public_id)
    assert status == 0
    assert json.loads(out)["disabled"] is False
    assert json.loads(llmgw("keys", "show", public_id)[1])["disabled"] is False


def test_update_changes_only_the_fields_given(llmgw: Llmgw) -> None:
    team_id = json.loads(llmgw("teams", "create", "--name", "search")[1])["id"]
    _, public_id = llmgw.create("--name", "me", "--model", "gpt-4o", "--expires-at", "4102444800")
    status, out, _ = llmgw(
        "keys", "update", public_id, "--name", "renamed", "--team", team_id, "--no-expiry", "--scope", "admin"
    )
    assert status == 0
    shown = json.loads(out)
    assert (shown["name"], shown["team_id"], shown["expires_at"]) == ("renamed", team_id, None)
    assert (shown["scopes"], shown["models"]) == (["admin"], ["gpt-4o"])
    _, out, _ = llmgw("keys", "list", "--team", team_id)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [public_id]


def test_delete_removes_the_key(llmgw: Llmgw) -> None:
    _, public_id = llmgw.create("--name", "me")
    assert llmgw("keys", "delete", public_id)[0] == 0
    status, _, err = llmgw("keys", "show", public_id)
    assert status == 1
    assert public_id in err


def test_an_unknown_key_id_exits_1_naming_it(llmgw: Llmgw) -> None:
    for argv in (["show"], ["rotate"], ["disable"], ["enable"], ["delete"], ["update", "--name", "x"]):
        status, out, err = llmgw("keys", argv[0], "nosuchkey000", *argv[1:])
        assert (status, out) == (1, "")
        assert err == "llmgw: API key 'nosuchkey000' not found.\n"


def test_a_bad_scope_or_a_past_expiry_exits_1_with_the_reason(llmgw: Llmgw) -> None:
    status, out, err = llmgw("keys", "create", "--name", "me", "--scope", "root")
    assert (status, out) == (1, "")
    assert err.startswith("llmgw: Unknown scope 'root'")
    status, _, err = llmgw("keys", "create", "--name", "me", "--expires-at", "2001-01-01T00:00:00Z")
    assert (status, err) == (1, "llmgw: expires_at is in the past.\n")


def test_teams_create_list_show_rename_delete(llmgw: Llmgw) -> None:
    status, out, _ = llmgw("teams", "create", "--name", "search", "--metadata", "cost-center=42")
    assert status == 0
    team = json.loads(out)
    assert (team["name"], team["metadata"]) == ("search", {"cost-center": "42"})
    assert llmgw("teams", "update", team["id"], "--name", "find")[0] == 0
    _, out, _ = llmgw("teams", "list")
    assert [line.split()[:2] for line in out.splitlines()] == [["ID", "NAME"], [team["id"], "find"]]
    assert json.loads(llmgw("teams", "show", team["id"])[1])["name"] == "find"
    assert llmgw("teams", "delete", team["id"])[0] == 0
    _, out, _ = llmgw("teams", "list")
    assert out.splitlines()[1:] == []


def test_a_team_with_keys_cannot_be_deleted(llmgw: Llmgw) -> None:
    team_id = json.loads(llmgw("teams", "create", "--name", "search")[1])["id"]
    llmgw.create("--name", "me", "--team", team_id)
    status, _, err = llmgw("teams", "delete", team_id)
    assert status == 1
    assert "still has keys" in err


def test_audit_lists_the_cli_calls_newest_first(llmgw: Llmgw) -> None:
    _, public_id = llmgw.create("--name", "me")
    llmgw("keys", "disable", public_id)
    status, out, _ = llmgw("audit", "--limit", "3")
    assert status == 0
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["AT", "ACTOR", "ACTION", "TARGET"]
    assert [row[1:] for row in rows] == [
        ["cli", "audit.list", "-"],
        ["cli", "key.disable", public_id],
        ["cli", "key.create", public_id],
    ]
    _, out, _ = llmgw("audit", "--json", "--limit", "100")
    assert all(json.loads(line)["actor"] == "cli" for line in out.splitlines())


def test_a_missing_pepper_exits_2_naming_auth_pepper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "default.toml").write_text(f'[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    assert main(["keys", "create", "--name", "me", "--config-path", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "auth.pepper" in captured.err
    assert not (tmp_path / "x.db").exists()


def test_an_invalid_configuration_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "default.toml").write_text('[storage]\nurl = "sqlite:///x.db"\n[auth]\npepper = "short"\n')
    assert main(["keys", "list", "--config-path", str(tmp_path)]) == 2
    assert "auth.pepper" in capsys.readouterr().err


def test_a_store_that_cannot_be_opened_exits_1_naming_the_url_with_its_password_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "default.toml").write_text(
        f'[storage]\nurl = "postgresql://llmgw:s3cret@127.0.0.1:1/llmgw"\ntimeout = "1s"\n'
        f'[auth]\npepper = "{PEPPER}"\n'
    )
    status, _, err = Llmgw(tmp_path, capsys)("keys", "list")
    assert status == 1
    assert "cannot open the generation store at storage.url = postgresql://llmgw:***@127.0.0.1:1" in err
    assert "s3cret" not in err
