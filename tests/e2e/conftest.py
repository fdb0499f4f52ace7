"""E2E fixtures: grpcio stubs compiled from our protos during the test run, never committed."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


@dataclass(frozen=True)
class GrpcioStubs:
    """The grpcio modules for llmgateway.v1 (`*_pb2` messages, `gateway_pb2_grpc` stub)."""

    models: Any
    chat: Any
    generation: Any
    gateway_grpc: Any


@pytest.fixture(scope="session")
def grpcio_stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcioStubs]:
    """llmgateway.v1 compiled by grpc_tools.protoc in this test run, as a plain grpcio user would.

    Only our own files are compiled: `google.api` comes from googleapis-common-protos, so the output
    folder holds no `google` package that could shadow the real namespace.
    """
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("grpcio_stubs")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "llmgateway" / "v1").glob("*.proto"))
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    assert code == 0, "protoc failed to compile proto/llmgateway/v1"
    sys.path.insert(0, str(out))
    try:
        yield GrpcioStubs(
            models=importlib.import_module("llmgateway.v1.models_pb2"),
            chat=importlib.import_module("llmgateway.v1.chat_pb2"),
            generation=importlib.import_module("llmgateway.v1.generation_pb2"),
            gateway_grpc=importlib.import_module("llmgateway.v1.gateway_pb2_grpc"),
        )
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "llmgateway" or n.startswith("llmgateway.")]:
            del sys.modules[name]
