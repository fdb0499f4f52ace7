"""Adapters: configuration, providers, storage, and the gRPC and REST fronts."""
