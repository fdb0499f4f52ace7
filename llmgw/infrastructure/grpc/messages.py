"""The generated protobuf modules, loaded in the order their descriptors need; import `v1` from here.

betterproto2 registers each file's descriptor at import time, so `google.protobuf` must load before
`google.api`, and both before `llmgateway.v1` and `llmgateway.admin.v1`. Alphabetical import sorting would
break that order.
"""

# ruff: noqa: I001
import llmgw._proto.google.protobuf as pb
import llmgw._proto.google.api as google_api
from llmgw._proto.llmgateway import v1
from llmgw._proto.llmgateway.admin import v1 as admin_v1

__all__ = ["admin_v1", "google_api", "pb", "v1"]
