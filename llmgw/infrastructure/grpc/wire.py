"""Fast protobuf on the hot path: upb (protobuf's C runtime) encodes answers and decodes requests.

betterproto2 works in pure Python: ~200 µs to encode one stream chunk, ~22 µs to decode a one-message chat
request. upb builds and serialises the same answer from keyword fields (Struct fields from plain dicts, None
for unset) in ~10 µs, and decodes that request in under 1 µs. The classes come from the descriptors
betterproto2 already registered, so the bytes are those of our generated messages. The server's codec hands
the handlers upb messages; the converters read upb messages (`upb` turns a betterproto2 one, as clients and
tests build them, into its twin).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from grpclib import GRPCError, Status
from grpclib.encoding.proto import ProtoCodec

from llmgw.infrastructure.grpc.messages import v1  # noqa: F401  (registers our descriptors for `_upb_class`)

M = TypeVar("M")


@functools.cache
def _upb_class(betterproto_class: type) -> type[Message]:
    descriptor = betterproto_class.DESCRIPTOR  # type: ignore[attr-defined]
    upb_class: type[Message] = message_factory.GetMessageClass(descriptor)
    return upb_class


def encode(betterproto_class: type, fields: dict[str, Any]) -> bytes:
    """The wire bytes of `betterproto_class` with `fields` (keyword fields of its upb twin)."""
    data: bytes = _upb_class(betterproto_class)(**fields).SerializeToString()
    return data


def upb(betterproto_class: type, message: Any) -> Message:
    """`message` as a upb message: itself if it is one already, else its betterproto2 twin re-read."""
    if isinstance(message, Message):
        return message
    parsed: Message = _upb_class(betterproto_class).FromString(bytes(message))
    return parsed


def build(betterproto_class: type[M], fields: dict[str, Any]) -> M:
    """The betterproto2 message for `fields`, for clients and tests (the hot path sends bytes)."""
    parsed: M = betterproto_class.parse(encode(betterproto_class, fields))  # type: ignore[attr-defined]
    return parsed


class Encoded:
    """A message already serialised by `encode`; `EncodedAwareCodec` sends its bytes as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Framed:
    """Several messages of a stream, each already encoded and framed as gRPC frames them (a zero flag
    byte, a 4-byte big-endian length, the bytes): the handler sends them in one DATA write."""

    __slots__ = ("count", "data")

    def __init__(self, messages: list[bytes]) -> None:
        self.data = b"".join([b"\x00" + len(m).to_bytes(4, "big") + m for m in messages])
        self.count = len(messages)


class EncodedAwareCodec(ProtoCodec):
    """The server's codec: grpclib's protobuf codec, plus pass-through of `Encoded` answers, and requests
    decoded by upb into upb messages (the handlers only read them). Bytes that are not a valid message of
    the type are the client's fault: INVALID_ARGUMENT (betterproto2 accepts some truncated ones)."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            return _upb_class(message_type).FromString(data)
        except DecodeError as exc:
            name = message_type.__name__
            raise GRPCError(Status.INVALID_ARGUMENT, f"the request is not a valid {name} message") from exc
