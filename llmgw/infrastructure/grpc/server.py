"""The grpclib server: our service, standard health and reflection, request ids through events."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpclib.events import RecvRequest, SendInitialMetadata, SendTrailingMetadata, listen
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2
from grpclib.server import Server
from multidict import MultiDict

from llmgw._proto.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from llmgw.application.gateway import Gateway
from llmgw.infrastructure.grpc.messages import v1 as _v1  # noqa: F401  (registers our descriptors)
from llmgw.infrastructure.grpc.service import GatewayService
from llmgw.infrastructure.grpc.wire import EncodedAwareCodec
from llmgw.infrastructure.request_ids import (
    GENERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    accept_or_mint,
    current_generation_id,
    current_request_id,
)

_GATEWAY_PROTO = "llmgateway/v1/gateway.proto"


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool with our files, health and reflection, so grpcurl can describe everything."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    add(default_google_proto_descriptor_pool.FindFileByName(_GATEWAY_PROTO))
    add(health_pb2.DESCRIPTOR)
    add(reflection_pb2.DESCRIPTOR)
    return pool


async def _on_request(event: RecvRequest) -> None:
    value = event.metadata.get(REQUEST_ID_HEADER)
    current_request_id.set(accept_or_mint(value if isinstance(value, str) else None))


async def _on_metadata(event: SendInitialMetadata | SendTrailingMetadata) -> None:
    """Request id (and generation id, once minted) in the initial metadata, or the trailers of an error."""
    ids = {REQUEST_ID_HEADER: current_request_id.get(), GENERATION_ID_HEADER: current_generation_id.get()}
    missing = {key: value for key, value in ids.items() if value is not None and key not in event.metadata}
    if missing:
        metadata: MultiDict[str | bytes] = MultiDict(event.metadata)
        metadata.update(missing)
        event.metadata = metadata  # type: ignore[assignment]  # grpclib's _Metadata is a MultiDict alias


def create_server(gateway: Gateway) -> Server:
    """Must be called inside the running event loop."""
    service = GatewayService(gateway)
    serving = ServiceStatus()
    serving.set(True)  # the service is healthy for as long as this server runs
    health = Health({service: [serving]})
    server = Server(
        ServerReflection.extend([service, health], pool=reflection_pool()), codec=EncodedAwareCodec()
    )
    listen(server, RecvRequest, _on_request)
    listen(server, SendInitialMetadata, _on_metadata)
    listen(server, SendTrailingMetadata, _on_metadata)
    return server
