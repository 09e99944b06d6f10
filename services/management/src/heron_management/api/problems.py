"""Every error as an RFC 9457 problem response, mapped in this one place.

A reason a person can act on goes in ``detail``; per-field reasons go in ``errors`` with the
location of the field in the body. Nothing else (no traceback, no SQL) ever leaves the server.
"""

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from heron_management.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    ManagementError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    UnavailableError,
)

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_STATUS: dict[type[ManagementError], HTTPStatus] = {
    AuthenticationError: HTTPStatus.UNAUTHORIZED,
    PermissionDeniedError: HTTPStatus.FORBIDDEN,
    NotFoundError: HTTPStatus.NOT_FOUND,
    ConflictError: HTTPStatus.CONFLICT,
    InvalidRequestError: HTTPStatus.UNPROCESSABLE_ENTITY,
    UnavailableError: HTTPStatus.SERVICE_UNAVAILABLE,
    ProtocolError: HTTPStatus.BAD_REQUEST,
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where in the request: body keys and list indexes")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def problem_response(
    status: HTTPStatus,
    detail: str | None,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=status.phrase, status=status.value, detail=detail, instance=instance, errors=errors
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status.value,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ManagementError, _management_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _management_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ManagementError)
    status = next(s for kind, s in _STATUS.items() if isinstance(exc, kind))
    errors = None
    if isinstance(exc, InvalidRequestError):
        errors = [FieldError(loc=list(p.loc), message=p.message) for p in exc.problems]
    headers = {"WWW-Authenticate": "Token"} if isinstance(exc, AuthenticationError) else None
    detail = "the request breaks the rules below" if errors else str(exc)
    return problem_response(
        status, detail, instance=request.url.path, errors=errors, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    if any(e.get("type") == "json_invalid" for e in raw):
        message = next(e for e in raw if e.get("type") == "json_invalid").get("ctx", {})
        reason = message.get("error", "malformed JSON") if isinstance(message, dict) else ""
        return problem_response(
            HTTPStatus.BAD_REQUEST,
            f"the body is not valid JSON: {reason}",
            instance=request.url.path,
        )
    errors = [FieldError(loc=_location(e.get("loc", ())), message=_message(e)) for e in raw]
    return problem_response(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "the request breaks the rules below",
        instance=request.url.path,
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = HTTPStatus(exc.status_code)
    detail = exc.detail if exc.detail != status.phrase else None
    return problem_response(
        status, detail, instance=request.url.path, headers=getattr(exc, "headers", None)
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", path=request.url.path, exc_info=exc)
    return problem_response(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "the server hit an unexpected error; it has been logged",
        instance=request.url.path,
    )


def _location(loc: Any) -> list[str | int]:
    parts = [p if isinstance(p, int) else str(p) for p in loc]
    return parts[1:] if parts and parts[0] == "body" else parts


def _message(error: Any) -> str:
    message = str(error.get("msg", "invalid value"))
    prefix = "Value error, "
    if message.startswith(prefix):
        return message.removeprefix(prefix)
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    return message[:1].lower() + message[1:]
