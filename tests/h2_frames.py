"""What a raw HTTP/2 client needs to speak gRPC to the gateway frame by frame (with `h2`)."""

from __future__ import annotations


def list_models_headers(port: int) -> list[tuple[str, str]]:
    """The request headers of a ListModels call, as a gRPC client sends them."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", "/llmgateway.v1.LlmGatewayService/ListModels"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
