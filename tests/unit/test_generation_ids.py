"""Generation ids: `gen-`, 12 hex digits of milliseconds, 16 random hex digits; unique, time-ordered,
and their minting time can be read back."""

from __future__ import annotations

import re
import threading
import time

import pytest

from llmgw.domain import generation
from llmgw.domain.generation import minted_at, new_generation_id

ID = re.compile(r"gen-[0-9a-f]{12}[0-9a-f]{16}")


def test_ids_have_the_documented_shape_and_start_with_the_time() -> None:
    before = time.time_ns() // 1_000_000
    minted = new_generation_id()
    after = time.time_ns() // 1_000_000
    assert ID.fullmatch(minted)
    assert before <= int(minted[4:16], 16) <= after


def test_ids_are_unique_across_many_batches_of_random_parts() -> None:
    count = generation._RANDOM_BATCH * 5 + 7
    ids = [new_generation_id() for _ in range(count)]
    assert len(set(ids)) == count
    assert len({minted[16:] for minted in ids}) == count  # the random parts alone differ too


def test_ids_minted_later_sort_later() -> None:
    first = new_generation_id()
    time.sleep(0.002)
    assert new_generation_id() > first


def test_threads_minting_at_once_never_share_an_id() -> None:
    minted: list[list[str]] = [[] for _ in range(8)]

    def mint(into: list[str]) -> None:
        into.extend(new_generation_id() for _ in range(3000))

    threads = [threading.Thread(target=mint, args=(into,)) for into in minted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [minted_id for into in minted for minted_id in into]
    assert len(set(everything)) == len(everything) == 8 * 3000


def test_the_minting_time_is_read_back_from_an_id() -> None:
    before = time.time()
    minted = new_generation_id()
    after = time.time()

    when = minted_at(minted)

    assert when is not None
    assert before - 0.001 <= when <= after


@pytest.mark.parametrize(
    "text",
    [
        "",
        "gen-",
        "gen-doesnotexist",
        "chatcmpl-0190f0e8a1b20123456789abcdef",
        "GEN-0190f0e8a1b20123456789abcdef",
        "gen-0190F0E8A1B20123456789ABCDEF",
        "gen-0190f0e8a1b20123456789abcde",
        "gen-0190f0e8a1b20123456789abcdef4",
        "xgen-0190f0e8a1b20123456789abcdef",
        "gen-0190f0e8a1b20123456789abcdef\n",
    ],
    ids=[
        "empty",
        "prefix",
        "words",
        "other-prefix",
        "upper-prefix",
        "upper-hex",
        "short",
        "long",
        "lead",
        "tail",
    ],
)
def test_a_string_that_is_not_a_minted_id_has_no_minting_time(text: str) -> None:
    assert minted_at(text) is None


def test_a_well_formed_id_carries_the_time_written_in_it() -> None:
    assert minted_at("gen-0190f0e8a1b20123456789abcdef") == 0x0190F0E8A1B2 / 1000
