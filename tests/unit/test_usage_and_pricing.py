"""Token usage read from upstream answers, added up across calls, and priced in USD."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw.domain.catalog import Pricing
from llmgw.domain.usage import Usage, price


def test_usage_reads_openai_counts_and_both_detail_objects() -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": 120,
            "completion_tokens": 80,
            "total_tokens": 200,
            "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 50, "accepted_prediction_tokens": 0},
        }
    )

    assert usage == Usage(
        prompt_tokens=120,
        completion_tokens=80,
        total_tokens=200,
        cached_tokens=100,
        reasoning_tokens=50,
        cost=None,
    )


def test_usage_with_missing_fields_counts_them_as_zero() -> None:
    assert Usage.from_openai({}) == Usage()
    assert Usage.from_openai({"prompt_tokens": 7}) == Usage(prompt_tokens=7, total_tokens=7)


@pytest.mark.parametrize(
    ("details_key", "details"),
    [
        ("prompt_tokens_details", None),
        ("prompt_tokens_details", []),
        ("prompt_tokens_details", {}),
        ("completion_tokens_details", None),
        ("completion_tokens_details", "n/a"),
        ("completion_tokens_details", {"reasoning_tokens": None}),
    ],
)
def test_usage_with_null_or_odd_detail_objects_counts_no_cached_or_reasoning_tokens(
    details_key: str, details: Any
) -> None:
    usage = Usage.from_openai({"prompt_tokens": 5, "completion_tokens": 3, details_key: details})

    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 3, 8)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (0, 0)


def test_usage_derives_the_total_when_the_upstream_leaves_it_out() -> None:
    usage = Usage.from_openai({"prompt_tokens": 11, "completion_tokens": 4})

    assert usage.total_tokens == 15


def test_usage_keeps_the_upstreams_total_when_it_reports_one() -> None:
    # Some upstreams count tokens outside prompt and completion (images, tool overhead) in the total.
    usage = Usage.from_openai({"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 20})

    assert usage.total_tokens == 20


def test_usage_reads_openrouters_cost() -> None:
    usage = Usage.from_openai(
        {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.00042, "is_byok": False}
    )

    assert usage.cost == 0.00042


def test_an_integer_cost_is_read_as_a_float() -> None:
    usage = Usage.from_openai({"cost": 0})

    assert usage.cost == 0.0
    assert isinstance(usage.cost, float)


@pytest.mark.parametrize("value", [True, False, "12", 3.5, None, [1], {"n": 1}])
def test_bool_or_garbage_token_counts_are_ignored(value: Any) -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": value,
            "completion_tokens": value,
            "total_tokens": value,
            "prompt_tokens_details": {"cached_tokens": value},
            "completion_tokens_details": {"reasoning_tokens": value},
        }
    )

    assert usage == Usage()


@pytest.mark.parametrize("value", [True, False, "0.01", None, [0.01], {"usd": 0.01}])
def test_bool_or_garbage_cost_is_ignored(value: Any) -> None:
    usage = Usage.from_openai({"prompt_tokens": 1, "cost": value})

    assert usage.cost is None


def test_adding_usage_sums_every_count_and_cost() -> None:
    first = Usage(
        prompt_tokens=10, completion_tokens=5, total_tokens=15, cached_tokens=4, reasoning_tokens=2, cost=0.25
    )
    second = Usage(
        prompt_tokens=1, completion_tokens=2, total_tokens=3, cached_tokens=1, reasoning_tokens=1, cost=0.5
    )

    assert first + second == Usage(
        prompt_tokens=11, completion_tokens=7, total_tokens=18, cached_tokens=5, reasoning_tokens=3, cost=0.75
    )


def test_adding_usage_without_any_cost_keeps_the_cost_unknown() -> None:
    assert (Usage(prompt_tokens=1) + Usage(prompt_tokens=2)).cost is None


@pytest.mark.parametrize(("left", "right"), [(0.5, None), (None, 0.5)], ids=["left-known", "right-known"])
def test_adding_usage_where_one_side_has_a_cost_keeps_that_cost(
    left: float | None, right: float | None
) -> None:
    assert (Usage(cost=left) + Usage(cost=right)).cost == 0.5


def test_adding_a_zero_cost_keeps_a_known_zero() -> None:
    assert (Usage(cost=0.0) + Usage()).cost == 0.0


PRICING = Pricing(prompt=2.0, completion=8.0, cached_prompt=0.5)


def test_the_upstreams_own_cost_wins_over_the_price_table() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, cost=0.0123)

    assert price(usage, PRICING) == 0.0123


def test_an_upstream_cost_of_zero_is_kept_and_not_repriced() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, cost=0.0)

    assert price(usage, PRICING) == 0.0


def test_a_model_without_pricing_has_an_unknown_cost_not_zero() -> None:
    assert price(Usage(prompt_tokens=1000, completion_tokens=10), None) is None


def test_an_upstream_cost_counts_even_without_pricing() -> None:
    assert price(Usage(prompt_tokens=3, cost=0.001), None) == 0.001


def test_prompt_and_completion_tokens_are_priced_per_million() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=500, total_tokens=1_500)

    # 1000 * $2/M + 500 * $8/M
    assert price(usage, Pricing(prompt=2.0, completion=8.0)) == pytest.approx(0.006, abs=1e-15)


def test_cached_prompt_tokens_are_billed_at_the_cached_price() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=100, cached_tokens=800)

    # 200 * $2/M + 800 * $0.5/M + 100 * $8/M
    assert price(usage, PRICING) == pytest.approx(0.0016, abs=1e-15)


def test_cached_prompt_tokens_fall_back_to_the_prompt_price_when_no_cached_price_is_set() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=100, cached_tokens=800)

    # 1000 * $2/M + 100 * $8/M
    assert price(usage, Pricing(prompt=2.0, completion=8.0)) == pytest.approx(0.0028, abs=1e-15)


def test_a_free_cached_price_is_honoured_not_replaced_by_the_prompt_price() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=0, cached_tokens=1_000)

    assert price(usage, Pricing(prompt=2.0, completion=8.0, cached_prompt=0.0)) == 0.0


def test_cached_tokens_beyond_the_prompt_are_not_billed_twice_or_negatively() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_tokens=500)

    # All 100 prompt tokens at the cached price, nothing at the prompt price.
    assert price(usage, PRICING) == pytest.approx(0.00005, abs=1e-15)


def test_reasoning_tokens_are_billed_once_as_part_of_the_completion() -> None:
    with_reasoning = Usage(prompt_tokens=100, completion_tokens=1_000, reasoning_tokens=900)
    without = Usage(prompt_tokens=100, completion_tokens=1_000)

    # 100 * $2/M + 1000 * $8/M
    assert price(with_reasoning, PRICING) == pytest.approx(0.0082, abs=1e-15)
    assert price(with_reasoning, PRICING) == price(without, PRICING)


def test_a_request_that_used_no_tokens_costs_nothing_when_priced() -> None:
    assert price(Usage(), PRICING) == 0.0


def test_a_usage_read_from_the_wire_is_priced_end_to_end() -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": 2_000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1_500},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )

    # 500 * $2/M + 1500 * $0.5/M + 300 * $8/M
    assert price(usage, PRICING) == pytest.approx(0.00415, abs=1e-15)
