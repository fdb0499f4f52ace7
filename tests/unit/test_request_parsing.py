"""Request parsing: what the gateway refuses (and names the field), and what it reads from a valid body."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw.domain.chat import parse_chat_request, parse_embeddings_request
from llmgw.domain.errors import InvalidRequest

Json = dict[str, Any]

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> Json:
    return {"model": "openrouter/openai/gpt-4o", "messages": MESSAGES} | fields


def without(body: Json, key: str) -> Json:
    return {k: v for k, v in body.items() if k != key}


@pytest.mark.parametrize(
    "body",
    [None, [], "model", 42, [chat()]],
    ids=["null", "array", "string", "number", "array-of-bodies"],
)
def test_a_chat_body_that_is_not_an_object_is_refused(body: Any) -> None:
    with pytest.raises(InvalidRequest, match="JSON object") as caught:
        parse_chat_request(body)

    assert caught.value.param is None


CHAT_REJECTIONS = [
    pytest.param(without(chat(), "model"), "model", id="model-missing"),
    pytest.param(chat(model=""), "model", id="model-empty"),
    pytest.param(chat(model=None), "model", id="model-null"),
    pytest.param(chat(model=7), "model", id="model-number"),
    pytest.param(chat(model=["a/b"]), "model", id="model-array"),
    pytest.param(without(chat(), "messages"), "messages", id="messages-missing"),
    pytest.param(chat(messages=None), "messages", id="messages-null"),
    pytest.param(chat(messages="hi"), "messages", id="messages-string"),
    pytest.param(chat(messages={"role": "user"}), "messages", id="messages-object"),
    pytest.param(chat(messages=[]), "messages", id="messages-empty"),
    pytest.param(chat(messages=[{"content": "hi"}]), "messages", id="message-without-role"),
    pytest.param(chat(messages=[{"role": None, "content": "hi"}]), "messages", id="message-role-null"),
    pytest.param(chat(messages=[{"role": 1, "content": "hi"}]), "messages", id="message-role-number"),
    pytest.param(chat(messages=[*MESSAGES, "hi"]), "messages", id="message-not-object"),
    pytest.param(chat(stream="true"), "stream", id="stream-string"),
    pytest.param(chat(stream=1), "stream", id="stream-number"),
    pytest.param(chat(stream_options=[]), "stream_options", id="stream-options-array"),
    pytest.param(chat(stream_options="include_usage"), "stream_options", id="stream-options-string"),
    pytest.param(chat(stream_options=True), "stream_options", id="stream-options-bool"),
]


@pytest.mark.parametrize(("body", "param"), CHAT_REJECTIONS)
def test_an_invalid_chat_request_is_refused_naming_the_field(body: Json, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body)

    assert caught.value.param == param
    assert caught.value.code == "invalid_request"
    assert param in caught.value.message


def test_the_refusal_of_a_bad_message_says_which_message() -> None:
    with pytest.raises(InvalidRequest, match=r"messages\[2\]"):
        parse_chat_request(chat(messages=[*MESSAGES, *MESSAGES, {"content": "no role"}]))


def test_a_valid_chat_request_keeps_the_callers_body_as_is() -> None:
    body = chat(temperature=0.1, tools=[{"type": "function"}], x_vendor={"k": 1})

    request = parse_chat_request(body)

    assert request.model == "openrouter/openai/gpt-4o"
    assert request.body == body


@pytest.mark.parametrize(("flag", "expected"), [(True, True), (False, False), (None, False)])
def test_stream_is_read_from_the_body(flag: bool | None, expected: bool) -> None:
    body = chat() if flag is None else chat(stream=flag)

    assert parse_chat_request(body).stream is expected


@pytest.mark.parametrize("flag", [True, False, None])
def test_the_stream_endpoint_forces_streaming_whatever_the_body_says(flag: bool | None) -> None:
    body = chat() if flag is None else chat(stream=flag)

    assert parse_chat_request(body, stream=True).stream is True


def test_a_non_stream_override_answers_in_one_piece_even_if_the_body_asks_to_stream() -> None:
    assert parse_chat_request(chat(stream=True), stream=False).stream is False


def test_an_invalid_stream_flag_is_refused_even_when_the_endpoint_overrides_it() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(stream="yes"), stream=True)

    assert caught.value.param == "stream"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"include_usage": True}, True),
        ({"include_usage": False}, False),
        ({"include_usage": "true"}, False),
        ({"include_usage": 1}, False),
        ({}, False),
        (None, False),
    ],
)
def test_include_usage_is_true_only_when_the_caller_asked_with_true(
    options: Json | None, expected: bool
) -> None:
    body = chat(stream=True) if options is None else chat(stream=True, stream_options=options)

    assert parse_chat_request(body).include_usage is expected


@pytest.mark.parametrize(("user", "expected"), [("alice", "alice"), (None, ""), (42, ""), ({"id": "a"}, "")])
def test_the_chat_user_is_read_when_it_is_a_string(user: Any, expected: str) -> None:
    body = chat() if user is None else chat(user=user)

    assert parse_chat_request(body).user == expected


def embed(**fields: Any) -> Json:
    return {"model": "dashscope/text-embedding-v4", "input": ["a", "b"]} | fields


@pytest.mark.parametrize("body", [None, [], "text", 3], ids=["null", "array", "string", "number"])
def test_an_embeddings_body_that_is_not_an_object_is_refused(body: Any) -> None:
    with pytest.raises(InvalidRequest, match="JSON object") as caught:
        parse_embeddings_request(body)

    assert caught.value.param is None


EMBEDDINGS_REJECTIONS = [
    pytest.param(without(embed(), "model"), "model", id="model-missing"),
    pytest.param(embed(model=""), "model", id="model-empty"),
    pytest.param(embed(model=3), "model", id="model-number"),
    pytest.param(without(embed(), "input"), "input", id="input-missing"),
    pytest.param(embed(input=None), "input", id="input-null"),
    pytest.param(embed(input=""), "input", id="input-empty-string"),
    pytest.param(embed(input=[]), "input", id="input-empty-array"),
    pytest.param(embed(input=42), "input", id="input-number"),
    pytest.param(embed(input={"text": "a"}), "input", id="input-object"),
    pytest.param(embed(input=["a", 1]), "input", id="input-mixed-string-and-token"),
    pytest.param(embed(input=["a", ["b"]]), "input", id="input-mixed-string-and-array"),
    pytest.param(embed(input=[1, [2]]), "input", id="input-mixed-token-and-array"),
    pytest.param(embed(input=[True, False]), "input", id="input-bools"),
    pytest.param(embed(input=[1.5, 2.5]), "input", id="input-floats"),
    pytest.param(embed(input=[[1, 2], []]), "input", id="input-empty-token-array"),
    pytest.param(embed(input=[[1, "2"]]), "input", id="input-token-array-with-string"),
    pytest.param(embed(input=[[1, True]]), "input", id="input-token-array-with-bool"),
    pytest.param(embed(input=[[[1]]]), "input", id="input-nested-too-deep"),
    pytest.param(embed(input=[["a"]]), "input", id="input-array-of-string-arrays"),
    pytest.param(embed(encoding_format="base32"), "encoding_format", id="encoding-unknown"),
    pytest.param(embed(encoding_format=""), "encoding_format", id="encoding-empty"),
    pytest.param(embed(encoding_format=1), "encoding_format", id="encoding-number"),
    pytest.param(embed(dimensions=0), "dimensions", id="dimensions-zero"),
    pytest.param(embed(dimensions=-256), "dimensions", id="dimensions-negative"),
    pytest.param(embed(dimensions=True), "dimensions", id="dimensions-bool"),
    pytest.param(embed(dimensions=256.0), "dimensions", id="dimensions-float"),
    pytest.param(embed(dimensions="256"), "dimensions", id="dimensions-string"),
]


@pytest.mark.parametrize(("body", "param"), EMBEDDINGS_REJECTIONS)
def test_an_invalid_embeddings_request_is_refused_naming_the_field(body: Json, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_embeddings_request(body)

    assert caught.value.param == param
    assert param in caught.value.message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("one text", id="string"),
        pytest.param(["a", "b", "c"], id="strings"),
        pytest.param([1, 2, 3], id="token-array"),
        pytest.param([[1, 2], [3]], id="token-arrays"),
    ],
)
def test_every_openai_input_shape_is_accepted(value: Any) -> None:
    body = embed(input=value)

    request = parse_embeddings_request(body)

    assert request.model == "dashscope/text-embedding-v4"
    assert request.body == body


@pytest.mark.parametrize(
    ("encoding", "expected"), [("float", "float"), ("base64", "base64"), (None, "float")]
)
def test_the_encoding_format_defaults_to_float(encoding: str | None, expected: str) -> None:
    body = embed() if encoding is None else embed(encoding_format=encoding)

    assert parse_embeddings_request(body).encoding_format == expected


def test_positive_dimensions_and_the_user_are_kept() -> None:
    request = parse_embeddings_request(embed(dimensions=64, user="bob"))

    assert request.body["dimensions"] == 64
    assert request.user == "bob"


def test_an_embeddings_request_without_a_string_user_has_no_user() -> None:
    assert parse_embeddings_request(embed()).user == ""
    assert parse_embeddings_request(embed(user=["bob"])).user == ""
