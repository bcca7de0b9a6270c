"""What the HTTP layer hands to services about the request: the audit context and the actor."""

import ipaddress
from typing import Any

from django.contrib.auth.models import User
from rest_framework.exceptions import NotAuthenticated
from rest_framework.settings import api_settings

from twosv.audit import AuditContext


def audit_context(request: Any) -> AuditContext:
    """Return the request id and the client's address (see `client_ip`).

    The API, the panel and the admin all build their audit context here, so the address in
    the audit trail is the one the throttles see.
    """
    return AuditContext(
        request_id=getattr(request, "request_id", "") or "",
        client_ip=client_ip(request),
    )


def client_ip(request: Any) -> str | None:
    """Return the client's address the way DRF's throttles find it (``NUM_PROXIES``).

    With ``NUM_PROXIES`` unset or 0, REMOTE_ADDR: an ``X-Forwarded-For`` the caller writes is
    never trusted. With N proxies in front, each appending the address it saw, the client is
    the Nth address from the right of ``X-Forwarded-For`` (the leftmost if there are fewer);
    whatever is left of it was written by the caller and is ignored. An entry that isn't an IP
    address (a proxy misconfigured, a forged header) falls back to REMOTE_ADDR.
    """
    meta = request.META
    remote_addr = _ip_or_none(meta.get("REMOTE_ADDR"))
    num_proxies = api_settings.NUM_PROXIES or 0
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if num_proxies <= 0 or not forwarded:
        return remote_addr
    addresses = forwarded.split(",")
    return _ip_or_none(addresses[-min(num_proxies, len(addresses))]) or remote_addr


def _ip_or_none(value: Any) -> str | None:
    """Return `value` as a normalized IP address, or None if it is none (the column is inet)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def acting_user(request: Any) -> User:
    """Return the authenticated user; permission classes ran first, so there is one."""
    user = request.user
    if not isinstance(user, User):  # pragma: no cover - guarded by the permission classes
        raise NotAuthenticated()
    return user
