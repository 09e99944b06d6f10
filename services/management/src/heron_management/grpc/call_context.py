"""What every call shares: the bearer token in its metadata, and errors as gRPC status codes."""

from typing import Any, NoReturn

import grpc

from heron_management.errors import (
    AckTimeoutError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    ManagementError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    SupersededError,
    UnavailableError,
)

MAX_TOKEN_CHARS = 512  # longer is not a token; refuse before hashing it

# most specific first: the first class an error is an instance of decides
_CODES: tuple[tuple[type[ManagementError], Any], ...] = (
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (SupersededError, grpc.StatusCode.ABORTED),
    (ConflictError, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (AckTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ProtocolError, grpc.StatusCode.FAILED_PRECONDITION),
)


def bearer_token(context: Any) -> str | None:
    """The token of ``authorization: Bearer <token>``, or None when the call carries none."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and len(token) <= MAX_TOKEN_CHARS:
            return token
    return None


def status_code(error: ManagementError) -> Any:
    return next(
        (code for kind, code in _CODES if isinstance(error, kind)), grpc.StatusCode.INTERNAL
    )


async def abort(context: Any, error: ManagementError) -> NoReturn:
    """End the call with ``error``'s status code and message (raises)."""
    await context.abort(status_code(error), str(error))
    raise AssertionError("context.abort returned")  # it always raises
