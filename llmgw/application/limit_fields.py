"""The limit fields of keys and teams (`rpm`, `tpm`, `max_parallel`, `budget_usd`, `budget_period`,
`soft_budget_usd`) as the admin use cases take them, plain JSON values, and the rules on what they may hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from llmgw.domain.errors import InvalidRequest
from llmgw.domain.limits import Limits, Period

#: The fields, in the order the admin API shows them.
LIMIT_FIELDS = ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "soft_budget_usd")
#: The largest count: exact as a JSON number in every client (and a double in any counter store).
MAX_COUNT = 2**53 - 1
#: Money is counted in micro-dollars, so a budget below one would be none at all.
MIN_USD = 0.000_001
MAX_USD = 1_000_000_000.0


def changed_limits(current: Limits, fields: Mapping[str, Any]) -> Limits | None:
    """`current` with each limit field that `fields` names replaced by its value (null: no such limit), or
    None when `fields` names none.

    `budget_period` needs a budget (`budget_usd`, `soft_budget_usd` or both, which share it): clearing
    the last budget clears its period too. A soft budget above the hard one would never warn, so it is
    refused.
    """
    given = {name: fields[name] for name in LIMIT_FIELDS if name in fields}
    if not given:
        return None
    values = {name: None if value is None else _PARSERS[name](name, value) for name, value in given.items()}
    limits = replace(current, **values)
    if not limits.tracks_budget and limits.budget_period is not None:
        if given.get("budget_period") is not None:
            raise InvalidRequest(
                "budget_period needs a budget: give budget_usd or soft_budget_usd with it.",
                param="budget_period",
            )
        limits = replace(limits, budget_period=None)
    if (
        limits.budget_usd is not None
        and limits.soft_budget_usd is not None
        and limits.soft_budget_usd > limits.budget_usd
    ):
        param = "soft_budget_usd" if given.get("soft_budget_usd") is not None else "budget_usd"
        raise InvalidRequest(
            f"soft_budget_usd ({limits.soft_budget_usd}) is above budget_usd ({limits.budget_usd}): "
            "it would never warn before the budget refuses.",
            param=param,
        )
    return limits


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise InvalidRequest(
            f"{name} is a whole number from 1 to {MAX_COUNT}, or null for no limit.", param=name
        )
    return value


def _usd(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not MIN_USD <= value <= MAX_USD
    ):
        raise InvalidRequest(
            f"{name} is a number of US dollars from {MIN_USD:.6f} to {MAX_USD:.0f}, or null for no budget.",
            param=name,
        )
    return float(value)


def _period(name: str, value: Any) -> Period:
    names = [period.value for period in Period]
    if not isinstance(value, str) or value not in names:
        raise InvalidRequest(
            f"{name} is one of {', '.join(names)}, or null for a budget over the whole lifetime.", param=name
        )
    return Period(value)


_PARSERS: Mapping[str, Callable[[str, Any], Any]] = {
    "rpm": _count,
    "tpm": _count,
    "max_parallel": _count,
    "budget_usd": _usd,
    "budget_period": _period,
    "soft_budget_usd": _usd,
}
