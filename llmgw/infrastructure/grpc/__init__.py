"""The gRPC front: proto ↔ OpenAI JSON conversion and the service served over grpclib."""
