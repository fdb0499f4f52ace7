"""The grpclib server: our service (whose handlers carry the request ids, see `handlers`), standard health
and reflection."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2
from grpclib.server import Server

from llmgw._proto.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from llmgw.application.gateway import Gateway
from llmgw.infrastructure.grpc.messages import v1 as _v1  # noqa: F401  (registers our descriptors)
from llmgw.infrastructure.grpc.service import GatewayService
from llmgw.infrastructure.grpc.upb_codec import EncodedAwareCodec

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


def create_server(gateway: Gateway) -> Server:
    """Must be called inside the running event loop."""
    service = GatewayService(gateway)
    serving = ServiceStatus()
    serving.set(True)  # the service is healthy for as long as this server runs
    health = Health({service: [serving]})
    server = Server(
        ServerReflection.extend([service, health], pool=reflection_pool()), codec=EncodedAwareCodec()
    )
    return server
