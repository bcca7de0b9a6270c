"""The API's error shape: ``{"error": {"code", "message", "field"?}}`` with stable codes."""

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from twosv import errors as domain
from twosv.errors import ErrorCode

# ErrorCode lives in the domain; it is re-exported here for the API's modules.
__all__ = [
    "ErrorCode",
    "ErrorDetailOutput",
    "ErrorOutput",
    "RequestTooLarge",
    "domain_error_status",
    "error_body",
    "exception_handler",
    "first_validation_error",
    "page_not_found",
]


_DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.InvalidInput: status.HTTP_400_BAD_REQUEST,
    domain.NotFound: status.HTTP_404_NOT_FOUND,
    domain.Forbidden: status.HTTP_403_FORBIDDEN,
    domain.Conflict: status.HTTP_409_CONFLICT,
    domain.TooManyTries: status.HTTP_429_TOO_MANY_REQUESTS,
}


class ErrorDetailOutput(serializers.Serializer):
    """One error: a stable code, a readable message, and the field at fault where there is one."""

    code = serializers.ChoiceField(
        choices=[code.value for code in ErrorCode],
        help_text="Stable and machine-readable; match on this.",
    )
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="Present when one field is at fault.")


class ErrorOutput(serializers.Serializer):
    """The body of every 4xx answer."""

    error = ErrorDetailOutput()


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = ErrorCode.REQUEST_TOO_LARGE.value
    default_detail = "The request body is too large."


def domain_error_status(exc: domain.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in _DOMAIN_STATUS:
            return _DOMAIN_STATUS[cls]
    return status.HTTP_400_BAD_REQUEST


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
    if isinstance(exc, exceptions.ValidationError):
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
