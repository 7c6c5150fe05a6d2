"""Errors a person can act on. The API turns each into `{"error": {"code", "message", "details"}}`.

Raise these from any layer (service logic, validation); only the API layer knows about HTTP status codes, and
it reads them from `status_code` here so the mapping lives in one place.
"""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    """Base of every error that is the caller's to fix (4xx) or an outside service's (503)."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        if field is not None:
            self.details.setdefault("field", field)


class ValidationFailed(PlatformError):
    status_code = 422
    code = "validation_failed"


class Unauthorized(PlatformError):
    status_code = 401
    code = "unauthorized"


class Forbidden(PlatformError):
    status_code = 403
    code = "forbidden"


class NotFound(PlatformError):
    status_code = 404
    code = "not_found"


class Conflict(PlatformError):
    status_code = 409
    code = "conflict"


class TooManyRequests(PlatformError):
    """Slow down: try again after `retry_after` seconds (sent as the `Retry-After` header)."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field, details={"retry_after": retry_after})
        self.retry_after = retry_after


class PayloadTooLarge(PlatformError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(PlatformError):
    status_code = 503
    code = "service_unavailable"


class UpstreamTimeout(PlatformError):
    """A workload the platform forwarded to (a model replica) did not answer in time."""

    status_code = 504
    code = "gateway_timeout"


class InsufficientStorage(PlatformError):
    """The disk under the data directory (or the NATS store's reservation) is full: retry once space is freed."""

    status_code = 507
    code = "insufficient_storage"
