"""The API's error shape: ``{"error": {"code", "message", "field"?}}`` with stable codes."""

from enum import StrEnum
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from twosv import errors as domain


class ErrorCode(StrEnum):
    """Every machine-readable error code the API answers with. Clients match on these."""

    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_ACCEPTABLE = "not_acceptable"
    PARSE_ERROR = "parse_error"
    INVALID = "invalid"
    REQUIRED = "required"
    THROTTLED = "throttled"
    INVALID_CUSTOMER_ID = "invalid_customer_id"
    UNKNOWN_CUSTOMER = "unknown_customer"
    UNKNOWN_METHOD = "unknown_method"
    METHOD_EXISTS = "method_exists"
    METHOD_OF_OTHER_CUSTOMER = "method_of_other_customer"
    FORBIDDEN_EVENT_TYPE = "forbidden_event_type"
    METHOD_RECEIVES_NO_CODES = "method_receives_no_codes"
    NO_PHONE_NUMBER = "no_phone_number"
    INVALID_PHONE_NUMBER = "invalid_phone_number"
    TOO_MANY_TRIES = "too_many_tries"
    SESSION_CLOSED = "session_closed"
    BATCH_TOO_LARGE = "batch_too_large"
    UNKNOWN_FIELD = "unknown_field"
    CONFLICT = "conflict"
    REQUEST_TOO_LARGE = "request_too_large"
    METHOD_REMOVED = "method_removed"
    UNKNOWN_SESSION = "unknown_session"


_DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.InvalidInput: status.HTTP_400_BAD_REQUEST,
    domain.NotFound: status.HTTP_404_NOT_FOUND,
    domain.Forbidden: status.HTTP_403_FORBIDDEN,
    domain.Conflict: status.HTTP_409_CONFLICT,
    domain.TooManyTries: status.HTTP_429_TOO_MANY_REQUESTS,
}


class ErrorDetailOutput(serializers.Serializer):
    """One error: a stable code, a readable message, and the field at fault where there is one."""

    code = serializers.CharField(help_text="Stable and machine-readable; match on this.")
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="Present when one field is at fault.")


class ErrorOutput(serializers.Serializer):
    """The body of every 4xx answer."""

    error = ErrorDetailOutput()


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


def domain_error_status(exc: domain.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in _DOMAIN_STATUS:
            return _DOMAIN_STATUS[cls]
    return status.HTTP_400_BAD_REQUEST


class ApiError(exceptions.APIException):
    """An error with a stable code and, where one field is at fault, that field's name."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        status_code: int = status.HTTP_400_BAD_REQUEST,
    ) -> None:
        super().__init__(detail=message, code=code.value)
        self.error_code = code
        self.field = field
        self.status_code = status_code


def first_validation_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """Return (field, code, message) of the first error in a ValidationError's detail tree."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            return first_validation_error(value, path)
    if isinstance(detail, list) and detail:
        first = detail[0]
        if isinstance(first, dict | list):
            return first_validation_error(first, prefix)
        return (prefix or None, getattr(first, "code", "invalid") or "invalid", str(first))
    return (prefix or None, getattr(detail, "code", "invalid") or "invalid", str(detail))


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render every API error in the one error shape, keeping DRF's status and headers."""
    if isinstance(exc, domain.DomainError):
        return Response(
            error_body(exc.code, exc.message, exc.field), status=domain_error_status(exc)
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, RequestDataTooBig):
        # Django would answer its own HTML 400 page; answer in the API's shape instead.
        exc = RequestTooLarge()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        response.data = error_body(exc.error_code.value, str(exc.detail), exc.field)
    elif isinstance(exc, exceptions.ValidationError):
        field, code, message = first_validation_error(exc.detail)
        if code not in {c.value for c in ErrorCode}:
            code = ErrorCode.INVALID.value
        response.data = error_body(code, message, field)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else ErrorCode.INVALID.value
        response.data = error_body(code, str(exc.detail))
    return response


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a URL no route matches: in the error shape under /api/, Django's page elsewhere.

    A malformed id in a path (``twosv/sessions/not-a-uuid/``) matches no route at all; an API
    client must still get JSON, as for an unknown id.
    """
    if request.path.startswith("/api/"):
        body = error_body(ErrorCode.NOT_FOUND.value, str(exceptions.NotFound.default_detail))
        return JsonResponse(body, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)
