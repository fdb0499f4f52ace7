"""The generated messages and stubs (`_proto`, written by `buf generate`; never edit them by hand)."""

from llmgw_client._proto.google import protobuf as pb
from llmgw_client._proto.llmgateway import v1
from llmgw_client._proto.llmgateway.admin import v1 as admin_v1

__all__ = ["admin_v1", "pb", "v1"]
