"""`llmgw keys|teams create|update --rpm --tpm --max-parallel --budget-usd --budget-period --soft-budget-usd`:
limits set from the command line, changed one at a time, cleared with `none`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_cli_keys import PEPPER, Llmgw

NO_LIMITS = {
    "rpm": None,
    "tpm": None,
    "max_parallel": None,
    "budget_usd": None,
    "budget_period": None,
    "soft_budget_usd": None,
}


@pytest.fixture
def llmgw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Llmgw:
    (tmp_path / "default.toml").write_text(
        f'[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n[auth]\npepper = "{PEPPER}"\n'
    )
    return Llmgw(tmp_path, capsys)


def limits(shown: str) -> dict[str, Any]:
    answer = json.loads(shown)
    return {name: answer[name] for name in NO_LIMITS}


def test_a_key_is_created_with_limits_and_updated_one_limit_at_a_time(llmgw: Llmgw) -> None:
    _, public_id = llmgw.create(
        "--name", "ci", "--rpm", "60", "--budget-usd", "5", "--budget-period", "day", "--max-parallel", "2"
    )
    created = {**NO_LIMITS, "rpm": 60, "max_parallel": 2, "budget_usd": 5.0, "budget_period": "day"}
    assert limits(llmgw("keys", "show", public_id)[1]) == created

    status, out, _ = llmgw("keys", "update", public_id, "--tpm", "20000", "--soft-budget-usd", "4.5")
    assert status == 0
    assert limits(out) == {**created, "tpm": 20_000, "soft_budget_usd": 4.5}

    status, out, _ = llmgw("keys", "update", public_id, "--rpm", "none", "--budget-period", "none")
    assert status == 0
    assert limits(out) == {
        **created,
        "rpm": None,
        "budget_period": None,
        "tpm": 20_000,
        "soft_budget_usd": 4.5,
    }


def test_a_team_is_created_with_limits_and_its_limits_change_without_renaming_it(llmgw: Llmgw) -> None:
    status, out, _ = llmgw(
        "teams", "create", "--name", "search", "--budget-usd", "100", "--budget-period", "month"
    )
    assert status == 0
    team = json.loads(out)
    assert limits(out) == {**NO_LIMITS, "budget_usd": 100.0, "budget_period": "month"}

    status, out, _ = llmgw("teams", "update", team["id"], "--rpm", "600")
    assert status == 0
    assert json.loads(out)["name"] == "search"
    assert limits(out) == {**NO_LIMITS, "rpm": 600, "budget_usd": 100.0, "budget_period": "month"}


def test_a_team_update_with_nothing_to_change_exits_1(llmgw: Llmgw) -> None:
    team_id = json.loads(llmgw("teams", "create", "--name", "search")[1])["id"]

    status, out, err = llmgw("teams", "update", team_id)

    assert (status, out) == (1, "")
    assert "Nothing to change" in err


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--rpm", "0"], "llmgw: rpm is a whole number"),
        (["--budget-usd", "-1"], "llmgw: budget_usd is a number of US dollars"),
        (["--budget-period", "year", "--budget-usd", "5"], "llmgw: budget_period is one of day, week, month"),
        (["--budget-period", "day"], "llmgw: budget_period needs a budget"),
    ],
)
def test_a_limit_the_use_case_refuses_exits_1_with_its_reason(
    llmgw: Llmgw, argv: list[str], reason: str
) -> None:
    status, out, err = llmgw("keys", "create", "--name", "ci", *argv)

    assert (status, out) == (1, "")
    assert err.startswith(reason)


def test_a_limit_that_is_not_a_number_is_a_usage_error(llmgw: Llmgw) -> None:
    with pytest.raises(SystemExit) as exited:
        llmgw("keys", "create", "--name", "ci", "--tpm", "lots")

    assert exited.value.code == 2
