"""llmgw: an OpenAI-compatible LLM gateway with a gRPC and a REST front."""

__version__ = "0.1.0"
