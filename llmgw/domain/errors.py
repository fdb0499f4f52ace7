"""The gateway's one error hierarchy; the REST and gRPC edges each map it with one table.

GatewayError
├── InvalidRequest             the caller's request is wrong
│   └── RequestTooLarge        the body is over http.max_body_bytes
├── Unauthenticated
├── PermissionDenied
├── NotFound                   unknown model or generation
├── RateLimited                the gateway limits the caller
│   └── Overloaded             too many requests in flight (the process's or a provider's bound)
├── UpstreamError              something went wrong on the provider's side
│   ├── UpstreamRejected       its 400/404/413/422: the request was wrong for it
│   │   └── ContextTooLong     the request is longer than the model's context
│   ├── UpstreamRateLimited    its 429
│   ├── UpstreamUnavailable    its 5xx, 401/403 on our key, refused connection, bad body
│   └── UpstreamTimeout        it said nothing in time
├── ServiceUnavailable         the gateway cannot answer now (its store does not answer)
│   └── ShuttingDown           it is stopping: new requests refused, streams past the grace ended
└── InternalError              a bug
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway reports to a client.

    `message` is safe to show: it never holds an API key or a stack trace.
    """

    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        # The generation this error ended, once one was minted; the fronts return it to the client.
        self.generation_id: str | None = None
        # The attempts made upstream before it, and the provider of the last (x-llmgw-attempts/-provider).
        self.attempts = 0
        self.provider = ""
        #: the state of the limits the request counted against (`ScopeStatus`es), for the answer's
        #: rate-limit headers: a limit's refusal, or any error answered to an admitted, limited request
        self.limit_statuses: tuple[object, ...] = ()


class InvalidRequest(GatewayError):
    default_code = "invalid_request"


class RequestTooLarge(InvalidRequest):
    default_code = "request_too_large"


class Unauthenticated(GatewayError):
    default_code = "unauthenticated"


class PermissionDenied(GatewayError):
    default_code = "permission_denied"


class NotFound(GatewayError):
    default_code = "not_found"


class RateLimited(GatewayError):
    default_code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        scope: str = "",
        reason: str = "",
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        #: Which limit refused: the kind of scope (`key`, `team`, `model`, `global`; `process` for
        #: `server.max_in_flight`) and what ran out (`requests`, `tokens`, `parallel`, `budget`, `in_flight`).
        self.scope = scope
        self.reason = reason


class Overloaded(RateLimited):
    default_code = "overloaded"


class ServiceUnavailable(GatewayError):
    default_code = "service_unavailable"


class LimitStoreUnavailable(ServiceUnavailable):
    """The store that counts requests, tokens and spend against limits cannot be reached."""

    default_code = "limits_unavailable"


class ShuttingDown(ServiceUnavailable):
    """The gateway is stopping: a new request is refused, and a stream still running when the shutdown
    grace ends is ended with this error (recorded `cancelled`, not `error`)."""

    default_code = "shutting_down"


class UpstreamError(GatewayError):
    """The provider failed us; `status` is the upstream's HTTP status when there was one."""

    default_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.status = status


class UpstreamRejected(UpstreamError):
    """The upstream answered 400, 404, 413 or 422: the request was wrong for it."""

    default_code = "upstream_rejected"


class ContextTooLong(UpstreamRejected):
    """The upstream refused the request as longer than its model's context window: never retried on the
    same model, but a model's `fallbacks_on_context` (larger contexts) may take it."""

    default_code = "context_length_exceeded"


class UpstreamRateLimited(UpstreamError):
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    default_code = "upstream_timeout"


class InternalError(GatewayError):
    default_code = "internal_error"
