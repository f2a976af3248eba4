"""Every error answer is an RFC 9457 problem document (``application/problem+json``).

Our exception hierarchy maps to status codes here, in one place; anything unexpected is a
500 whose body says only that, while the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from opsconductor.approvals import ApprovalRefused
from opsconductor.errors import (
    BadInput,
    Conflict,
    DatabaseError,
    IllegalTransition,
    NotFound,
    OpsError,
    PermissionDenied,
    PlanError,
    SourceError,
    StaleStatus,
    TargetResolutionError,
    Unauthenticated,
)

MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("opsconductor.api")


class FieldError(BaseModel):
    path: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    #: for invalid input: every bad field with its path (``steps[0].timeout_s``)
    errors: list[FieldError] | None = None
    #: a stable machine-readable reason where there is one (e.g. ``hash_mismatch``)
    code: str | None = None


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
        code=code,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status,
        headers=dict(headers) if headers else None,
        media_type=MEDIA_TYPE,
    )


#: Most specific first: PlanError is a BadInput but answers 422.
_STATUS: list[tuple[type[OpsError], int]] = [
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (PlanError, 422),
    (TargetResolutionError, 422),
    (BadInput, 400),
    (Conflict, 409),
    (IllegalTransition, 409),
    (StaleStatus, 409),
    (DatabaseError, 503),
    (SourceError, 502),
]


def status_of(exc: OpsError) -> int:
    if isinstance(exc, ApprovalRefused):
        if exc.reason == "self_approval":
            return 403  # separation of duties: a matter of who asks
        return 409 if exc.conflict else 400
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)


def field_errors(message: str) -> list[FieldError]:
    """Our plan errors read ``path: message; path: message``; split them for clients."""
    found = []
    for part in message.split("; "):
        path, sep, text = part.partition(": ")
        if sep and " " not in path:
            found.append(FieldError(path=path, message=text))
    return found


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


async def _ops_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpsError)
    status = status_of(exc)
    if status >= 500:
        log.error("request failed", path=request.url.path, error=str(exc))
        detail = "the database is unavailable; try again shortly" if status == 503 else str(exc)
        return problem(status, detail, instance=request.url.path)
    errors = field_errors(str(exc)) if status == 422 else None
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    code = exc.reason if isinstance(exc, ApprovalRefused) else None
    return problem(
        status, str(exc), instance=request.url.path, errors=errors, headers=headers, code=code
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(exc.status_code, detail, instance=request.url.path, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(path=_loc(tuple(e["loc"])), message=str(e["msg"])) for e in exc.errors()]
    detail = "; ".join(f"{e.path}: {e.message}" for e in errors[:3]) or "invalid request"
    return problem(422, detail, instance=request.url.path, errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # One line: the request id (also in the answer, so a report can be matched to it), the
    # exception's type and its frames without their locals (logs.configure).
    request_id = uuid.uuid4().hex
    log.error(
        "unhandled error",
        path=request.url.path,
        method=request.method,
        request_id=request_id,
        error_type=type(exc).__name__,
        exc_info=exc,
    )
    return problem(
        500,
        f"internal error (request id {request_id}); the server log has the details",
        instance=request.url.path,
        headers={"X-Request-Id": request_id},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(OpsError, _ops_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
