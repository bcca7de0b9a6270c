"""Lock lifts: an admin lifts a method's lock with a reason, as a `lock_lifted` event."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.errors import ErrorCode, InvalidInput
from twosv.models import Event, EventType, Method
from twosv.selectors import method_projection
from twosv.services import locking
from twosv.services.projection import fold_into


def lock_lift(
    *,
    method: Method,
    actor: User,
    reason: str,
    context: AuditContext = NO_CONTEXT,
) -> bool:
    """Lift the method's active lock: write a ``lock_lifted`` event and an audit entry.

    Return False (and write nothing but the audit entry) when the method isn't locked.
    """
    reason = reason.strip()
    if not reason:
        raise InvalidInput(
            "Give a reason for lifting the lock.", code=ErrorCode.REQUIRED, field="reason"
        )
    now = timezone.now()
    with transaction.atomic():
        locked = locking.method_for_update(pk=method.pk)
        was_locked = method_projection(locked).is_locked(now)
        if was_locked:
            event = Event.objects.create(
                # Not built from the method_id: that is up to 128 characters itself, and the
                # event_id column holds 128.
                event_id=f"lock_lifted:{uuid.uuid4().hex}",
                type=EventType.LOCK_LIFTED,
                customer=locked.customer,
                method=locked,
                occurred_at=now,
                data={"method_id": locked.method_id, "reason": reason},
                actor=actor,
            )
            fold_into(locked, event)
        audit_record(
            actor=actor,
            action=AuditAction.LOCK_LIFT,
            result="lifted" if was_locked else "not_locked",
            customer_ref=locked.customer.customer_id,
            obj=locked,
            details={"method_id": locked.method_id, "reason": reason},
            context=context,
        )
    method.refresh_from_db()
    return was_locked
