"""Streamed chunks pass through as the upstream's text, rewritten, unless anything in them matters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmgw.domain.errors import UpstreamError, UpstreamUnavailable
from llmgw.infrastructure.providers.chunks import ChunkReader, ParsedChunk, PassedChunk
from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks

UPSTREAM_ID = "chatcmpl-42"


def chunk(delta: dict[str, Any], *, finish: str | None = None, **top: Any) -> bytes:
    body = {
        "id": UPSTREAM_ID,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
        **top,
    }
    return orjson.dumps(body)


def reader() -> ChunkReader:
    return ChunkReader(OpenAIQuirks(), provider="p", secret="sk-secret")


def test_after_the_first_chunk_ordinary_chunks_are_rewritten_not_parsed() -> None:
    read = reader()
    first = read.read(chunk({"role": "assistant", "content": ""}))
    assert isinstance(first, ParsedChunk)
    second = read.read(chunk({"content": "Hi"}))
    assert isinstance(second, PassedChunk)
    assert second.upstream_id == UPSTREAM_ID
    second.rebrand("gen-1", "team/model", keep_usage=True)
    expected = orjson.loads(chunk({"content": "Hi"})) | {"id": "gen-1", "model": "team/model"}
    assert orjson.loads(second.encoded()) == expected
    assert second.json() == expected
    # Nothing else in the text changes: same keys in the same order.
    assert second.encoded() == orjson.dumps(expected)


def test_without_keep_usage_the_null_usage_field_is_dropped() -> None:
    read = reader()
    read.read(chunk({"content": ""}))
    passed = read.read(chunk({"content": "x"}))
    passed.rebrand("gen-1", "m", keep_usage=False)
    assert "usage" not in orjson.loads(passed.encoded())
    parsed = read.read(chunk({"content": "x"}, finish="stop"))
    parsed.rebrand("gen-1", "m", keep_usage=False)
    assert "usage" not in parsed.json()


@pytest.mark.parametrize(
    "payload",
    [
        chunk({}, finish="stop"),
        chunk({"content": "x"}, usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        orjson.dumps({"id": UPSTREAM_ID, "model": "gpt-up", "choices": [], "usage": {"total_tokens": 3}}),
        # the id fragment twice: which one to rewrite is not certain
        chunk({"tool_calls": [{"index": 0, "id": UPSTREAM_ID, "function": {"arguments": ""}}]}),
        chunk({"content": "x"}, model="gpt-up-2"),  # a model fragment not seen before
    ],
    ids=["finish-reason", "usage", "usage-chunk", "ambiguous-id", "other-model"],
)
def test_chunks_that_matter_or_are_ambiguous_are_parsed(payload: bytes) -> None:
    read = reader()
    read.read(chunk({"content": ""}))
    assert isinstance(read.read(payload), ParsedChunk)


def test_what_parsed_chunks_report() -> None:
    read = reader()
    read.read(chunk({"content": ""}))
    last = read.read(chunk({}, finish="length", usage={"prompt_tokens": 4, "completion_tokens": 5}))
    assert (last.finish_reason, last.has_choices, last.carries_text) == ("length", True, False)
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (4, 5, 9)
    usage_only = read.read(orjson.dumps({"id": UPSTREAM_ID, "choices": [], "usage": {"total_tokens": 3}}))
    assert (usage_only.has_choices, usage_only.finish_reason) == (False, "")


def test_an_upstream_that_does_not_write_compact_json_is_always_parsed() -> None:
    read = reader()
    spaced = b'{"id": "chatcmpl-42", "model": "gpt-up", "choices": [{"index": 0, "delta": {"content": "a"}}]}'
    assert isinstance(read.read(spaced), ParsedChunk)
    assert isinstance(read.read(spaced), ParsedChunk)


@pytest.mark.parametrize(
    ("delta", "carries"),
    [
        ({"role": "assistant", "content": ""}, False),
        ({"content": "x"}, True),
        ({"content": "", "reasoning_content": "think"}, True),
        ({"content": None, "tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}, True),
        ({"content": '"quoted"'}, True),
        ({}, False),
    ],
)
def test_passed_and_parsed_chunks_agree_on_whether_text_went_by(delta: dict[str, Any], carries: bool) -> None:
    read = reader()
    read.read(chunk({"content": ""}))
    passed = read.read(chunk(delta))
    assert isinstance(passed, PassedChunk)
    assert passed.carries_text is carries
    assert ParsedChunk(orjson.loads(chunk(delta))).carries_text is carries


def test_an_error_chunk_raises_with_the_key_scrubbed() -> None:
    read = reader()
    read.read(chunk({"content": ""}))
    with pytest.raises(UpstreamError) as raised:
        read.read(orjson.dumps({"error": {"message": "bad key sk-secret", "code": 500}}))
    assert "sk-secret" not in raised.value.message


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]"])
def test_a_chunk_that_is_not_a_json_object_is_an_upstream_failure(payload: bytes) -> None:
    with pytest.raises(UpstreamUnavailable):
        reader().read(payload)
