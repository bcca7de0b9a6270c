"""Producer events in: one at a time (`event_ingest`) or in a batch (`events_ingest_batch`).

Both go through one core: lock the methods named (`_methods_locked`), resolve each event's
method (`_event_method`), fold it into the projection in memory (`_event_fold`), and store
every touched method once (`_methods_store`). Only the writes differ: one event is inserted
through the ORM (its row is answered), a batch's as rows with one INSERT.

A late event (one that sorts before events already folded) re-folds its method. When that
re-fold ends, moves or creates the lock active now, the core writes an audit entry naming the
producer (`actor`): a backdated event can change a lock, but never without a trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from twosv import policy
from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.errors import Conflict, DomainError, ErrorCode
from twosv.models import Customer, Event, EventType, Method
from twosv.selectors import lock_policy, method_projection
from twosv.services import locking
from twosv.services.checkpoints import checkpoints_write, count_folded
from twosv.services.event_rows import EventRow, events_insert
from twosv.services.projection import (
    active_lock_change,
    apply_method_attributes,
    enrolled_method,
    method_refold,
    phone_checks_forget,
    set_projection,
    store_projection,
)
from twosv.services.validation import event_data_clean


@dataclass(frozen=True)
class IngestResult:
    status: Literal["accepted", "duplicate"]
    event: Event
    method: Method | None


@dataclass(frozen=True)
class BatchItemResult:
    """One event's answer in a batch: ``method`` is the method as it stood after the event."""

    status: Literal["accepted", "duplicate", "rejected"]
    method: Method | None = None
    error: DomainError | None = None


# ---------------------------------------------------------------------------------------------
# The core, shared by both paths
# ---------------------------------------------------------------------------------------------


@dataclass
class _MethodInFlight:
    """A method events are folded into: the locked (or new) row and its projection in memory."""

    method: Method
    owner: str
    projection: policy.Projection
    new: bool = False
    touched: bool = False
    refold: bool = False
    snapshot: Method | None = None
    number_changed: bool = False
    # The first event that arrived late (its id and type), which put the method up for a re-fold.
    late_event: tuple[str, str] | None = None
    # The smallest key of the events folded since: the re-fold starts from a checkpoint before it.
    late_key: tuple[datetime, str] | None = None
    # Checkpoints due while folding in order, written with the method (`_methods_store`).
    checkpoints: list[policy.Projection] = field(default_factory=list)


@dataclass(frozen=True)
class _Producer:
    """Who sent the events, for the audit entry of a late event that changes a lock."""

    actor: User | None = None
    context: AuditContext = NO_CONTEXT


def _methods_locked(method_ids: Iterable[str]) -> dict[str, _MethodInFlight]:
    """Lock the methods named (pk order) and return them by method_id with their projections.

    The row locks come first: every event of one method serializes here, and whatever is read
    afterwards sees what a concurrent writer committed.
    """
    return {
        m.method_id: _MethodInFlight(m, m.customer.customer_id, method_projection(m))
        for m in locking.methods_for_update(method_ids=method_ids)
    }


def _event_method(
    methods: dict[str, _MethodInFlight],
    event_type: str,
    customer_id: str,
    data: dict[str, Any],
    occurred_at: datetime,
) -> _MethodInFlight | None:
    """Return the event's method; None for an enrolment that may create it. Raise Conflict.

    An event before the method's purge horizon is refused (`event_too_old`): the events it
    would be folded among are gone, only their checkpoint is left (SPEC §8, "Retention").
    """
    entry = methods.get(data["method_id"])
    if event_type == EventType.METHOD_ENROLLED:
        if entry is not None:
            raise Conflict(
                "A method with this method_id exists.",
                code=ErrorCode.METHOD_EXISTS,
                field="data.method_id",
            )
        return None
    if entry is None:
        raise Conflict(
            "No method with this method_id.", code=ErrorCode.UNKNOWN_METHOD, field="data.method_id"
        )
    if entry.owner != customer_id:
        raise Conflict(
            "This method belongs to another customer.",
            code=ErrorCode.METHOD_OF_OTHER_CUSTOMER,
            field="data.method_id",
        )
    purged_before = entry.method.purged_before
    if purged_before is not None and occurred_at < purged_before:
        raise Conflict(
            "This event occurred before the method's retained history (its older events were "
            "purged); it can no longer be folded in.",
            code=ErrorCode.EVENT_TOO_OLD,
            field="occurred_at",
        )
    return entry


def _method_enrolled(
    methods: dict[str, _MethodInFlight],
    customer_id: str,
    data: dict[str, Any],
    occurred_at: datetime,
) -> _MethodInFlight:
    """Add the (unsaved) method an enrolment creates, with an empty projection."""
    method = enrolled_method(data, occurred_at)
    entry = _MethodInFlight(method, customer_id, policy.EMPTY, new=True)
    methods[method.method_id] = entry
    return entry


def _event_fold(
    entry: _MethodInFlight,
    *,
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    data: dict[str, Any],
    rules: policy.LockPolicy,
) -> str:
    """Fold the event into the method in memory; return the event's outcome.

    In order, the common case, it costs O(1) in the length of the history and its outcome is
    known before the insert. Out of order, the method is marked for a re-fold from its
    history once its events are stored (`_methods_store`), and the outcome is fixed then.
    """
    fold_event = policy.FoldEvent(event_id=event_id, type=event_type, occurred_at=occurred_at)
    outcome = policy.Outcome.RECORDED
    if not entry.refold and policy.is_in_order(entry.projection, fold_event):
        entry.projection, outcome = policy.apply(entry.projection, fold_event, rules)
        if count_folded(entry.method, entry.projection):
            entry.checkpoints.append(entry.projection)
    else:
        if not entry.refold:
            # entry.projection stays as it was before this event: the re-fold is compared to it.
            entry.late_event = (event_id, event_type)
        if entry.late_key is None or fold_event.key < entry.late_key:
            entry.late_key = fold_event.key
        entry.refold = True
    entry.number_changed |= apply_method_attributes(entry.method, event_type, occurred_at, data)
    entry.touched = True
    entry.snapshot = None
    return outcome


def _methods_store(entries: Iterable[_MethodInFlight], producer: _Producer) -> None:
    """Write each touched method once, after its events: re-folded if due, else as folded."""
    touched = [entry for entry in entries if entry.touched]
    phone_checks_forget({entry.method.customer_id for entry in touched if entry.number_changed})
    for entry in touched:
        checkpoints_write(entry.method, entry.checkpoints)
        entry.checkpoints = []
        if entry.refold:
            before = entry.projection
            entry.projection = method_refold(method=entry.method, late_key=entry.late_key)
            _late_lock_change_audit(entry, before, producer)
        store_projection(entry.method, entry.projection)


def _late_lock_change_audit(
    entry: _MethodInFlight, before: policy.Projection, producer: _Producer
) -> None:
    """Audit a re-fold that ended, moved or created the method's lock active now.

    `before` is the projection as it stood before the first late event; in-order events that
    lock a method are the fold itself and are not audited here.
    """
    change = active_lock_change(before, entry.projection, timezone.now())
    if change is None or entry.late_event is None:
        return
    result, lock_before, lock_after = change
    event_id, event_type = entry.late_event
    audit_record(
        actor=producer.actor,
        action=AuditAction.LATE_EVENT_CHANGED_LOCK,
        result=result,
        customer_ref=entry.owner,
        obj=entry.method,
        details={
            "event_id": event_id,
            "event_type": event_type,
            "method_id": entry.method.method_id,
            "lock_before": lock_before,
            "lock_after": lock_after,
        },
        context=producer.context,
    )


# ---------------------------------------------------------------------------------------------
# One event
# ---------------------------------------------------------------------------------------------


def event_ingest(
    *,
    event_id: str,
    event_type: str,
    customer_id: str,
    occurred_at: datetime,
    data: dict[str, Any],
    actor: User | None = None,
    context: AuditContext = NO_CONTEXT,
) -> IngestResult:
    """Store one producer event and fold it into its method's projection.

    A replayed ``event_id`` answers ``duplicate`` and changes nothing. An event naming an
    unknown method, a method of another customer, or enrolling an existing method_id raises
    Conflict and stores nothing. `actor` (the producer) and `context` are named in the audit
    entry of a late event that changes the method's active lock.
    """
    cleaned = event_data_clean(event_type, data)
    producer = _Producer(actor, context)
    try:
        with transaction.atomic():
            return _ingest_locked(event_id, event_type, customer_id, occurred_at, cleaned, producer)
    except IntegrityError:
        # Lost a race on a unique key (the same event_id, or the same new method_id, inserted
        # by a concurrent request): answer as the winner's state says.
        existing = Event.objects.select_related("method").filter(event_id=event_id).first()
        if existing is not None:
            return IngestResult("duplicate", existing, existing.method)
        if event_type == EventType.METHOD_ENROLLED:
            raise Conflict(
                "A method with this method_id exists.",
                code=ErrorCode.METHOD_EXISTS,
                field="data.method_id",
            ) from None
        raise


def _ingest_locked(
    event_id: str,
    event_type: str,
    customer_id: str,
    occurred_at: datetime,
    data: dict[str, Any],
    producer: _Producer,
) -> IngestResult:
    methods = _methods_locked([data["method_id"]])
    # No duplicate check here: a replayed event_id fails the INSERT below on the unique key and
    # event_ingest answers "duplicate" from the stored row, which saves a query per event.
    try:
        entry = _event_method(methods, event_type, customer_id, data, occurred_at)
    except Conflict as exc:
        if exc.code == ErrorCode.METHOD_EXISTS:
            existing = Event.objects.select_related("method").filter(event_id=event_id).first()
            if existing is not None:
                return IngestResult("duplicate", existing, existing.method)
        raise
    if entry is None:
        entry = _method_enrolled(methods, customer_id, data, occurred_at)
        customer, _ = Customer.objects.get_or_create(customer_id=customer_id)
        entry.method.customer = customer
        entry.method.save(force_insert=True)
    method = entry.method
    outcome = _event_fold(
        entry,
        event_id=event_id,
        event_type=event_type,
        occurred_at=occurred_at,
        data=data,
        rules=lock_policy(),
    )
    event = Event.objects.create(
        event_id=event_id,
        type=event_type,
        customer=method.customer,
        method=method,
        occurred_at=occurred_at,
        data=data,
        outcome=outcome,
    )
    _methods_store([entry], producer)
    return IngestResult("accepted", event, method)


# ---------------------------------------------------------------------------------------------
# A batch: one transaction, set-based, the same core
# ---------------------------------------------------------------------------------------------


def events_ingest_batch(
    *,
    events: list[dict[str, Any]],
    actor: User | None = None,
    context: AuditContext = NO_CONTEXT,
) -> list[BatchItemResult]:
    """Store a batch of producer events in one transaction; answer each as event_ingest would.

    Each item is ``{event_id, type, customer_id, occurred_at, data}``, already envelope-checked.
    Every event stands alone: a refused one is answered ``rejected`` and the rest go on. The
    methods named are row-locked together in pk order, the events inserted with one INSERT and
    each touched method updated once; a method that receives an event out of order is re-folded
    from its history. If a concurrent request wins a unique key (a new event_id or method_id),
    the batch is rolled back and replayed event by event through event_ingest. `actor` and
    `context` as for event_ingest.
    """
    producer = _Producer(actor, context)
    results: list[BatchItemResult | None] = [None] * len(events)
    cleaned: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(events):
        try:
            cleaned[index] = event_data_clean(item["type"], item["data"])
        except DomainError as exc:
            results[index] = BatchItemResult("rejected", error=exc)
    try:
        with transaction.atomic():
            _ingest_batch_locked(events, cleaned, results, producer)
    except IntegrityError:
        # A concurrent request inserted one of our event_ids, method_ids or customers between
        # our checks and our INSERTs: replay one by one, each answered from the winner's state.
        for index in cleaned:
            results[index] = _ingest_one_of_batch(events[index], producer)
    return [result for result in results if result is not None]


def _ingest_one_of_batch(item: dict[str, Any], producer: _Producer) -> BatchItemResult:
    try:
        result = event_ingest(
            event_id=item["event_id"],
            event_type=item["type"],
            customer_id=item["customer_id"],
            occurred_at=item["occurred_at"],
            data=item["data"],
            actor=producer.actor,
            context=producer.context,
        )
    except DomainError as exc:
        return BatchItemResult("rejected", error=exc)
    return BatchItemResult(result.status, method=result.method)


def _ingest_batch_locked(
    events: list[dict[str, Any]],
    cleaned: dict[int, dict[str, Any]],
    results: list[BatchItemResult | None],
    producer: _Producer,
) -> None:
    methods = _methods_locked(data["method_id"] for data in cleaned.values())
    # Read after the locks, so that events a concurrent writer committed for them are seen.
    stored_events = {
        e.event_id: e
        for e in Event.objects.select_related("method").filter(
            event_id__in={events[index]["event_id"] for index in cleaned}
        )
    }
    accepted: dict[str, _MethodInFlight] = {}  # event_id -> its method, for in-batch duplicates
    to_insert: list[tuple[EventRow, Method]] = []
    rules = lock_policy()
    for index, data in cleaned.items():
        item = events[index]
        event_id, event_type = item["event_id"], item["type"]
        try:
            entry = _event_method(
                methods, event_type, item["customer_id"], data, item["occurred_at"]
            )
        except DomainError as exc:
            duplicate = _batch_duplicate(event_id, stored_events, accepted, methods)
            # An enrolment of an existing method_id is a duplicate if its event_id was stored;
            # any other refusal comes before the duplicate check, as in _ingest_locked.
            if duplicate is not None and exc.code == ErrorCode.METHOD_EXISTS:
                results[index] = duplicate
            else:
                results[index] = BatchItemResult("rejected", error=exc)
            continue
        duplicate = _batch_duplicate(event_id, stored_events, accepted, methods)
        if duplicate is not None:
            results[index] = duplicate
            continue
        occurred_at = item["occurred_at"]
        if entry is None:
            entry = _method_enrolled(methods, item["customer_id"], data, occurred_at)
        outcome = _event_fold(
            entry,
            event_id=event_id,
            event_type=event_type,
            occurred_at=occurred_at,
            data=data,
            rules=rules,
        )
        to_insert.append((EventRow(event_id, event_type, occurred_at, data, outcome), entry.method))
        accepted[event_id] = entry
        results[index] = BatchItemResult("accepted", method=_batch_snapshot(entry))
    if not to_insert:
        return
    _batch_create_methods([e for e in methods.values() if e.new and e.touched])
    events_insert(to_insert)
    _methods_store(methods.values(), producer)


def _batch_duplicate(
    event_id: str,
    stored_events: dict[str, Event],
    accepted: dict[str, _MethodInFlight],
    methods: dict[str, _MethodInFlight],
) -> BatchItemResult | None:
    """Answer a replayed event_id with its stored event's method, as it stands now."""
    if event_id in accepted:
        return BatchItemResult("duplicate", method=_batch_snapshot(accepted[event_id]))
    stored = stored_events.get(event_id)
    if stored is None:
        return None
    method = stored.method
    if method is not None and method.method_id in methods:
        return BatchItemResult("duplicate", method=_batch_snapshot(methods[method.method_id]))
    return BatchItemResult("duplicate", method=method)


def _batch_create_methods(new: list[_MethodInFlight]) -> None:
    """Insert the methods the batch enrolled, creating their customers as needed."""
    if not new:
        return
    wanted = {entry.owner for entry in new}
    customers = {c.customer_id: c for c in Customer.objects.filter(customer_id__in=wanted)}
    missing = [Customer(customer_id=cid) for cid in sorted(wanted - set(customers))]
    for customer in Customer.objects.bulk_create(missing):
        customers[customer.customer_id] = customer
    for entry in new:
        entry.method.customer = customers[entry.owner]
    Method.objects.bulk_create([entry.method for entry in new])


def _batch_snapshot(entry: _MethodInFlight) -> Method:
    """Return the method as it stands now in the batch (shared until its next event).

    A method due for a re-fold has no exact projection until the end of the batch: its events
    are answered with the row itself, which then holds the state after the whole batch.
    """
    if entry.refold:
        return entry.method
    if entry.snapshot is None:
        # The row's field values, copied shallowly: a snapshot is only read, and copy.copy
        # (Django's pickling path) was 7% of a batch's time under load (py-spy).
        snapshot = Method.__new__(Method)
        snapshot.__dict__.update(entry.method.__dict__)
        set_projection(snapshot, entry.projection)
        entry.snapshot = snapshot
    return entry.snapshot
