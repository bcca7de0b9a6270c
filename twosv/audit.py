"""The audit trail: one row per agent read or agent/admin action, written as data."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser, User

from twosv.models import AuditEntry


@dataclass(frozen=True)
class AuditContext:
    """Where a request came from: set by the HTTP layer, carried into services."""

    request_id: str = ""
    client_ip: str | None = None


NO_CONTEXT = AuditContext()


def audit_record(
    *,
    actor: User | AnonymousUser | None,
    action: str,
    result: str,
    customer_ref: str = "",
    obj: Any = None,
    details: dict[str, Any] | None = None,
    context: AuditContext = NO_CONTEXT,
) -> AuditEntry:
    """Write one audit row. ``details`` must never hold a phone number, code or secret."""
    user = actor if isinstance(actor, User) else None
    return AuditEntry.objects.create(
        actor=user,
        actor_username=user.get_username() if user is not None else "",
        action=action,
        result=result,
        customer_ref=customer_ref,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=str(getattr(obj, "pk", "")) if obj is not None else "",
        details=details or {},
        request_id=context.request_id,
        client_ip=context.client_ip,
    )
