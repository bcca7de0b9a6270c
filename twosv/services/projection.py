"""A method's projection: fold events into it, store it on the row, re-fold from the history.

Every caller holds the method's row lock (see `locking`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from twosv import policy
from twosv.models import Event, EventType, Method, TroubleshootingSession
from twosv.selectors import lock_policy, method_projection
from twosv.services.checkpoints import checkpoints_write, count_folded

# Re-exported: the re-fold has always been imported from here.
from twosv.services.checkpoints import method_refold as method_refold


def enrolled_method(data: dict[str, Any], occurred_at: datetime) -> Method:
    """Return the (unsaved) method a cleaned method_enrolled event creates."""
    return Method(
        method_id=data["method_id"],
        kind=data["kind"],
        role=data["role"],
        phone_number=data.get("phone_number") or "",
        email=data.get("email") or "",
        label=data["label"],
        visible_in_crm=data["visible_in_crm"],
        enrolled_at=occurred_at,
        phone_changed_at=occurred_at,
    )


def apply_method_attributes(
    method: Method, event_type: str, occurred_at: datetime, data: dict[str, Any]
) -> bool:
    """Apply what an event says about the method itself (removal, number on file).

    Return whether the number on file changed.
    """
    if event_type == EventType.METHOD_REMOVED:
        if method.removed_at is None or occurred_at < method.removed_at:
            method.removed_at = occurred_at
    elif event_type == EventType.PHONE_NUMBER_CHANGED:
        # Last writer by occurred_at wins, so a late, older change can't overwrite a newer one;
        # an event that repeats the number is a writer too, but changes nothing.
        written = method.phone_written_at or method.phone_changed_at
        if written is None or occurred_at >= written:
            method.phone_written_at = occurred_at
            if method.phone_number != data["phone_number"]:
                method.phone_number = data["phone_number"]
                method.phone_changed_at = occurred_at
                return True
    return False


def phone_checks_forget(customer_pks: set[int]) -> None:
    """Forget the phone verifications of the customers' open sessions: the number changed.

    A caller who matched the old number proves nothing about the new one; the agent asks again.
    Every open session row is locked (not only those with a result), so a verification running
    concurrently either finishes first and is cleared, or waits and reads the new number.
    """
    if customer_pks:
        TroubleshootingSession.objects.filter(
            customer_id__in=customer_pks, closed_at__isnull=True
        ).update(phone_number_matches=None, phone_check_misses=0)


def store_projection(method: Method, projection: policy.Projection) -> None:
    set_projection(method, projection)
    method.save(update_fields=_METHOD_FOLDED_FIELDS)


def set_projection(method: Method, projection: policy.Projection) -> None:
    method.resend_times = [t.isoformat() for t in projection.resend_times]
    lock = projection.lock
    method.locked_at = lock.locked_at if lock else None
    method.locked_until = lock.locked_until if lock else None
    method.lock_lifted_at = lock.lifted_at if lock else None
    method.lock_blocked = lock.blocked if lock else 0
    if projection.last_key is not None:
        method.last_event_at, method.last_event_id = projection.last_key


# What an event can change on the method row: the projection and the attributes events carry.
_METHOD_FOLDED_FIELDS = [
    "resend_times",
    "locked_at",
    "locked_until",
    "lock_lifted_at",
    "lock_blocked",
    "last_event_at",
    "last_event_id",
    "checkpoint_lag",
    "removed_at",
    "phone_number",
    "phone_changed_at",
    "phone_written_at",
]


def _fold_event(event: Event) -> policy.FoldEvent:
    return policy.FoldEvent(event_id=event.event_id, type=event.type, occurred_at=event.occurred_at)


def fold_into(method: Method, event: Event) -> None:
    """Fold `event` into the method's projection; the caller holds the method's row lock."""
    current = method_projection(method)
    fold_event = _fold_event(event)
    if policy.is_in_order(current, fold_event):
        # The common case: O(1) in the length of the history.
        projection, outcome = policy.apply(current, fold_event, lock_policy())
        if outcome != event.outcome:
            event.outcome = outcome
            event.save(update_fields=["outcome"])
        if count_folded(method, projection):
            checkpoints_write(method, [projection])
    else:
        projection = method_refold(method=method, late_key=fold_event.key)
    store_projection(method, projection)


def active_lock_change(
    before: policy.Projection, after: policy.Projection, now: datetime
) -> tuple[str, dict[str, str] | None, dict[str, str] | None] | None:
    """Say how the lock active at `now` differs between two projections of one method.

    Return ``(change, lock_before, lock_after)`` with change ``ended``, ``moved`` (other times)
    or ``created``, each lock as ISO times or None; None when the active lock is the same.
    """
    was, now_is = _active_lock(before, now), _active_lock(after, now)
    if was == now_is:
        return None
    change = "created" if was is None else ("ended" if now_is is None else "moved")
    return change, was, now_is


def _active_lock(projection: policy.Projection, now: datetime) -> dict[str, str] | None:
    lock = projection.lock
    if lock is None or not lock.active_at(now):
        return None
    return {"locked_at": lock.locked_at.isoformat(), "locked_until": lock.locked_until.isoformat()}
