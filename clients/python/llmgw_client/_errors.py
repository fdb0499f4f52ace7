"""The exceptions a call raises: the openai SDK's tree, over gRPC statuses.

    LLMGatewayError
    └── APIError                      .message .code .param .request_id .generation_id
        ├── APIStatusError            .status (grpclib.Status) .retry_after
        │   ├── BadRequestError       INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        │   ├── AuthenticationError   UNAUTHENTICATED
        │   ├── PermissionDeniedError PERMISSION_DENIED
        │   ├── NotFoundError         NOT_FOUND
        │   ├── RateLimitError        RESOURCE_EXHAUSTED
        │   └── InternalServerError   UNAVAILABLE (the gateway's), INTERNAL, UNKNOWN, ...
        └── APIConnectionError        the gateway could not be reached, or the connection broke
            └── APITimeoutError       the call's deadline passed (DEADLINE_EXCEEDED)

`code` is the gateway's OpenAI error code (`model_not_found`, `invalid_api_key`, ...), sent in the
`x-llmgw-error-code` trailer; `retry_after` comes from the `retry-after` trailer of a rate limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from grpclib.const import Status

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "InternalServerError",
    "LLMGatewayError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
]

ERROR_CODE_HEADER = "x-llmgw-error-code"
ERROR_PARAM_HEADER = "x-llmgw-error-param"
RETRY_AFTER_HEADER = "retry-after"
REQUEST_ID_HEADER = "x-request-id"
GENERATION_ID_HEADER = "x-generation-id"


class LLMGatewayError(Exception):
    """Everything this client raises."""


class APIError(LLMGatewayError):
    """A call that failed; what the gateway said about it, when it said anything."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        generation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.request_id = request_id
        self.generation_id = generation_id


class APIStatusError(APIError):
    """The gateway answered the call with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: Status,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        generation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, request_id=request_id, generation_id=generation_id)
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        code = f" ({self.code})" if self.code else ""
        return f"{self.status.name}{code}: {self.message}"


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class APIConnectionError(APIError):
    """The call never got an answer: nothing listens there, TLS failed, or the connection broke."""

    def __init__(
        self,
        message: str = "Connection error.",
        *,
        code: str | None = None,
        request_id: str | None = None,
        generation_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, request_id=request_id, generation_id=generation_id)


class APITimeoutError(APIConnectionError):
    """The call's deadline (its `timeout`) passed before the answer ended."""

    def __init__(
        self,
        message: str = "Request timed out.",
        *,
        code: str | None = None,
        request_id: str | None = None,
        generation_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, request_id=request_id, generation_id=generation_id)


_BY_STATUS: dict[Status, type[APIStatusError]] = {
    Status.INVALID_ARGUMENT: BadRequestError,
    Status.FAILED_PRECONDITION: BadRequestError,
    Status.OUT_OF_RANGE: BadRequestError,
    Status.UNAUTHENTICATED: AuthenticationError,
    Status.PERMISSION_DENIED: PermissionDeniedError,
    Status.NOT_FOUND: NotFoundError,
    Status.RESOURCE_EXHAUSTED: RateLimitError,
}


def status_error(status: Status, message: str | None, metadata: Mapping[str, object]) -> APIError:
    """The exception for an answer with `status`, reading the gateway's trailers from `metadata`.

    DEADLINE_EXCEEDED is a timeout whoever noticed it. UNAVAILABLE without the gateway's error code comes
    from the transport (a proxy, a server going away), so it is a connection error; with one, the
    gateway's upstream failed and it is a server error, as a 502/503 is for the openai SDK.
    """
    code = _text(metadata.get(ERROR_CODE_HEADER))
    request_id = _text(metadata.get(REQUEST_ID_HEADER))
    generation_id = _text(metadata.get(GENERATION_ID_HEADER))
    text = message or status.name
    if status is Status.DEADLINE_EXCEEDED:
        return APITimeoutError(text, code=code, request_id=request_id, generation_id=generation_id)
    if status in (Status.UNAVAILABLE, Status.CANCELLED) and code is None:
        return APIConnectionError(text, request_id=request_id, generation_id=generation_id)
    cls = _BY_STATUS.get(status, InternalServerError)
    return cls(
        text,
        status=status,
        code=code,
        param=_text(metadata.get(ERROR_PARAM_HEADER)),
        request_id=request_id,
        generation_id=generation_id,
        retry_after=_seconds(metadata.get(RETRY_AFTER_HEADER)),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value: object) -> float | None:
    try:
        seconds = float(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
