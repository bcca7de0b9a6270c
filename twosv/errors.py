"""Domain errors with stable codes; the API maps each family to an HTTP status."""

from enum import StrEnum


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
    TOO_MANY_PHONE_CHECKS = "too_many_phone_checks"
    SESSION_CLOSED = "session_closed"
    BATCH_TOO_LARGE = "batch_too_large"
    UNKNOWN_FIELD = "unknown_field"
    CONFLICT = "conflict"
    REQUEST_TOO_LARGE = "request_too_large"
    METHOD_REMOVED = "method_removed"
    EVENT_TOO_OLD = "event_too_old"
    UNKNOWN_SESSION = "unknown_session"
    INVALID_ASSERTION = "invalid_assertion"
    AGENT_NOT_ALLOWED = "agent_not_allowed"
    SERVICE_UNAVAILABLE = "service_unavailable"
    SERVER_ERROR = "server_error"


class DomainError(Exception):
    """A refused request. ``code`` is stable and machine-readable; ``field`` names the culprit."""

    code: ErrorCode = ErrorCode.INVALID

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = ErrorCode(code)
        self.field = field


class InvalidInput(DomainError):
    """The input is malformed or out of range (400)."""


class NotFound(DomainError):
    """The object doesn't exist or the caller may not know it does (404)."""

    code = ErrorCode.NOT_FOUND


class Forbidden(DomainError):
    """The caller's role may not do this (403)."""

    code = ErrorCode.PERMISSION_DENIED


class Conflict(DomainError):
    """The request contradicts the current state (409)."""

    code = ErrorCode.CONFLICT


class TooManyTries(DomainError):
    """A per-object limit is used up (429)."""

    code = ErrorCode.TOO_MANY_TRIES
