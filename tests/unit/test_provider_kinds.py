"""Provider kinds: what each upstream is sent, and how an error inside its stream is read."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import ChatRequest, EmbeddingsRequest
from llmgw.domain.errors import UpstreamRateLimited, UpstreamRejected, UpstreamUnavailable
from llmgw.infrastructure.providers.dashscope import DashScopeQuirks
from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks

Json = dict[str, Any]

KEY = "sk-test-0123456789abcdef"
ALL_KINDS = [
    pytest.param(OpenAIQuirks(), id="openai"),
    pytest.param(DashScopeQuirks(), id="dashscope"),
]


def spec(
    upstream: str = "upstream-model", capabilities: frozenset[Capability] = frozenset({Capability.CHAT})
) -> ModelSpec:
    return ModelSpec(
        id="gw/model",
        name="Model",
        provider="gw",
        upstream_model=upstream,
        capabilities=capabilities,
    )


REASONING = spec("qwen3-plus", frozenset({Capability.CHAT, Capability.REASONING}))


def rich_body() -> Json:
    return {
        "model": "gw/model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "temperature": 0.2,
        "max_tokens": 64,
        "logit_bias": {"50256": -100},
        "user": "alice",
        "metadata": {"team": "a"},
        "reasoning_effort": "low",
        "x_vendor_field": [1, 2, 3],
    }


@pytest.mark.parametrize("quirks", ALL_KINDS)
@pytest.mark.parametrize("stream", [False, True])
def test_chat_body_keeps_every_caller_field_and_names_the_upstream_model(
    quirks: OpenAIQuirks, stream: bool
) -> None:
    body = rich_body()

    sent = quirks.chat_body(spec("vendor/model-v2"), ChatRequest("gw/model", body, stream), stream=stream)

    assert sent["model"] == "vendor/model-v2"
    for key, value in body.items():
        if key != "model":
            assert sent[key] == value, key


@pytest.mark.parametrize("quirks", ALL_KINDS)
@pytest.mark.parametrize("stream", [False, True])
def test_chat_body_leaves_the_callers_body_untouched(quirks: OpenAIQuirks, stream: bool) -> None:
    body = rich_body() | {"stream": stream, "stream_options": {"include_usage": False, "extra": 1}}
    before = copy.deepcopy(body)

    quirks.chat_body(REASONING, ChatRequest("gw/model", body, stream), stream=stream)

    assert body == before


@pytest.mark.parametrize("quirks", ALL_KINDS)
def test_a_stream_always_asks_the_upstream_for_usage(quirks: OpenAIQuirks) -> None:
    body = rich_body()

    sent = quirks.chat_body(spec(), ChatRequest("gw/model", body, True), stream=True)

    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("quirks", ALL_KINDS)
def test_a_stream_asks_for_usage_even_when_the_caller_said_no_and_keeps_other_stream_options(
    quirks: OpenAIQuirks,
) -> None:
    body = rich_body() | {"stream_options": {"include_usage": False, "include_obfuscation": False}}

    sent = quirks.chat_body(spec(), ChatRequest("gw/model", body, True), stream=True)

    assert sent["stream_options"] == {"include_usage": True, "include_obfuscation": False}


@pytest.mark.parametrize("quirks", ALL_KINDS)
def test_a_stream_is_requested_as_one_even_when_the_body_says_stream_false(quirks: OpenAIQuirks) -> None:
    # The `:stream` endpoint overrides the body's flag.
    body = rich_body() | {"stream": False}

    sent = quirks.chat_body(spec(), ChatRequest("gw/model", body, True), stream=True)

    assert sent["stream"] is True


@pytest.mark.parametrize("quirks", ALL_KINDS)
def test_a_non_stream_request_with_stream_false_keeps_it_false(quirks: OpenAIQuirks) -> None:
    body = rich_body() | {"stream": False}

    sent = quirks.chat_body(spec(), ChatRequest("gw/model", body, False), stream=False)

    assert sent["stream"] is False
    assert "stream_options" not in sent


@pytest.mark.parametrize("quirks", ALL_KINDS)
def test_a_non_stream_answer_to_a_body_that_said_stream_true_is_not_streamed_upstream(
    quirks: OpenAIQuirks,
) -> None:
    body = rich_body() | {"stream": True}

    sent = quirks.chat_body(spec(), ChatRequest("gw/model", body, False), stream=False)

    assert sent["stream"] is False


@pytest.mark.parametrize("quirks", ALL_KINDS)
def test_a_non_stream_request_without_stream_does_not_gain_one(quirks: OpenAIQuirks) -> None:
    sent = quirks.chat_body(spec(), ChatRequest("gw/model", rich_body(), False), stream=False)

    assert "stream" not in sent
    assert "stream_options" not in sent


def test_dashscope_turns_thinking_off_for_a_non_stream_request_to_a_reasoning_model() -> None:
    sent = DashScopeQuirks().chat_body(REASONING, ChatRequest("gw/model", rich_body(), False), stream=False)

    assert sent["enable_thinking"] is False


def test_dashscope_leaves_thinking_alone_when_streaming_a_reasoning_model() -> None:
    sent = DashScopeQuirks().chat_body(REASONING, ChatRequest("gw/model", rich_body(), True), stream=True)

    assert "enable_thinking" not in sent


def test_dashscope_leaves_thinking_alone_for_a_model_that_does_not_reason() -> None:
    sent = DashScopeQuirks().chat_body(spec(), ChatRequest("gw/model", rich_body(), False), stream=False)

    assert "enable_thinking" not in sent


@pytest.mark.parametrize("choice", [True, False])
@pytest.mark.parametrize("stream", [False, True])
def test_dashscope_keeps_the_callers_own_thinking_choice(choice: bool, stream: bool) -> None:
    body = rich_body() | {"enable_thinking": choice, "thinking_budget": 512}

    sent = DashScopeQuirks().chat_body(REASONING, ChatRequest("gw/model", body, stream), stream=stream)

    assert sent["enable_thinking"] is choice
    assert sent["thinking_budget"] == 512


def test_other_kinds_never_add_enable_thinking() -> None:
    quirks = OpenAIQuirks()  # openai and openrouter
    sent = quirks.chat_body(REASONING, ChatRequest("gw/model", rich_body(), False), stream=False)

    assert "enable_thinking" not in sent


EMBEDDINGS = spec("text-embedding-v4", frozenset({Capability.EMBEDDINGS}))


def test_dashscope_embeddings_are_always_asked_for_as_floats() -> None:
    body: Json = {"model": "gw/model", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256}

    sent = DashScopeQuirks().embeddings_body(EMBEDDINGS, EmbeddingsRequest("gw/model", body))

    assert sent == {
        "model": "text-embedding-v4",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 256,
    }
    assert body["encoding_format"] == "base64"


def test_other_kinds_pass_the_callers_embeddings_encoding_through() -> None:
    quirks = OpenAIQuirks()  # openai and openrouter
    body: Json = {"model": "gw/model", "input": "a", "encoding_format": "base64", "user": "bob"}

    sent = quirks.embeddings_body(EMBEDDINGS, EmbeddingsRequest("gw/model", body))

    assert sent == {"model": "text-embedding-v4", "input": "a", "encoding_format": "base64", "user": "bob"}


def test_dashscope_limits_embeddings_batches_to_ten_inputs_of_text_only() -> None:
    quirks = DashScopeQuirks()

    assert quirks.max_embedding_inputs == 10
    assert quirks.supports_token_input is False
    assert OpenAIQuirks().max_embedding_inputs is None


ORDINARY_CHUNKS: list[Json] = [
    {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    {"id": "c1", "choices": [{"index": 0, "delta": {}}], "error": None},
]


@pytest.mark.parametrize("quirks", ALL_KINDS)
@pytest.mark.parametrize("chunk", ORDINARY_CHUNKS)
def test_an_ordinary_chunk_is_not_an_error(quirks: OpenAIQuirks, chunk: Json) -> None:
    assert quirks.stream_error(chunk, provider="p", secret=KEY) is None


def test_an_openai_error_event_becomes_an_upstream_failure_with_its_message() -> None:
    chunk: Json = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}

    error = OpenAIQuirks().stream_error(chunk, provider="local", secret=KEY)

    assert isinstance(error, UpstreamUnavailable)
    assert error.status == 502
    assert "The server had an error" in error.message
    assert error.message.startswith("local")


def test_an_openrouter_error_chunk_mid_stream_becomes_an_upstream_failure() -> None:
    chunk: Json = {
        "id": "gen-123",
        "object": "chat.completion.chunk",
        "error": {"code": 502, "message": "Provider disconnected"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }

    error = OpenAIQuirks().stream_error(chunk, provider="openrouter", secret=KEY)

    assert isinstance(error, UpstreamUnavailable)
    assert error.status == 502
    assert error.code == "502"
    assert "Provider disconnected" in error.message


def test_an_openrouter_rate_limit_chunk_mid_stream_becomes_a_rate_limit() -> None:
    chunk: Json = {"error": {"code": 429, "message": "Rate limit exceeded"}, "choices": []}

    error = OpenAIQuirks().stream_error(chunk, provider="openrouter", secret=KEY)

    assert isinstance(error, UpstreamRateLimited)
    assert error.status == 429


def test_a_dashscope_moderation_event_mid_stream_is_a_rejected_request() -> None:
    chunk: Json = {
        "error": {
            "code": "data_inspection_failed",
            "param": None,
            "message": "Output data may contain inappropriate content.",
            "type": "data_inspection_failed",
        },
        "request_id": "abc-123",
    }

    error = DashScopeQuirks().stream_error(chunk, provider="dashscope", secret=KEY)

    # DashScope answers this code with HTTP 400 before a stream; mid-stream it must mean the same.
    assert isinstance(error, UpstreamRejected)
    assert error.status == 400
    assert error.code == "data_inspection_failed"
    assert "inappropriate content" in error.message


def test_a_stream_error_never_carries_the_providers_key() -> None:
    chunk: Json = {"error": {"code": 401, "message": f"Incorrect API key provided: {KEY}"}}

    error = OpenAIQuirks().stream_error(chunk, provider="local", secret=KEY)

    assert error is not None
    assert KEY not in error.message
    assert "***" in error.message
