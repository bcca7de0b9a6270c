"""Checkpoints of a method's projection, and the re-fold that starts from one.

A checkpoint is the projection after folding the method's events up to and including its key
``(event_at, event_id)``. One is written every ``TWOSV_CHECKPOINT_EVERY`` events folded (the
method's ``checkpoint_lag`` counts them), so a late event re-folds from the latest checkpoint
before it and reads only the events after that checkpoint: its cost grows with the events
after its ``occurred_at`` plus at most that many, never with the whole history
(docs/performance.md, "Checkpoints"). The retention purge keeps one at its horizon
(`retention`). Every caller holds the method's row lock.

Keys are compared in Python, not in SQL: the database orders ``event_id`` by its collation,
the fold by code point. SQL only narrows by ``occurred_at``, the exact cut is made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings

from twosv import policy
from twosv.models import Event, Method, MethodCheckpoint
from twosv.selectors import lock_policy

Key = tuple[datetime, str]


def checkpoint_every() -> int:
    """Return how many folded events a checkpoint is written after (TWOSV_CHECKPOINT_EVERY)."""
    return int(settings.TWOSV_CHECKPOINT_EVERY)


def checkpoint_row(method: Method, projection: policy.Projection) -> MethodCheckpoint:
    """Return the (unsaved) checkpoint of `projection`, which has folded at least one event."""
    assert projection.last_key is not None
    lock = projection.lock
    return MethodCheckpoint(
        method=method,
        event_at=projection.last_key[0],
        event_id=projection.last_key[1],
        resend_times=[t.isoformat() for t in projection.resend_times],
        locked_at=lock.locked_at if lock else None,
        locked_until=lock.locked_until if lock else None,
        lock_lifted_at=lock.lifted_at if lock else None,
        lock_blocked=lock.blocked if lock else 0,
    )


def checkpoint_projection(checkpoint: MethodCheckpoint) -> policy.Projection:
    """Return the projection a checkpoint holds."""
    lock = None
    if checkpoint.locked_at is not None and checkpoint.locked_until is not None:
        lock = policy.Lock(
            checkpoint.locked_at,
            checkpoint.locked_until,
            checkpoint.lock_lifted_at,
            blocked=checkpoint.lock_blocked,
        )
    return policy.Projection(
        resend_times=tuple(datetime.fromisoformat(t) for t in checkpoint.resend_times),
        lock=lock,
        last_key=(checkpoint.event_at, checkpoint.event_id),
    )


def checkpoints_write(method: Method, projections: Iterable[policy.Projection]) -> None:
    """Store checkpoints of the method (projections folded in order, in one INSERT)."""
    rows = [checkpoint_row(method, projection) for projection in projections]
    if rows:
        MethodCheckpoint.objects.bulk_create(rows)


def count_folded(method: Method, projection: policy.Projection) -> bool:
    """Count one event folded in order into `projection`; True when a checkpoint is due.

    When due, the lag starts again from 0 and the caller stores a checkpoint of `projection`.
    """
    method.checkpoint_lag += 1
    every = checkpoint_every()
    if every and method.checkpoint_lag >= every:
        method.checkpoint_lag = 0
        return True
    return False


def checkpoint_before(method: Method, key: Key) -> MethodCheckpoint | None:
    """Return the method's latest checkpoint whose key sorts before `key`; None if none."""
    candidates = list(
        MethodCheckpoint.objects.filter(method=method, event_at__lte=key[0]).order_by("-event_at")[
            :_SAME_TIME
        ]
    )
    before = [c for c in candidates if (c.event_at, c.event_id) < key]
    if not before and len(candidates) == _SAME_TIME:
        # Many checkpoints at the very same time as `key`: take the latest strictly before it.
        before = list(
            MethodCheckpoint.objects.filter(method=method, event_at__lt=key[0]).order_by(
                "-event_at"
            )[:1]
        )
    return max(before, key=lambda c: (c.event_at, c.event_id), default=None)


# Checkpoints read at once when looking for the one before a key; more than this at one
# instant only happens with thousands of events at the same microsecond.
_SAME_TIME = 8


def events_after(
    method: Method, start: policy.Projection, *, before: datetime | None = None
) -> list[tuple[int, str, policy.FoldEvent]]:
    """Return the method's stored events that sort after `start`: (pk, outcome, fold event).

    One query on (method, occurred_at): only the events from the checkpoint's time on are read
    (and, with `before`, only those that occurred before it), as plain rows: a model instance
    each cost more than the fold itself.
    """
    events = Event.objects.filter(method=method)
    if start.last_key is not None:
        events = events.filter(occurred_at__gte=start.last_key[0])
    if before is not None:
        events = events.filter(occurred_at__lt=before)
    rows = events.values_list("pk", "outcome", "event_id", "type", "occurred_at").order_by()
    after = [
        (pk, outcome, policy.FoldEvent(event_id, type_, occurred_at))
        for pk, outcome, event_id, type_, occurred_at in rows
    ]
    if start.last_key is None:
        return after
    return [row for row in after if row[2].key > start.last_key]


def method_refold(*, method: Method, late_key: Key | None = None) -> policy.Projection:
    """Re-fold the method from its latest checkpoint before `late_key`; fix events' outcomes.

    Without `late_key` (or with no checkpoint before it) the whole history is folded. The
    checkpoints after the start are dropped and written again on the way, and the method's
    ``checkpoint_lag`` set to the events folded after the last one. The caller stores the
    projection returned on the method row.
    """
    start_checkpoint = checkpoint_before(method, late_key) if late_key is not None else None
    stale = MethodCheckpoint.objects.filter(method=method)
    start = policy.EMPTY
    if start_checkpoint is not None:
        start = checkpoint_projection(start_checkpoint)
        stale = stale.filter(event_at__gte=start_checkpoint.event_at).exclude(
            pk=start_checkpoint.pk
        )
    stale.delete()

    rows = events_after(method, start)
    stored = {fold_event.event_id: (pk, outcome) for pk, outcome, fold_event in rows}
    every = checkpoint_every()
    projection, outcomes, checkpoints = policy.fold_from(
        start, (fold_event for _, _, fold_event in rows), lock_policy(), every
    )
    changed = []
    for fold_event, outcome in outcomes:
        pk, stored_outcome = stored[fold_event.event_id]
        if stored_outcome != outcome:
            changed.append(Event(pk=pk, outcome=outcome))
    Event.objects.bulk_update(changed, ["outcome"], batch_size=500)
    checkpoints_write(method, checkpoints)
    method.checkpoint_lag = len(outcomes) % every if every else 0
    return projection
