"""Fast protobuf on the hot path: upb (protobuf's C runtime) encodes answers and decodes requests.

betterproto2 works in pure Python: ~200 µs to encode one stream chunk, ~22 µs to decode a one-message chat
request. upb builds and serialises the same answer from keyword fields (Struct fields from plain dicts, None
for unset) in ~10 µs, and decodes that request in under 1 µs. The classes come from the descriptors
betterproto2 already registered, so the bytes are those of our generated messages.

Messages are written and read (by `encode`, by the server's codec, and by `upb` for a betterproto2 message,
as clients and tests build them) through twins whose Struct fields hold the Struct's raw bytes: upb keeps a
Struct's keys in a hash map, which iterates in hash order, while JSON Schemas, tool parameters and `extra`
must reach the upstream in the order the client wrote them (structured outputs generate properties in
schema order). `struct_bytes` writes and reads those bytes in order.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message
from grpclib import GRPCError, Status
from grpclib.encoding.proto import ProtoCodec

from llmgw.infrastructure.grpc.messages import v1  # noqa: F401  (registers the descriptors the twins copy)

M = TypeVar("M")


def encode(betterproto_class: type, fields: dict[str, Any]) -> bytes:
    """The wire bytes of `betterproto_class` with `fields`: keyword fields of its upb twin, Struct fields as
    the bytes `struct_bytes.struct_bytes` wrote (keys in order)."""
    data: bytes = _twin_class(betterproto_class)(**fields).SerializeToString()
    return data


_STRUCT = ".google.protobuf.Struct"
_TWINS = descriptor_pool.DescriptorPool()


@functools.cache
def _twin_class(message_type: type) -> type[Message]:
    """The upb class that writes and reads `message_type`: for our messages, the twin with Struct fields as
    raw bytes (at any depth); for others (health, reflection) the message's own upb class."""
    descriptor: Descriptor = message_type.DESCRIPTOR  # type: ignore[attr-defined]
    if not descriptor.full_name.startswith("llmgateway."):
        own: type[Message] = message_factory.GetMessageClass(descriptor)
        return own
    _add_twin_file(descriptor.file)
    twin: type[Message] = message_factory.GetMessageClass(_TWINS.FindMessageTypeByName(descriptor.full_name))
    return twin


def _add_twin_file(file: FileDescriptor) -> None:
    try:
        _TWINS.FindFileByName(file.name)
        return
    except KeyError:
        pass
    for dependency in file.dependencies:
        _add_twin_file(dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    if proto.package.startswith("llmgateway."):
        for message in proto.message_type:
            _structs_as_bytes(message)
    _TWINS.Add(proto)


def _structs_as_bytes(message: descriptor_pb2.DescriptorProto) -> None:
    """Struct fields become `optional bytes` (same wire format; presence kept by a synthetic oneof), and a
    repeated one would become `repeated bytes`."""
    for nested in message.nested_type:
        _structs_as_bytes(nested)
    for field in message.field:
        if field.type_name != _STRUCT:
            continue
        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        field.ClearField("type_name")
        repeated = field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        if not repeated and not field.HasField("oneof_index"):
            field.proto3_optional = True
            field.oneof_index = len(message.oneof_decl)
            message.oneof_decl.add(name=f"_{field.name}")


def upb(betterproto_class: type, message: Any) -> Message:
    """`message` as the upb message the converters read (Struct fields as raw bytes, see the module's
    docstring): itself if it is one already, else its betterproto2 twin re-read."""
    if isinstance(message, Message):
        return message
    parsed: Message = _twin_class(betterproto_class).FromString(bytes(message))
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


class EncodedAwareCodec(ProtoCodec):
    """The server's codec: grpclib's protobuf codec, plus pass-through of `Encoded` answers, and requests
    decoded by upb into the messages the converters read (see `upb`). Bytes that are not a valid message of
    the type are the client's fault: INVALID_ARGUMENT (betterproto2 accepts some truncated ones)."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            return _twin_class(message_type).FromString(data)
        except DecodeError as exc:
            name = message_type.__name__
            raise GRPCError(Status.INVALID_ARGUMENT, f"the request is not a valid {name} message") from exc
