"""One JSON error shape for every 4xx/5xx: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

import errno
import logging
from typing import Any

import nats.errors
import nats.js.errors
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiot.bus.client import is_storage_full
from aiot.errors import PlatformError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    503: "service_unavailable",
    507: "insufficient_storage",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _platform_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlatformError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if exc.status_code == 413:
        # The rest of an oversized body is never read: close the connection after answering, or the server
        # would keep reading and discarding whatever the client goes on sending (a declared 10 GiB, or forever).
        headers = {"Connection": "close"}
    if exc.status_code == 429 or (exc.status_code == 503 and "retry_after" in exc.details):
        headers = {"Retry-After": str(exc.details.get("retry_after", 1))}
    return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status_code, headers=headers)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return JSONResponse(error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None))


def plain_message(err: dict[str, Any]) -> str:
    """A person's wording for a pydantic error ("String should have at least 2 characters" reads like a parser's
    complaint on a form): by error type, with pydantic's own text for the rest."""
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    given = err.get("input")
    if kind == "missing" or (kind == "string_too_short" and given in ("", None)):
        return "is required"
    if kind == "string_too_short":
        return f"needs at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be {'at least' if kind.endswith('equal') else 'more than'} {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be {'at most' if kind.endswith('equal') else 'less than'} {ctx.get('le', ctx.get('lt'))}"
    if kind in ("int_parsing", "int_type", "float_parsing", "float_type"):
        return "must be a number" if kind.startswith("float") else "must be a whole number"
    if kind == "string_pattern_mismatch":
        return f"does not have the expected form ({ctx.get('pattern')})"
    return str(err.get("msg", ""))


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
            "message": plain_message(err),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems[:5])
    return JSONResponse(error_body("validation_failed", f"invalid request: {summary}", {"problems": problems}), 422)


# Connection-level NATS failures only: other NATS errors (a missing object, a bad request) stay bugs (500).
BUS_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    nats.errors.OutboundBufferLimitError,
)


def _bus_error(_request: Request, exc: Exception) -> JSONResponse:
    """NATS unreachable or not answering (e.g. while the embedded server restarts): retryable, not a bug."""
    log.warning("message bus unavailable: %s: %s", type(exc).__name__, exc)
    return JSONResponse(
        error_body("service_unavailable", "the message bus is not answering right now; try again in a few seconds"),
        503,
        headers={"Retry-After": "2"},
    )


def _disk_full_detail(exc: BaseException) -> str | None:
    """What filled up, when `exc` means "no space left" (the disk, SQLite, PostgreSQL or the NATS store)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{exc.strerror or 'no space left on device'}{f': {exc.filename}' if exc.filename else ''}"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        text = str(exc.orig)
        # SQLite: SQLITE_FULL; PostgreSQL: SQLSTATE 53100 disk_full (psycopg's DiskFull)
        if (
            "database or disk is full" in text
            or "No space left on device" in text
            or getattr(exc.orig, "sqlstate", None) == "53100"
        ):
            return f"database: {text.splitlines()[0]}"
    if is_storage_full(exc):
        return f"message store: {getattr(exc, 'description', exc)}"
    return None


def _maybe_disk_full(request: Request, exc: Exception) -> JSONResponse:
    """No space left: 507 with what filled up, logged as a warning (retry once space is freed); else a bug."""
    detail = _disk_full_detail(exc)
    if detail is None:
        return _unexpected(request, exc)
    log.warning("disk full: %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, detail)
    return JSONResponse(
        error_body(
            "insufficient_storage",
            f"the disk under the platform's data directory is full "
            f"({detail}); the request was not completed: free some "
            "space and try again",
            {"reason": detail},
        ),
        507,
    )


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error; see the control plane log"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PlatformError, _platform_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for unavailable in BUS_UNAVAILABLE:
        app.add_exception_handler(unavailable, _bus_error)
    for maybe_full in (OSError, sqlalchemy.exc.OperationalError, nats.js.errors.APIError):
        app.add_exception_handler(maybe_full, _maybe_disk_full)
    app.add_exception_handler(Exception, _unexpected)
