"""Domain errors with stable codes; the API maps each family to an HTTP status."""


class DomainError(Exception):
    """A refused request. ``code`` is stable and machine-readable; ``field`` names the culprit."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class InvalidInput(DomainError):
    """The input is malformed or out of range (400)."""


class NotFound(DomainError):
    """The object doesn't exist or the caller may not know it does (404)."""

    code = "not_found"


class Forbidden(DomainError):
    """The caller's role may not do this (403)."""

    code = "permission_denied"


class Conflict(DomainError):
    """The request contradicts the current state (409)."""

    code = "conflict"


class TooManyTries(DomainError):
    """A per-object limit is used up (429)."""

    code = "too_many_tries"
