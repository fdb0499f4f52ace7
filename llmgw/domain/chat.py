"""Chat and embeddings requests and results as the use cases see them.

Bodies stay OpenAI JSON (plain dicts): the gateway must pass every field it does not
model through untouched, so it keeps the caller's object and reads only what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmgw.domain.errors import InvalidRequest
from llmgw.domain.usage import Usage

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI chat request. `body` is the caller's JSON object; treat it as read-only."""

    model: str
    body: Mapping[str, Any]
    stream: bool = False

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def user(self) -> str:
        user = self.body.get("user")
        return user if isinstance(user, str) else ""


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """An OpenAI embeddings request; `body` as the caller sent it."""

    model: str
    body: Mapping[str, Any]

    @property
    def user(self) -> str:
        user = self.body.get("user")
        return user if isinstance(user, str) else ""

    @property
    def encoding_format(self) -> str:
        value = self.body.get("encoding_format")
        return value if isinstance(value, str) else "float"


@dataclass(slots=True)
class ChatCompletion:
    """A non-streamed answer: the OpenAI JSON object to send, and what was read from it."""

    body: JSONObject
    usage: Usage | None
    finish_reason: str = ""
    upstream_id: str = ""


@dataclass(slots=True)
class Embeddings:
    """An embeddings answer in OpenAI's shape, vectors in input order.

    A provider may hand the upstream's answer on as `text` (its JSON, unparsed: thousands of floats are
    costly to read and write again); `body` then holds only the fields set on top of it (`id`, `model`),
    which a front merges into the text.
    """

    body: JSONObject
    usage: Usage | None
    text: bytes | None = None


def parse_chat_request(body: Any, *, stream: bool | None = None) -> ChatRequest:
    """Check the fields the gateway relies on; everything else is the upstream's to judge."""
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' is required and must be an array.", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"'messages[{i}]' must be an object with a string 'role'.", param="messages")
    wants_stream = body.get("stream")
    if wants_stream is not None and not isinstance(wants_stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    return ChatRequest(model=model, body=body, stream=bool(wants_stream) if stream is None else stream)


def parse_embeddings_request(body: Any) -> EmbeddingsRequest:
    """Check `model` and `input` (a string, strings, or token arrays); the rest goes upstream."""
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    if not _valid_input(body.get("input")):
        raise InvalidRequest(
            "'input' must be a non-empty string, array of strings, or array of token arrays.", param="input"
        )
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidRequest("'dimensions' must be a positive integer.", param="dimensions")
    return EmbeddingsRequest(model=model, body=body)


def _valid_input(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) for item in value):
        return True
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return True
    return all(
        isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        for item in value
    )


def has_images(request: ChatRequest) -> bool:
    """Whether a chat request's messages hold an image part."""
    messages = request.body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    return True
    return False
