"""Every error leaves the API as JSON in OpenAI's shape: ``{"error": {message, type, param, code}}``.

Only this module translates genbot's error tree into HTTP statuses, by the one table in
``genbot.errors``; routes just raise. Anything unexpected is logged with its traceback and
answered with a JSON 500 (the schemathesis tests check that no input gets there).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from genbot.errors import GenbotError, RetryLater, describe

log = logging.getLogger("genbot.api")


class ErrorDetail(BaseModel):
    """What went wrong (OpenAI's error object)."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}


_DESCRIPTIONS = {
    400: "Invalid request (parameters out of range, bad corpus, …)",
    401: "Missing, invalid or revoked API key",
    403: "The API key lacks the admin scope",
    404: "No such model, job, corpus or version",
    413: "Request body over the size limit",
    422: "Request does not match the schema",
    429: "Rate limit or daily quota reached; see Retry-After",
    503: "The engine's queue is full; see Retry-After",
}
# Statuses any authenticated route may answer.
COMMON = (400, 401, 404, 413, 422, 429, 503)


class ApiError(Exception):
    """An HTTP-level refusal raised by the API itself (auth, limits, caps)."""

    def __init__(
        self, status: int, message: str, kind: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.retry_after = retry_after


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, kind: str, *, param: str | None = None, retry_after: float | None = None
) -> JSONResponse:
    """A JSON error response, with Retry-After (whole seconds, at least 1) when given."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse(error_body(message, kind, param=param, code=kind), status_code=status, headers=headers)


def translate(error: GenbotError) -> JSONResponse:
    """The response for one of genbot's own errors."""
    row = describe(error)
    retry = error.retry_after if isinstance(error, RetryLater) else None
    if row.http_status >= 500 and retry is None:
        log.error("configuration error while serving a request: %s", error)
    return error_response(row.http_status, str(error), row.api_type, retry_after=retry)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure a JSON error body."""
    app.add_exception_handler(GenbotError, _on_genbot_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


async def _on_genbot_error(_request: Request, exc: Exception) -> JSONResponse:
    """genbot's own errors → their status."""
    assert isinstance(exc, GenbotError)
    return translate(exc)


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    """Auth, limit and cap refusals → their status (401 names the Bearer scheme)."""
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.message, exc.kind, retry_after=exc.retry_after)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """Schema mismatches → 422 naming the first bad field."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return JSONResponse(
        error_body(message, "invalid_request_error", param=param, code="invalid_request_error"), status_code=422
    )


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (404 route, 405 method, 413 body) as JSON."""
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not_found", 413: "request_too_large"}.get(exc.status_code, "invalid_request_error")
    response = error_response(exc.status_code, str(exc.detail), kind)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: log the traceback, answer a JSON 500 without details."""
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error (logged on the server)", "server_error")
