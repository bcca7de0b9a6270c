"""What the HTTP layer hands to services about the request: the audit context and the actor."""

from typing import Any

from django.contrib.auth.models import User
from rest_framework.exceptions import NotAuthenticated

from twosv.audit import AuditContext


def audit_context(request: Any) -> AuditContext:
    """Return the request id and the client address as Django sees it (REMOTE_ADDR)."""
    # REMOTE_ADDR, not X-Forwarded-For: a header the caller writes can't be trusted unless a
    # proxy we run overwrites it, and that's the deployment's job to put into REMOTE_ADDR.
    return AuditContext(
        request_id=getattr(request, "request_id", "") or "",
        client_ip=request.META.get("REMOTE_ADDR") or None,
    )


def acting_user(request: Any) -> User:
    """Return the authenticated user; permission classes ran first, so there is one."""
    user = request.user
    if not isinstance(user, User):  # pragma: no cover - guarded by the permission classes
        raise NotAuthenticated()
    return user
