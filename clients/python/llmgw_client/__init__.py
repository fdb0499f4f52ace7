"""An async Python client for llmgw's gRPC API, shaped like the openai SDK.

async with LLMGateway("localhost:50051", api_key="sk-llmgw-...") as client:
    completion = await client.chat.completions.create(
        model="dashscope/qwen-plus", messages=[{"role": "user", "content": "Hello"}]
    )
    print(completion.choices[0].message.content, completion.generation_id)
"""

from llmgw_client._client import ChatCompletionStream, LLMGateway
from llmgw_client._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    LLMGatewayError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from llmgw_client._transport import NOT_GIVEN, Backoff, NotGiven

__version__ = "0.1.0"

__all__ = [
    "NOT_GIVEN",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "Backoff",
    "BadRequestError",
    "ChatCompletionStream",
    "InternalServerError",
    "LLMGateway",
    "LLMGatewayError",
    "NotFoundError",
    "NotGiven",
    "PermissionDeniedError",
    "RateLimitError",
]
