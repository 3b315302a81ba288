"""One error shape for every response that is not a charge: a JSON object with
`"result": false`, a machine-readable `error` code and a readable `reason`.

Antaeus reads `result` from whatever body it gets, whatever the status, and aborts its
whole pay run on a body without it; so the DRF exception handler and Django's own
400/403/404/500 handlers all answer in this shape, never with an HTML page.
"""

import logging

from django.core.exceptions import DisallowedHost, PermissionDenied, RequestDataTooBig
from django.db import DatabaseError, connections
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than the {limit}-byte limit.")


class RequestTimeout(exceptions.APIException):
    status_code = status.HTTP_408_REQUEST_TIMEOUT
    default_code = "request_timeout"

    def __init__(self, seconds: float):
        super().__init__(f"The request body did not arrive within {seconds:g} seconds; nothing was charged.")


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"
    default_detail = (
        "Send the charge with a Content-Length header; chunked request bodies are not accepted."
    )


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = (
        "This Idempotency-Key was already used for a charge with different parameters."
    )


class StorageUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "storage_unavailable"
    default_detail = "The charge could not be recorded; nothing was charged. Retry later."


def error_body(code: str, reason: str, fields: dict | None = None) -> dict:
    body = {"result": False, "error": code, "reason": reason}
    if fields:
        body["fields"] = fields
    return body


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [f"{key}: {msg}" for key, value in detail.items() for msg in _flatten(value)]
    if isinstance(detail, list):
        return [msg for item in detail for msg in _flatten(item)]
    return [str(detail)]


def _close_connections() -> None:
    """Drop this thread's database connections after a storage error.

    Connections persist (CONN_MAX_AGE=None) and Django's SQLite backend reports them
    always usable, so one that failed (file read-only, disk I/O error) would be reused
    as it is; the next request opens a fresh one, which works again once the fault is
    gone, or fails again the same way.
    """
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except DatabaseError:
            logger.warning("closing a failed database connection failed too", exc_info=True)


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every failure on the API becomes the one error shape."""
    if isinstance(exc, DatabaseError):
        logger.exception("charge storage failed")
        _close_connections()
        exc = StorageUnavailable()
    elif not isinstance(exc, exceptions.APIException):
        # Django's Http404 and PermissionDenied keep their meaning; anything else is a bug,
        # answered in the same shape (Antaeus must still find "result") and logged in full.
        if isinstance(exc, Http404):
            exc = exceptions.NotFound()
        elif isinstance(exc, PermissionDenied):
            exc = exceptions.PermissionDenied()
        else:
            logger.exception("unhandled error in %s", context["view"].__class__.__name__)
            exc = exceptions.APIException()

    headers = {}
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(exc.wait)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = {key: [str(m) for m in _flatten(value)] for key, value in detail.items()}
        body = error_body("validation_error", " ".join(_flatten(detail)), fields)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        body = error_body(code, " ".join(_flatten(exc.detail)))
    return Response(body, status=exc.status_code, headers=headers)


# --- Django's handlers, for what never reaches a DRF view ----------------------------------


def bad_request(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(
            error_body("payload_too_large", "The request body is too large."), status=413
        )
    reason = "Bad request."
    if isinstance(exception, DisallowedHost):
        reason = "The Host header is not one this service answers to (DJANGO_ALLOWED_HOSTS)."
        return JsonResponse(error_body("disallowed_host", reason), status=400)
    return JsonResponse(error_body("bad_request", reason), status=400)


def permission_denied(request, exception=None):
    return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)


def csrf_failure(request, reason=""):
    return JsonResponse(
        error_body("csrf_failed", f"CSRF verification failed: {reason}"), status=403
    )


def not_found(request, exception=None):
    return JsonResponse(
        error_body("not_found", f"No such endpoint: {request.path}. The charge endpoint is "
                   "POST /api/v1/charges."),
        status=404,
    )


def server_error(request):
    return JsonResponse(
        error_body("server_error", "Internal server error."), status=500
    )


def login_locked_out(request, original_response=None, credentials=None):
    """django-axes' AXES_LOCKOUT_CALLABLE: the admin login refused after too many failures."""
    from django.conf import settings

    minutes = settings.AXES_COOLOFF_TIME.total_seconds() / 60
    response = JsonResponse(
        error_body(
            "login_locked_out",
            f"Too many failed admin logins: sign-in is refused for {minutes:g} minutes after the "
            "last counted failure. Nothing was checked.",
        ),
        status=429,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
