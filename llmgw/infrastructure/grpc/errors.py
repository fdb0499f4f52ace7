"""The gRPC edge's one table from domain errors to status codes, and the trailers that carry the rest.

A refused call's trailers hold what REST puts in its error body and headers: the OpenAI error `code`
(`x-llmgw-error-code`), the `param` it names (`x-llmgw-error-param`) and, for rate limits, `retry-after`
in whole seconds, beside the request and generation ids every answer carries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

from grpclib import GRPCError, Status

from llmgw.domain import errors
from llmgw.infrastructure.limit_headers import refusal_headers
from llmgw.infrastructure.request_ids import current_attempts, current_generation_id

log = logging.getLogger(__name__)

ERROR_CODE_HEADER = "x-llmgw-error-code"
ERROR_PARAM_HEADER = "x-llmgw-error-param"
RETRY_AFTER_HEADER = "retry-after"

# Most specific first: the first matching class wins.
_TABLE: tuple[tuple[type[errors.GatewayError], Status], ...] = (
    (errors.InvalidRequest, Status.INVALID_ARGUMENT),
    (errors.Unauthenticated, Status.UNAUTHENTICATED),
    (errors.PermissionDenied, Status.PERMISSION_DENIED),
    (errors.NotFound, Status.NOT_FOUND),
    (errors.RateLimited, Status.RESOURCE_EXHAUSTED),
    (errors.ServiceUnavailable, Status.UNAVAILABLE),
    (errors.UpstreamRejected, Status.INVALID_ARGUMENT),
    (errors.UpstreamRateLimited, Status.RESOURCE_EXHAUSTED),
    (errors.UpstreamTimeout, Status.DEADLINE_EXCEEDED),
    (errors.UpstreamError, Status.UNAVAILABLE),
    (errors.GatewayError, Status.INTERNAL),
)


def grpc_status(exc: errors.GatewayError) -> Status:
    if isinstance(exc, errors.UpstreamRejected) and exc.status == 404:
        return Status.NOT_FOUND
    for cls, status in _TABLE:
        if isinstance(exc, cls):
            return status
    raise AssertionError("GatewayError is the last row")  # pragma: no cover


class MappedError(GRPCError):
    """A domain error as the call's status, with the `trailers` that carry its code and retry-after."""

    def __init__(self, exc: errors.GatewayError) -> None:
        super().__init__(grpc_status(exc), exc.message)
        self.trailers = error_trailers(exc)


def error_trailers(exc: errors.GatewayError) -> dict[str, str]:
    trailers = {}
    if exc.code is not None:
        trailers[ERROR_CODE_HEADER] = exc.code
    if exc.param is not None:
        trailers[ERROR_PARAM_HEADER] = exc.param
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        trailers[RETRY_AFTER_HEADER] = str(max(0, math.ceil(retry_after)))
    return trailers | refusal_headers(exc)


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Turn domain errors into `GRPCError`s; a bug becomes INTERNAL, logged with its traceback."""
    try:
        yield
    except errors.GatewayError as exc:
        if exc.generation_id is not None:
            current_generation_id.set(exc.generation_id)
        if exc.attempts:
            current_attempts.set((exc.attempts, exc.provider))
        raise MappedError(exc) from exc
    except GRPCError:
        raise
    except Exception as exc:  # the edge: never leak a bug's details to the client
        log.exception("unhandled error")
        raise GRPCError(Status.INTERNAL, "internal error") from exc
