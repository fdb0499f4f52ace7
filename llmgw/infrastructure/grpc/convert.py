"""Pure conversions between the gRPC API's proto messages and the OpenAI JSON the use cases work on.

Chat is lossless. A field the proto defines is unset whether the JSON leaves it out or sets it to null
(`"refusal": null`, `"logprobs": null`, `"finish_reason": null`, `"usage": null`): a defined field never
appears in `extra`. An explicit null is named in its message's `null_fields` and comes back as null.
A value no proto field holds exactly (unknown keys and their nulls, wrong types, empty lists) travels
verbatim in the nearest `extra` and is merged back (deep, `extra` wins). Known losses: nulls inside the
nested messages that have no `extra` (a tool call, its function, an image URL, a tool's definition)
come back missing; missing keys the OpenAI schema requires (`id`, `model`, `choices`, `index`, usage
token counts, a tool's `type`, ...) come back with their defaults; a string `stop` comes back as a
one-element list; a request message without `content` gets `"content": null`; numbers inside Struct
values are doubles (whole ones up to 2**53 come back as ints, larger ones as doubles). Embeddings: one
input comes back as a plain string, and responses keep only modelled fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from llmgw.domain.catalog import ModelSpec
from llmgw.infrastructure.grpc.convert_chat import (
    chat_chunk_from_proto,
    chat_chunk_to_proto,
    chat_completion_from_proto,
    chat_completion_to_proto,
    chat_request_from_json,
    chat_request_to_json,
    encode_chat_chunk,
    encode_chat_completion,
)
from llmgw.infrastructure.grpc.json_fields import Reader, field, fits, merged, present
from llmgw.infrastructure.grpc.messages import v1
from llmgw.infrastructure.grpc.upb_codec import Encoded, build, encode, upb
from llmgw.infrastructure.model_json import model_json

__all__ = [
    "chat_chunk_from_proto",
    "chat_chunk_to_proto",
    "chat_completion_from_proto",
    "chat_completion_to_proto",
    "chat_request_from_json",
    "chat_request_to_json",
    "embeddings_request_from_json",
    "embeddings_request_to_json",
    "embeddings_response_from_proto",
    "embeddings_response_to_proto",
    "encode_chat_chunk",
    "encode_chat_completion",
    "encode_embeddings_response",
    "model_to_proto",
]


def embeddings_request_to_json(request: v1.CreateEmbeddingsRequest | Message) -> dict[str, Any]:
    """The OpenAI body: one text input as a plain string, several as a list, token inputs as id lists."""
    msg: Any = upb(v1.CreateEmbeddingsRequest, request)
    out: dict[str, Any] = {"model": msg.model}
    if msg.input:
        out["input"] = msg.input[0] if len(msg.input) == 1 else list(msg.input)
    elif msg.token_input:
        out["input"] = [list(tokens.ids) for tokens in msg.token_input]
    out |= present(msg, ("dimensions", "encoding_format", "user"))
    return merged(out, msg)


def embeddings_request_from_json(body: Mapping[str, Any]) -> v1.CreateEmbeddingsRequest:
    """The proto for an OpenAI embeddings body (for clients and tests); unknown keys go to `extra`."""
    r = Reader(body)
    texts, tokens = _inputs_in(r)
    fields = {
        "model": r.scalar("model", "str") or "",
        "input": texts,
        "token_input": tokens,
        "dimensions": r.scalar("dimensions", "int32"),
        "encoding_format": r.scalar("encoding_format", "str"),
        "user": r.scalar("user", "str"),
        "extra": r.leftover(),
        "null_fields": r.nulls,
    }
    return build(v1.CreateEmbeddingsRequest, fields)


def _inputs_in(r: Reader) -> tuple[list[str], list[dict[str, Any]]]:
    value = r.read("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        return [], []
    if all(isinstance(item, str) for item in value):
        del r.rest["input"]
        return value, []
    if all(fits(item, "int64") for item in value):
        value = [value]  # one input given as a flat list of token ids
    if all(isinstance(ids, list) and all(fits(i, "int64") for i in ids) for ids in value):
        del r.rest["input"]
        return [], [{"ids": ids} for ids in value]
    return [], []


def embeddings_response_to_proto(body: Mapping[str, Any]) -> v1.CreateEmbeddingsResponse:
    return build(v1.CreateEmbeddingsResponse, _embeddings_response_fields(body))


def encode_embeddings_response(body: Mapping[str, Any]) -> Encoded:
    """The gRPC answer's bytes, straight from the OpenAI JSON (the hot path)."""
    return Encoded(encode(v1.CreateEmbeddingsResponse, _embeddings_response_fields(body)))


def _embeddings_response_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """Float vectors go to `embedding`, base64 ones (encoding_format "base64") to `embedding_base64`."""
    usage = body.get("usage")
    return {
        "id": str(body.get("id") or ""),
        "object": str(body.get("object") or "list"),
        "model": str(body.get("model") or ""),
        "data": [_embedding_in(item) for item in body.get("data") or []],
        "usage": _embeddings_usage_in(usage) if isinstance(usage, Mapping) else None,
    }


def _embedding_in(item: Mapping[str, Any]) -> dict[str, Any]:
    vector = item.get("embedding")
    return {
        "object": str(item.get("object") or "embedding"),
        "index": int(item.get("index") or 0),
        "embedding": vector if isinstance(vector, list) else [],
        "embedding_base64": vector if isinstance(vector, str) else "",
    }


def _embeddings_usage_in(usage: Mapping[str, Any]) -> dict[str, Any]:
    cost: Any = usage.get("cost")
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
        "cost": float(cost) if fits(cost, "double") else None,
    }


def embeddings_response_from_proto(response: v1.CreateEmbeddingsResponse | Message) -> dict[str, Any]:
    msg: Any = upb(v1.CreateEmbeddingsResponse, response)
    out: dict[str, Any] = {"id": msg.id} if msg.id else {}
    out |= {"object": msg.object or "list", "model": msg.model}
    out["data"] = [
        {
            "object": item.object or "embedding",
            "index": item.index,
            "embedding": item.embedding_base64 or list(item.embedding),
        }
        for item in msg.data
    ]
    if (usage := field(msg, "usage")) is not None:
        out["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}
        out["usage"] |= present(usage, ("cost",))
    return out


def model_to_proto(model: ModelSpec) -> v1.Model:
    """The REST front's model entry, field by field: one list of a model's public fields for both fronts."""
    return v1.Model(**model_json(model))
