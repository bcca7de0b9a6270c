"""Unhandled failures: the API answers in its JSON error shape, the panel with a plain page.

DRF's exception handler only knows API exceptions; anything else (a bug, the database gone)
would reach Django's HTML debug or error page, which an API client can't read. Only the
database is essential: when it is away the API answers 503 with Retry-After, so clients retry
instead of reporting a bug.
"""

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from crm_plugin.api.errors import ErrorCode, error_body

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def is_database_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database can't be reached, as opposed to a bad statement."""
    # OperationalError covers refused and dropped connections; InterfaceError a closed one.
    return isinstance(exc, OperationalError | InterfaceError)


def api_failure_response(exc: BaseException | None) -> JsonResponse:
    if exc is not None and is_database_outage(exc):
        response = JsonResponse(
            error_body(
                ErrorCode.SERVICE_UNAVAILABLE.value,
                "A service this request needs is unavailable; try again shortly.",
            ),
            status=503,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JsonResponse(
        error_body(ErrorCode.SERVER_ERROR.value, "The server failed to answer this request."),
        status=500,
    )


class ApiFaultMiddleware:
    """Render an exception that escaped a view under /api/ as the JSON error envelope."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_request(request):
            return None
        if is_database_outage(exception):
            logger.warning("Database unavailable: %s", type(exception).__name__)
        else:
            logger.error(
                "Unhandled error in %s %s",
                request.method,
                request.path,
                exc_info=(type(exception), exception, exception.__traceback__),
            )
        return api_failure_response(exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON under /api/ (a failure before any view), a plain page elsewhere."""
    if is_api_request(request):
        return api_failure_response(None)
    return defaults.server_error(request)
