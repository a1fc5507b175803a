"""Every error the API returns, in one shape: ``{"error": {"code", "message"}}``.

A :class:`~corral.exceptions.CorralError` keeps its code and HTTP status; a request that fails
validation becomes ``invalid_input`` (422) with a message naming the bad field; unknown routes and
methods get ``not_found``/``method_not_allowed``; anything unexpected is logged and answered with a
generic 500 that leaks no internals. This module must not decide what is an error: it only renders.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral import exceptions
from corral.wire import NO_CONTROL, ErrorBody

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (401, "No valid bearer token (code `unauthorized`)."),
        (403, "The token's role or owner does not allow this (code `forbidden`)."),
        (404, "No such object (codes `*_not_found`)."),
        (409, "The object's state does not allow this (codes `conflict`, `ticket_closed`, ...)."),
        (422, "Bad input (code `invalid_input` and its subclasses), naming the bad field."),
        (
            503,
            "The server is stopping or its store is unavailable (codes `server_stopping`, "
            "`store_error`); retry after `Retry-After` seconds.",
        ),
    ]
}
"""The error responses every route declares in the OpenAPI schema."""


RETRY_AFTER = "1"
"""Seconds a client should wait before retrying a 503 (the server stops, the store is busy)."""


def render(error: exceptions.CorralError) -> JSONResponse:
    """The HTTP response for ``error``.

    A store failure is answered with a generic message: the store's own message may carry a
    SQL statement and its parameters, which belong in the server log, never in an answer.
    """
    if isinstance(error, exceptions.StoreError):
        log.warning("store error answered as 503: %s", error)
        error = exceptions.StoreError("the store is unavailable; try again")
    headers = {"Retry-After": RETRY_AFTER} if error.http_status == 503 else None
    return JSONResponse(error.to_dict(), status_code=error.http_status, headers=headers)


def _location(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        where, rest = parts[0], parts[1:]
        return f"{where} field '{'.'.join(rest)}'" if rest else f"request {where}"
    return ".".join(parts) or "request"


def validation_message(errors: Sequence[object]) -> str:
    """One line naming every bad field of a failed request validation."""
    problems = []
    for err in errors:
        if isinstance(err, dict):
            loc = err.get("loc", ())
            msg = err.get("msg", "is not valid")
            if err.get("type") == "string_pattern_mismatch":
                ctx = err.get("ctx")
                if isinstance(ctx, dict) and ctx.get("pattern") == NO_CONTROL:
                    msg = "control characters (such as NUL) are refused"
            problems.append(f"{_location(loc if isinstance(loc, list | tuple) else ())}: {msg}")
    return "; ".join(problems) or "the request is not valid"


async def _corral_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, exceptions.CorralError):  # pragma: no cover - registered for it
        return await _unexpected(request, exc)
    return render(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for it
        return await _unexpected(request, exc)
    return render(exceptions.InvalidInput(validation_message(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        return await _unexpected(request, exc)
    error: exceptions.CorralError
    if exc.status_code == 400:
        # e.g. a body that is not UTF-8: bad input like any other, so the same code and status.
        error = exceptions.InvalidInput(f"request body: {exc.detail}")
    elif exc.status_code == 404:
        error = exceptions.NotFound(f"no such endpoint: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = exceptions.MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}"
        )
    else:
        error = exceptions.CorralError(str(exc.detail))
        return JSONResponse(error.to_dict(), status_code=exc.status_code)
    return render(error)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return render(exceptions.CorralError("internal error; see the server log"))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""
    app.add_exception_handler(exceptions.CorralError, _corral_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
