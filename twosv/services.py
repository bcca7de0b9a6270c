"""Writes: every change to the 2SV domain goes through one of these functions.

Each is keyword-only, atomic, and audited where an agent or admin acts. Row locks are taken on
the method before its events are folded, so concurrent events for one method serialize.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import phonenumbers
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from twosv import policy
from twosv.ats import (
    AtsClient,
    AtsMessage,
    AtsPermanentError,
    AtsTransientError,
    AttemptFacts,
    ats_client_from_settings,
    classify_verdict,
)
from twosv.audit import NO_CONTEXT, AuditContext, audit_record
from twosv.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, TooManyTries
from twosv.models import (
    PHONE_KINDS,
    Customer,
    DeliveryAttempt,
    DeliveryLookup,
    Event,
    EventType,
    LookupStatus,
    Method,
    MethodKind,
    MethodRole,
    RegionalAdvisory,
    TroubleshootingSession,
    validate_e164,
)
from twosv.selectors import (
    access_customer,
    customer_method,
    customer_twosv_state,
    lock_policy,
    mask_phone,
    method_in_question,
    method_projection,
)

# ---------------------------------------------------------------------------------------------
# Event ingestion
# ---------------------------------------------------------------------------------------------

# The keys each event type may carry in `data`; anything else is refused so that a producer
# can't make us store a code, a secret or a field we'd silently ignore.
EVENT_DATA_FIELDS: dict[str, dict[str, bool]] = {
    EventType.METHOD_ENROLLED: {
        "method_id": True,
        "kind": True,
        "role": True,
        "phone_number": False,
        "email": False,
        "label": False,
        "visible_in_crm": False,
    },
    EventType.METHOD_REMOVED: {"method_id": True},
    EventType.PHONE_NUMBER_CHANGED: {"method_id": True, "phone_number": True},
    EventType.CODE_SENT: {"method_id": True},
    EventType.CODE_RESEND_REQUESTED: {"method_id": True},
    EventType.CODE_VERIFIED: {"method_id": True},
    EventType.CODE_REJECTED: {"method_id": True},
}
PRODUCER_EVENT_TYPES = frozenset(EVENT_DATA_FIELDS)


@dataclass(frozen=True)
class IngestResult:
    status: Literal["accepted", "duplicate"]
    event: Event
    method: Method | None


def _check_phone(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput("The phone number must be a string in E.164 format.", field=field)
    try:
        validate_e164(value)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], code="invalid_phone_number", field=field) from exc
    return value


def _clean_data(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate `data` for the event type; return it with defaults filled in."""
    if event_type == EventType.LOCK_LIFTED:
        raise Forbidden(
            "lock_lifted is written by admins only.", code="forbidden_event_type", field="type"
        )
    allowed = EVENT_DATA_FIELDS[event_type]
    for key in data:
        if key not in allowed:
            raise InvalidInput(
                f"Unknown field for {event_type}.", code="unknown_field", field=f"data.{key}"
            )
    for key, required in allowed.items():
        if required and key not in data:
            raise InvalidInput("This field is required.", code="required", field=f"data.{key}")
    method_id = data["method_id"]
    if (
        not isinstance(method_id, str)
        or not 1 <= len(method_id) <= 128
        or not method_id.isprintable()
    ):
        raise InvalidInput(
            "method_id must be 1 to 128 printable characters.", field="data.method_id"
        )
    cleaned = dict(data)
    if event_type == EventType.PHONE_NUMBER_CHANGED:
        _check_phone(data["phone_number"], "data.phone_number")
    if event_type == EventType.METHOD_ENROLLED:
        cleaned.update(_clean_enrolment(data))
    return cleaned


def _clean_enrolment(data: dict[str, Any]) -> dict[str, Any]:
    kind, role = data["kind"], data["role"]
    if kind not in MethodKind.values:
        raise InvalidInput(
            f"kind must be one of {', '.join(MethodKind.values)}.", field="data.kind"
        )
    if role not in MethodRole.values:
        raise InvalidInput(
            f"role must be one of {', '.join(MethodRole.values)}.", field="data.role"
        )
    phone = data.get("phone_number")
    if kind in PHONE_KINDS:
        if phone is None:
            raise InvalidInput(
                "SMS and voice methods need a phone number.",
                code="required",
                field="data.phone_number",
            )
        _check_phone(phone, "data.phone_number")
    elif phone is not None:
        raise InvalidInput(
            "Only SMS and voice methods have a phone number.", field="data.phone_number"
        )
    email = data.get("email")
    if email is not None:
        if kind != MethodKind.EMAIL or not isinstance(email, str):
            raise InvalidInput("Only email methods have an email address.", field="data.email")
        # The validator allows 320 characters; the column holds 254 (PostgreSQL would refuse).
        if len(email) > Method._meta.get_field("email").max_length:  # type: ignore[operator]
            raise InvalidInput("Not a valid email address.", field="data.email")
        try:
            validate_email(email)
        except ValidationError as exc:
            raise InvalidInput("Not a valid email address.", field="data.email") from exc
    label = data.get("label", "")
    # Printable only: NUL and lone surrogates can't be stored (PostgreSQL and UTF-8 refuse them).
    if not isinstance(label, str) or len(label) > 100 or not label.isprintable():
        raise InvalidInput("label must be at most 100 printable characters.", field="data.label")
    visible = data.get("visible_in_crm", role == MethodRole.PRIMARY)
    if not isinstance(visible, bool):
        raise InvalidInput("visible_in_crm must be true or false.", field="data.visible_in_crm")
    return {"label": label, "visible_in_crm": visible}


def event_ingest(
    *,
    event_id: str,
    event_type: str,
    customer_id: str,
    occurred_at: datetime,
    data: dict[str, Any],
) -> IngestResult:
    """Store one producer event and fold it into its method's projection.

    A replayed ``event_id`` answers ``duplicate`` and changes nothing. An event naming an
    unknown method, a method of another customer, or enrolling an existing method_id raises
    Conflict and stores nothing.
    """
    cleaned = _clean_data(event_type, data)
    try:
        with transaction.atomic():
            return _ingest_locked(event_id, event_type, customer_id, occurred_at, cleaned)
    except IntegrityError:
        # Lost a race on a unique key (the same event_id, or the same new method_id, inserted
        # by a concurrent request): answer as the winner's state says.
        existing = Event.objects.select_related("method").filter(event_id=event_id).first()
        if existing is not None:
            return IngestResult("duplicate", existing, existing.method)
        if event_type == EventType.METHOD_ENROLLED:
            raise Conflict(
                "A method with this method_id exists.", code="method_exists", field="data.method_id"
            ) from None
        raise


# ---------------------------------------------------------------------------------------------
# Batch ingestion: one transaction, set-based, the single path's semantics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItemResult:
    """One event's answer in a batch: ``method`` is the method as it stood after the event."""

    status: Literal["accepted", "duplicate", "rejected"]
    method: Method | None = None
    error: DomainError | None = None


@dataclass
class _BatchMethod:
    """A method the batch touches: the locked (or new) row and its projection in memory."""

    method: Method
    owner: str
    projection: policy.Projection
    new: bool = False
    touched: bool = False
    refold: bool = False
    snapshot: Method | None = None
    number_changed: bool = False


def events_ingest_batch(*, events: list[dict[str, Any]]) -> list[BatchItemResult]:
    """Store a batch of producer events in one transaction; answer each as event_ingest would.

    Each item is ``{event_id, type, customer_id, occurred_at, data}``, already envelope-checked.
    Every event stands alone: a refused one is answered ``rejected`` and the rest go on. The
    methods named are row-locked together in pk order, the events inserted with one INSERT and
    each touched method updated once; a method that receives an event out of order is re-folded
    from its history. If a concurrent request wins a unique key (a new event_id or method_id),
    the batch is rolled back and replayed event by event through event_ingest.
    """
    results: list[BatchItemResult | None] = [None] * len(events)
    cleaned: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(events):
        try:
            cleaned[index] = _clean_data(item["type"], item["data"])
        except DomainError as exc:
            results[index] = BatchItemResult("rejected", error=exc)
    try:
        with transaction.atomic():
            _ingest_batch_locked(events, cleaned, results)
    except IntegrityError:
        # A concurrent request inserted one of our event_ids, method_ids or customers between
        # our checks and our INSERTs: replay one by one, each answered from the winner's state.
        for index in cleaned:
            results[index] = _ingest_one_of_batch(events[index])
    return [result for result in results if result is not None]


def _ingest_one_of_batch(item: dict[str, Any]) -> BatchItemResult:
    try:
        result = event_ingest(
            event_id=item["event_id"],
            event_type=item["type"],
            customer_id=item["customer_id"],
            occurred_at=item["occurred_at"],
            data=item["data"],
        )
    except DomainError as exc:
        return BatchItemResult("rejected", error=exc)
    return BatchItemResult(result.status, method=result.method)


def _ingest_batch_locked(
    events: list[dict[str, Any]],
    cleaned: dict[int, dict[str, Any]],
    results: list[BatchItemResult | None],
) -> None:
    # Lock every method the batch names in one query, in pk order so that two batches naming
    # the same methods can't deadlock; of=("self",) leaves the joined customer rows unlocked.
    locked = (
        Method.objects.select_for_update(of=("self",))
        .select_related("customer")
        .filter(method_id__in={data["method_id"] for data in cleaned.values()})
        .order_by("pk")
    )
    methods = {
        m.method_id: _BatchMethod(m, m.customer.customer_id, method_projection(m)) for m in locked
    }
    # Read after the locks, so that events a concurrent writer committed for them are seen.
    stored_events = {
        e.event_id: e
        for e in Event.objects.select_related("method").filter(
            event_id__in={events[index]["event_id"] for index in cleaned}
        )
    }
    accepted: dict[str, _BatchMethod] = {}  # event_id -> its method, for in-batch duplicates
    to_insert: list[tuple[_BatchEvent, _BatchMethod]] = []
    rules = lock_policy()
    for index, data in cleaned.items():
        item = events[index]
        event_id, event_type = item["event_id"], item["type"]
        try:
            entry = _batch_method(methods, event_type, item["customer_id"], data)
        except DomainError as exc:
            duplicate = _batch_duplicate(event_id, stored_events, accepted, methods)
            # An enrolment of an existing method_id is a duplicate if its event_id was stored;
            # any other refusal comes before the duplicate check, as in _ingest_locked.
            if duplicate is not None and exc.code == "method_exists":
                results[index] = duplicate
            else:
                results[index] = BatchItemResult("rejected", error=exc)
            continue
        duplicate = _batch_duplicate(event_id, stored_events, accepted, methods)
        if duplicate is not None:
            results[index] = duplicate
            continue
        if entry is None:
            entry = _batch_new_method(methods, item, data)
        occurred_at = item["occurred_at"]
        fold_event = policy.FoldEvent(event_id=event_id, type=event_type, occurred_at=occurred_at)
        outcome = policy.Outcome.RECORDED
        if not entry.refold and policy.is_in_order(entry.projection, fold_event):
            entry.projection, outcome = policy.apply(entry.projection, fold_event, rules)
        else:
            entry.refold = True
        entry.number_changed |= _apply_method_attributes(
            entry.method, event_type, occurred_at, data
        )
        entry.touched = True
        entry.snapshot = None
        to_insert.append((_BatchEvent(event_id, event_type, occurred_at, data, outcome), entry))
        accepted[event_id] = entry
        results[index] = BatchItemResult("accepted", method=_batch_snapshot(entry))
    if not to_insert:
        return
    _batch_create_methods([e for e in methods.values() if e.new and e.touched])
    _batch_insert_events(to_insert)
    _phone_checks_forget({e.method.customer_id for e in methods.values() if e.number_changed})
    for entry in methods.values():
        if entry.touched:
            if entry.refold:
                entry.projection = method_refold(method=entry.method)
            _store_projection(entry.method, entry.projection)


@dataclass(frozen=True, slots=True)
class _BatchEvent:
    """An accepted event of a batch, until its row is written."""

    event_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]
    outcome: str


# The batch's events go in as rows, not model instances: building 500 Events and letting
# bulk_create prepare them field by field was a third of a batch's time in the app (cProfile,
# `make bench` figure e). tests/test_api_events.py holds these columns equal to the
# model's; the rows are what event_ingest would store, received_at one clock reading a batch.
EVENT_COLUMNS = (
    "event_id",
    "type",
    "customer_id",
    "method_id",
    "occurred_at",
    "received_at",
    "data",
    "outcome",
    "actor_id",
)
_EVENT_COLUMN_OF = {field.attname: field.column for field in Event._meta.concrete_fields}


def _batch_insert_events(to_insert: list[tuple[_BatchEvent, _BatchMethod]]) -> None:
    received_at = timezone.now()
    with connection.cursor() as cursor:
        db = cursor.db  # looked up once: `connection` is a per-context proxy
        adapt = db.ops.adapt_datetimefield_value
        received = adapt(received_at)
        rows = [
            (
                event.event_id,
                event.type,
                entry.method.customer_id,
                entry.method.pk,
                adapt(event.occurred_at),
                received,
                json.dumps(event.data),
                event.outcome,
                None,  # producers' events have no acting user (only an admin's lock lift has)
            )
            for event, entry in to_insert
        ]
        # SQLite caps the parameters of one statement; PostgreSQL takes the batch at once.
        per_statement = len(rows)
        if db.features.max_query_params:
            per_statement = max(1, db.features.max_query_params // len(EVENT_COLUMNS))
        row_sql = f"({', '.join(['%s'] * len(EVENT_COLUMNS))})"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                _EVENT_INSERT + ", ".join([row_sql] * len(chunk)),
                [value for row in chunk for value in row],
            )


# Identifiers from the model, values as parameters: no input reaches the text.
_EVENT_INSERT = "INSERT INTO {table} ({columns}) VALUES ".format(  # noqa: S608
    table=Event._meta.db_table,
    columns=", ".join(_EVENT_COLUMN_OF[name] for name in EVENT_COLUMNS),
)


def _batch_method(
    methods: dict[str, _BatchMethod], event_type: str, customer_id: str, data: dict[str, Any]
) -> _BatchMethod | None:
    """Return the event's method; None for an enrolment that may create it. Raise Conflict."""
    entry = methods.get(data["method_id"])
    if event_type == EventType.METHOD_ENROLLED:
        if entry is not None:
            raise Conflict(
                "A method with this method_id exists.", code="method_exists", field="data.method_id"
            )
        return None
    if entry is None:
        raise Conflict(
            "No method with this method_id.", code="unknown_method", field="data.method_id"
        )
    if entry.owner != customer_id:
        raise Conflict(
            "This method belongs to another customer.",
            code="method_of_other_customer",
            field="data.method_id",
        )
    return entry


def _batch_duplicate(
    event_id: str,
    stored_events: dict[str, Event],
    accepted: dict[str, _BatchMethod],
    methods: dict[str, _BatchMethod],
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


def _batch_new_method(
    methods: dict[str, _BatchMethod], item: dict[str, Any], data: dict[str, Any]
) -> _BatchMethod:
    method = _enrolled_method(data, item["occurred_at"])
    entry = _BatchMethod(method, item["customer_id"], policy.EMPTY, new=True)
    methods[method.method_id] = entry
    return entry


def _enrolled_method(data: dict[str, Any], occurred_at: datetime) -> Method:
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


def _batch_create_methods(new: list[_BatchMethod]) -> None:
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


def _batch_snapshot(entry: _BatchMethod) -> Method:
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
        _set_projection(snapshot, entry.projection)
        entry.snapshot = snapshot
    return entry.snapshot


def _ingest_locked(
    event_id: str,
    event_type: str,
    customer_id: str,
    occurred_at: datetime,
    data: dict[str, Any],
) -> IngestResult:
    method_id = data["method_id"]
    # Lock the method row first: every event of one method then serializes here, and the
    # duplicate check below sees whatever a concurrent writer committed.
    # of=("self",): lock the method only, not its customer row joined in for the owner check;
    # locking the customer would serialize every method of one customer for nothing.
    method = (
        Method.objects.select_for_update(of=("self",))
        .select_related("customer")
        .filter(method_id=method_id)
        .first()
    )
    # No duplicate check here: a replayed event_id fails the INSERT below on the unique key and
    # event_ingest answers "duplicate" from the stored row, which saves a query per event.
    if event_type == EventType.METHOD_ENROLLED:
        if method is not None:
            existing = Event.objects.select_related("method").filter(event_id=event_id).first()
            if existing is not None:
                return IngestResult("duplicate", existing, existing.method)
            raise Conflict(
                "A method with this method_id exists.", code="method_exists", field="data.method_id"
            )
        customer, _ = Customer.objects.get_or_create(customer_id=customer_id)
        method = _enrolled_method(data, occurred_at)
        method.customer = customer
        method.save(force_insert=True)
    else:
        if method is None:
            raise Conflict(
                "No method with this method_id.", code="unknown_method", field="data.method_id"
            )
        if method.customer.customer_id != customer_id:
            raise Conflict(
                "This method belongs to another customer.",
                code="method_of_other_customer",
                field="data.method_id",
            )
        customer = method.customer

    current = method_projection(method)
    fold_event = policy.FoldEvent(event_id=event_id, type=event_type, occurred_at=occurred_at)
    in_order = policy.is_in_order(current, fold_event)
    outcome = policy.Outcome.RECORDED
    if in_order:
        # The common case: O(1) in the length of the history, outcome known before the insert.
        projection, outcome = policy.apply(current, fold_event, lock_policy())
    event = Event.objects.create(
        event_id=event_id,
        type=event_type,
        customer=customer,
        method=method,
        occurred_at=occurred_at,
        data=data,
        outcome=outcome,
    )
    if _apply_method_attributes(method, event_type, occurred_at, data):
        _phone_checks_forget({method.customer_id})
    if not in_order:
        projection = method_refold(method=method)
    _store_projection(method, projection)
    return IngestResult("accepted", event, method)


def _apply_method_attributes(
    method: Method, event_type: str, occurred_at: datetime, data: dict[str, Any]
) -> bool:
    """Apply what an event says about the method itself (removal, number on file).

    Return whether the number on file changed.
    """
    if event_type == EventType.METHOD_REMOVED:
        if method.removed_at is None or occurred_at < method.removed_at:
            method.removed_at = occurred_at
    elif event_type == EventType.PHONE_NUMBER_CHANGED:
        # Last writer by occurred_at wins, so a late, older change can't overwrite a newer one.
        if method.phone_changed_at is None or occurred_at >= method.phone_changed_at:
            changed: bool = method.phone_number != data["phone_number"]
            method.phone_number = data["phone_number"]
            method.phone_changed_at = occurred_at
            return changed
    return False


def _phone_checks_forget(customer_pks: set[int]) -> None:
    """Forget the phone verifications of the customers' open sessions: the number changed.

    A caller who matched the old number proves nothing about the new one; the agent asks again.
    Every open session row is locked (not only those with a result), so a verification running
    concurrently either finishes first and is cleared, or waits and reads the new number.
    """
    if customer_pks:
        TroubleshootingSession.objects.filter(
            customer_id__in=customer_pks, closed_at__isnull=True
        ).update(phone_number_matches=None)


def _store_projection(method: Method, projection: policy.Projection) -> None:
    _set_projection(method, projection)
    method.save(update_fields=_METHOD_FOLDED_FIELDS)


def _set_projection(method: Method, projection: policy.Projection) -> None:
    method.resend_times = [t.isoformat() for t in projection.resend_times]
    lock = projection.lock
    method.locked_at = lock.locked_at if lock else None
    method.locked_until = lock.locked_until if lock else None
    method.lock_lifted_at = lock.lifted_at if lock else None
    if projection.last_key is not None:
        method.last_event_at, method.last_event_id = projection.last_key


# What an event can change on the method row: the projection and the attributes events carry.
_METHOD_FOLDED_FIELDS = [
    "resend_times",
    "locked_at",
    "locked_until",
    "lock_lifted_at",
    "last_event_at",
    "last_event_id",
    "removed_at",
    "phone_number",
    "phone_changed_at",
]


def _fold_event(event: Event) -> policy.FoldEvent:
    return policy.FoldEvent(event_id=event.event_id, type=event.type, occurred_at=event.occurred_at)


def _fold_into(method: Method, event: Event) -> None:
    """Fold `event` into the method's projection; the caller holds the method's row lock."""
    current = method_projection(method)
    fold_event = _fold_event(event)
    if policy.is_in_order(current, fold_event):
        # The common case: O(1) in the length of the history.
        projection, outcome = policy.apply(current, fold_event, lock_policy())
        if outcome != event.outcome:
            event.outcome = outcome
            event.save(update_fields=["outcome"])
    else:
        projection = method_refold(method=method)
    _store_projection(method, projection)


def method_refold(*, method: Method) -> policy.Projection:
    """Recompute the method's projection from its whole history and fix each event's outcome."""
    events = list(
        Event.objects.filter(method=method).only("id", "event_id", "type", "occurred_at", "outcome")
    )
    by_id = {event.event_id: event for event in events}
    projection, outcomes = policy.fold((_fold_event(e) for e in events), lock_policy())
    changed = []
    for fold_event, outcome in outcomes:
        stored = by_id[fold_event.event_id]
        if stored.outcome != outcome:
            stored.outcome = outcome
            changed.append(stored)
    Event.objects.bulk_update(changed, ["outcome"], batch_size=500)
    return projection


# ---------------------------------------------------------------------------------------------
# Agent reads and troubleshooting sessions
# ---------------------------------------------------------------------------------------------

SESSION_ANSWER_FIELDS = ("has_device_access", "has_backup_device_access")
_UNSET: Any = object()


def customer_state_read_audit(
    *,
    customer: Customer,
    actor: User,
    step_code: str,
    session: TroubleshootingSession | None = None,
    context: AuditContext = NO_CONTEXT,
) -> None:
    """Record that an agent read a customer's 2SV state (and which step it showed).

    Reading a session shows the same state, so it is recorded too, against the session.
    """
    audit_record(
        actor=actor,
        action="state_read" if session is None else "session_read",
        result="ok",
        customer_ref=customer.customer_id,
        obj=customer if session is None else session,
        details={"next_step": step_code},
        context=context,
    )


def _session_method(customer: Customer, method_id: str | None) -> Method | None:
    if method_id is None:
        return None
    return customer_method(customer=customer, method_id=method_id, now=timezone.now())


def session_start(
    *,
    customer: Customer,
    agent: User,
    method_id: str | None = None,
    answers: dict[str, bool | None] | None = None,
    context: AuditContext = NO_CONTEXT,
) -> TroubleshootingSession:
    """Open a troubleshooting session for the customer on the line."""
    with transaction.atomic():
        session = TroubleshootingSession(
            customer=customer, agent=agent, method=_session_method(customer, method_id)
        )
        for key, value in (answers or {}).items():
            setattr(session, _answer_field(key), value)
        session.save()
        audit_record(
            actor=agent,
            action="session_start",
            result="ok",
            customer_ref=customer.customer_id,
            obj=session,
            details={"method_id": method_id, "answers": answers or {}},
            context=context,
        )
    return session


def _answer_field(key: str) -> str:
    if key not in SESSION_ANSWER_FIELDS:
        raise InvalidInput("Unknown answer.", code="unknown_field", field=f"answers.{key}")
    return key


def _open_session_for_update(session: TroubleshootingSession) -> TroubleshootingSession:
    locked = (
        TroubleshootingSession.objects.select_for_update(of=("self",))
        .select_related("customer", "method")
        .get(pk=session.pk)
    )
    if locked.closed_at is not None:
        raise Conflict("This session is closed.", code="session_closed")
    return locked


def session_update(
    *,
    session: TroubleshootingSession,
    actor: User,
    answers: dict[str, bool | None] | None = None,
    method_id: Any = _UNSET,
    context: AuditContext = NO_CONTEXT,
) -> TroubleshootingSession:
    """Merge new answers into the session and/or switch the method being troubleshot."""
    with transaction.atomic():
        locked = _open_session_for_update(session)
        for key, value in (answers or {}).items():
            setattr(locked, _answer_field(key), value)
        if method_id is not _UNSET:
            method = _session_method(locked.customer, method_id)
            now = timezone.now()
            if method_in_question(
                customer=locked.customer, chosen=method, now=now
            ) != method_in_question(customer=locked.customer, chosen=locked.method, now=now):
                # A verification was about the other method's number: it says nothing now.
                locked.phone_number_matches = None
            locked.method = method
        locked.save()
        audit_record(
            actor=actor,
            action="session_update",
            result="ok",
            customer_ref=locked.customer.customer_id,
            obj=locked,
            details={
                "answers": answers or {},
                **({"method_id": method_id} if method_id is not _UNSET else {}),
            },
            context=context,
        )
    return locked


def session_verify_phone(
    *,
    session: TroubleshootingSession,
    actor: User,
    phone_number: str,
    context: AuditContext = NO_CONTEXT,
) -> bool:
    """Compare the number the caller says with P's number on file; record only the result.

    P is the method being troubleshot, read under the session's row lock so a concurrent
    method switch can't slip in between. Every call, even an unparseable number, uses one of
    the session's tries, so the number on file can't be guessed by brute force.
    """
    max_tries = settings.TWOSV_PHONE_VERIFY_MAX_TRIES
    with transaction.atomic():
        locked = _open_session_for_update(session)
        customer_ref = locked.customer.customer_id
        method = method_in_question(
            customer=locked.customer, chosen=locked.method, now=timezone.now()
        )
        if method is None or not method.phone_number:
            raise Conflict(
                "The method being troubleshot has no phone number.", code="no_phone_number"
            )
        exhausted = locked.phone_verify_tries >= max_tries
        match: bool | None = None
        if exhausted:
            # Refused after the block commits: raising in here would roll this entry back.
            audit_record(
                actor=actor,
                action="phone_verify",
                result="too_many_tries",
                customer_ref=customer_ref,
                obj=locked,
                context=context,
            )
        else:
            locked.phone_verify_tries += 1
            match = phone_numbers_match(phone_number, method.phone_number)
            if match is not None:
                locked.phone_number_matches = match
            locked.save(update_fields=["phone_verify_tries", "phone_number_matches", "updated_at"])
            result = "invalid" if match is None else ("match" if match else "mismatch")
            # The result only: never the number typed, which may be a guess at a real one.
            audit_record(
                actor=actor,
                action="phone_verify",
                result=result,
                customer_ref=customer_ref,
                obj=locked,
                details={"method_id": method.method_id, "try": locked.phone_verify_tries},
                context=context,
            )
    if exhausted:
        raise TooManyTries(
            f"The number was checked {max_tries} times in this session; no more tries.",
            code="too_many_tries",
        )
    session.refresh_from_db()
    if match is None:
        raise InvalidInput(
            "Not a phone number. Type it as the customer says it, e.g. +1 415 555 0100.",
            code="invalid_phone_number",
            field="phone_number",
        )
    return match


def phone_numbers_match(spoken: str, stored_e164: str) -> bool | None:
    """Return whether `spoken` is the stored number; None when it isn't a phone number.

    The stored number's region is the default, so a national format ("(415) 555-0100", or
    "098765 43210" for India) compares as well as E.164 with any punctuation.
    """
    if not isinstance(spoken, str) or not 3 <= len(spoken) <= 40:
        return None
    stored = phonenumbers.parse(stored_e164, None)
    region = phonenumbers.region_code_for_number(stored)
    try:
        parsed = phonenumbers.parse(spoken, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return (parsed.country_code, parsed.national_number) == (
        stored.country_code,
        stored.national_number,
    )


def session_close(
    *,
    session: TroubleshootingSession,
    actor: User,
    outcome: str,
    helpful: bool | None,
    comment: str,
    context: AuditContext = NO_CONTEXT,
) -> TroubleshootingSession:
    """Close the session with its outcome and the agent's feedback on the step shown last.

    The step is computed under the session's row lock, so "helpful" is recorded against the
    step the answers in the row lead to.
    """
    with transaction.atomic():
        locked = _open_session_for_update(session)
        now = timezone.now()
        state = customer_twosv_state(customer=locked.customer, now=now, session=locked)
        final_step_code = state.decision.step.code
        locked.closed_at = now
        locked.outcome = outcome
        locked.helpful = helpful
        locked.comment = comment
        locked.final_step_code = final_step_code
        locked.save()
        audit_record(
            actor=actor,
            action="session_close",
            result=outcome,
            customer_ref=locked.customer.customer_id,
            obj=locked,
            details={"helpful": helpful, "final_step_code": final_step_code},
            context=context,
        )
    return locked


# ---------------------------------------------------------------------------------------------
# Lock lift (admins)
# ---------------------------------------------------------------------------------------------


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
        raise InvalidInput("Give a reason for lifting the lock.", code="required", field="reason")
    now = timezone.now()
    with transaction.atomic():
        locked = (
            Method.objects.select_for_update(of=("self",))
            .select_related("customer")
            .get(pk=method.pk)
        )
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
            _fold_into(locked, event)
        audit_record(
            actor=actor,
            action="lock_lift",
            result="lifted" if was_locked else "not_locked",
            customer_ref=locked.customer.customer_id,
            obj=locked,
            details={"method_id": locked.method_id, "reason": reason},
            context=context,
        )
    method.refresh_from_db()
    return was_locked


# ---------------------------------------------------------------------------------------------
# Delivery lookups ("check with ATS"): request, run, sweep
# ---------------------------------------------------------------------------------------------
#
# The lookup row is its own outbox: a request commits it as pending and publishes its task
# after the commit; if the broker is down the row simply stays pending and the sweeper
# publishes it again later. Every state change of a run happens under the lookup's row lock
# and checks that the try it closes is still the lookup's latest, so duplicate or late
# messages can't overwrite a newer result.

lookup_log = logging.getLogger("twosv.lookups")

LOOKUP_IN_FLIGHT = (LookupStatus.PENDING, LookupStatus.RUNNING)
LOOKUP_FINISHED = (LookupStatus.SUCCEEDED, LookupStatus.FAILED)
# A sweep publishes at most this many lookups; the next sweep takes the rest.
LOOKUP_SWEEP_BATCH = 500
# How many times TWOSV_LOOKUP_STALE_AFTER a try may run before its worker is taken for lost.
LOOKUP_RUNNING_STALE_FACTOR = 5


def lookup_running_stale_after() -> timedelta:
    """Return how long a try may stay running before the sweeper takes its worker for lost."""
    stale_after: timedelta = settings.TWOSV_LOOKUP_STALE_AFTER
    return stale_after * LOOKUP_RUNNING_STALE_FACTOR


def _lookup_recipient(method: Method) -> str:
    """Return where the method's codes go: its phone number, else its email address."""
    return method.phone_number or method.email


def _lookup_method(customer: Customer, method_id: str | None, now: datetime) -> Method:
    """Return the method to look up: the one named, else P (active primary, else oldest active).

    Raise NotFound for a method_id the customer doesn't have (another customer's method
    answers the same), Conflict for a method that is removed or can't receive codes.
    """
    field = "method_id" if method_id is not None else None
    if method_id is not None:
        method = customer_method(customer=customer, method_id=method_id, now=now)
    else:
        chosen = method_in_question(customer=customer, chosen=None, now=now)
        if chosen is None:
            raise Conflict(
                "This customer has no active 2SV method to check.", code="unknown_method"
            )
        method = chosen
    if not method.receives_codes:
        raise Conflict(
            "This method receives no codes (an authenticator app or security key makes its own), "
            "so there is no delivery to check.",
            code="method_receives_no_codes",
            field=field,
        )
    if not _lookup_recipient(method):
        raise Conflict(
            "This method has no phone number or email address on file to check.",
            code="no_phone_number",
            field=field,
        )
    return method


def _lookup_reusable(method: Method, *, now: datetime, force: bool) -> DeliveryLookup | None:
    """Return the method's lookup in flight, else (unless `force`) its fresh succeeded one."""
    lookups = DeliveryLookup.objects.select_related("customer", "method")
    in_flight = lookups.filter(method=method, status__in=LOOKUP_IN_FLIGHT).first()
    if in_flight is not None or force:
        return in_flight
    return (
        lookups.filter(
            method=method,
            status=LookupStatus.SUCCEEDED,
            finished_at__gte=now - settings.TWOSV_LOOKUP_FRESHNESS,
        )
        .order_by("-finished_at")
        .first()
    )


def _audit_lookup_request(
    *,
    actor: User | None,
    customer: Customer,
    result: str,
    context: AuditContext,
    lookup: DeliveryLookup | None = None,
    **details: Any,
) -> None:
    audit_record(
        actor=actor,
        action="lookup_request",
        result=result,
        customer_ref=customer.customer_id,
        obj=lookup,
        details={
            **details,
            **({"lookup_id": str(lookup.pk), "status": lookup.status} if lookup else {}),
        },
        context=context,
    )


def lookup_request(
    *,
    customer: Customer,
    method_id: str | None = None,
    actor: User | None,
    force: bool = False,
    context: AuditContext = NO_CONTEXT,
) -> tuple[DeliveryLookup, bool]:
    """Return the method's lookup to show and whether it was created just now.

    The method is `method_id`, else P. A lookup pending or running is returned as is; so is
    one that succeeded within TWOSV_LOOKUP_FRESHNESS, unless `force`. Otherwise create a
    pending lookup over the last TWOSV_LOOKUP_PERIOD and publish its task after the commit;
    a broker that is down leaves it pending for the sweeper and never fails the request.
    """
    now = timezone.now()
    try:
        method = _lookup_method(customer, method_id, now)
    except DomainError as exc:
        _audit_lookup_request(
            actor=actor,
            customer=customer,
            result="refused",
            context=context,
            method_id=method_id,
            force=force,
            code=exc.code,
        )
        raise
    try:
        with transaction.atomic():
            # Requests for one method serialize on its row (as its events do), so of 50
            # concurrent requests one creates the lookup and the others find it.
            Method.objects.select_for_update().filter(pk=method.pk).values_list("pk").first()
            lookup = _lookup_reusable(method, now=now, force=force)
            created = lookup is None
            if lookup is None:
                lookup = DeliveryLookup.objects.create(
                    customer=customer,
                    method=method,
                    requested_by=actor,
                    period_start=now - settings.TWOSV_LOOKUP_PERIOD,
                )
                transaction.on_commit(
                    functools.partial(lookup_enqueue, lookup_id=lookup.pk), robust=True
                )
            _audit_lookup_request(
                actor=actor,
                customer=customer,
                result="created" if created else "reused",
                context=context,
                lookup=lookup,
                method_id=method.method_id,
                force=force,
            )
    except IntegrityError:
        # Lost the race on "one lookup in flight per method" to a writer that doesn't take the
        # row lock (SQLite has none): answer with the winner's lookup.
        winner = DeliveryLookup.objects.filter(method=method, status__in=LOOKUP_IN_FLIGHT).first()
        if winner is None:
            raise
        lookup, created = winner, False
        _audit_lookup_request(
            actor=actor,
            customer=customer,
            result="reused",
            context=context,
            lookup=lookup,
            method_id=method.method_id,
            force=force,
        )
    if created:
        # The task may have run already (eager mode, a fast worker): show what it did. Only the
        # columns the task writes, so the customer and method already loaded stay cached.
        lookup.refresh_from_db(fields=_LOOKUP_RUN_FIELDS)
    return lookup, created


_LOOKUP_RUN_FIELDS = [
    "status",
    "verdict",
    "tries",
    "failure_reason",
    "enqueued_at",
    "started_at",
    "finished_at",
]


def lookup_enqueue(*, lookup_id: uuid.UUID | str) -> bool:
    """Publish the lookup's task; return whether the broker took it.

    Never raise and never wait on the broker longer than its connect timeouts: on failure log
    it and leave the lookup pending, the sweeper publishes it again. On success record
    `enqueued_at`.
    """
    from twosv.tasks import delivery_lookup_run

    enqueued_at = timezone.now()
    try:
        delivery_lookup_run.apply_async(args=(str(lookup_id),), retry=False)
    except Exception as exc:  # noqa: BLE001 - broker errors come in many types; none may escape
        lookup_log.warning(
            "Could not publish delivery lookup %s (%s: %s); the sweeper will publish it again.",
            lookup_id,
            type(exc).__name__,
            str(exc)[:200],
        )
        return False
    DeliveryLookup.objects.filter(pk=lookup_id).update(enqueued_at=enqueued_at)
    return True


def _lookup_has_regional_advisory(method: Method) -> bool:
    phone = mask_phone(method.phone_number)
    if phone is None or phone.region is None:
        return False
    return RegionalAdvisory.objects.filter(region=phone.region, active=True).exists()


def _lookup_close_try(
    lookup: DeliveryLookup,
    this_try: int,
    *,
    status: str,
    failure_reason: str = "",
    verdict: str = "",
    attempts: list[AtsMessage] | None = None,
) -> bool:
    """Record the end of try `this_try` (with its attempts, if it succeeded).

    Return False and change nothing when the lookup has moved on meanwhile: finished, or
    taken over by a newer try after the sweeper thought this worker lost.
    """
    now = timezone.now()
    with transaction.atomic():
        current = DeliveryLookup.objects.select_for_update().filter(pk=lookup.pk).first()
        if current is None or current.status != LookupStatus.RUNNING or current.tries != this_try:
            return False
        current.status = status
        current.failure_reason = failure_reason[:500]
        current.verdict = verdict
        fields = ["status", "failure_reason", "verdict"]
        if status in LOOKUP_FINISHED:
            current.finished_at = now
            fields.append("finished_at")
        else:
            # Waiting for the retry counts as enqueued: the sweeper leaves it alone meanwhile.
            current.enqueued_at = now
            fields.append("enqueued_at")
        if attempts is not None:
            current.attempts.all().delete()
            unique = {message.id: message for message in attempts}
            DeliveryAttempt.objects.bulk_create(
                DeliveryAttempt(
                    lookup=current,
                    external_id=message.id[:128],
                    sent_at=message.created_at,
                    updated_at=message.updated_at,
                    status=message.status,
                    error_code=message.error_code,
                    provider=message.provider[:64],
                    sender=message.sender[:64],
                )
                for message in unique.values()
            )
        current.save(update_fields=fields)
    for field in (*fields, "finished_at"):
        setattr(lookup, field, getattr(current, field))
    return True


def lookup_run(
    *, lookup_id: uuid.UUID | str, client: AtsClient | None = None
) -> DeliveryLookup | None:
    """Run one try of the lookup: ask the ATS, store the attempts and the verdict.

    Idempotent: a finished lookup, or one whose try another worker is running, is returned
    unchanged. A permanent ATS error, or a transient one on the last of
    TWOSV_LOOKUP_MAX_TRIES tries, fails the lookup with a readable reason. A transient one
    with tries left puts the lookup back to pending and is raised for the task to retry.
    Return None for an unknown lookup.
    """
    now = timezone.now()
    max_tries: int = settings.TWOSV_LOOKUP_MAX_TRIES
    try:
        pk = uuid.UUID(str(lookup_id))
    except ValueError:
        lookup_log.warning("Delivery lookup id %r is not a UUID; nothing to run.", lookup_id)
        return None
    with transaction.atomic():
        lookup = (
            DeliveryLookup.objects.select_for_update(of=("self",))
            .select_related("method")
            .filter(pk=pk)
            .first()
        )
        if lookup is None:
            lookup_log.warning("Delivery lookup %s does not exist; nothing to run.", pk)
            return None
        if lookup.status in LOOKUP_FINISHED:
            return lookup
        if (
            lookup.status == LookupStatus.RUNNING
            and lookup.started_at is not None
            and lookup.started_at > now - lookup_running_stale_after()
        ):
            # A duplicate message (the sweeper's) while a worker is on it: leave it be.
            return lookup
        if lookup.tries >= max_tries:
            # No try left: the last one never finished (its worker was lost, or the ATS hung
            # it), or TWOSV_LOOKUP_MAX_TRIES was lowered meanwhile.
            last = (
                "the last try did not finish (its worker was lost or the ATS did not answer)."
                if lookup.status == LookupStatus.RUNNING
                else lookup.failure_reason or "no tries left."
            )
            lookup.status = LookupStatus.FAILED
            lookup.finished_at = now
            lookup.failure_reason = f"Gave up after {lookup.tries} tries: {last}"[:500]
            lookup.save(update_fields=["status", "finished_at", "failure_reason"])
            return lookup
        lookup.status = LookupStatus.RUNNING
        lookup.tries += 1
        lookup.started_at = now
        lookup.save(update_fields=["status", "tries", "started_at"])
    this_try = lookup.tries
    method = lookup.method
    try:
        messages = (client or ats_client_from_settings()).messages(
            to=_lookup_recipient(method), since=lookup.period_start
        )
    except AtsTransientError as exc:
        if this_try >= max_tries:
            _lookup_close_try(
                lookup,
                this_try,
                status=LookupStatus.FAILED,
                failure_reason=f"The ATS still failed after {this_try} tries: {exc}.",
            )
            return lookup
        if _lookup_close_try(
            lookup,
            this_try,
            status=LookupStatus.PENDING,
            failure_reason=f"Try {this_try} of {max_tries} failed: {exc}; retrying.",
        ):
            raise
        return lookup
    except AtsPermanentError as exc:
        _lookup_close_try(lookup, this_try, status=LookupStatus.FAILED, failure_reason=f"{exc}.")
        return lookup
    except Exception as exc:  # noqa: BLE001 - logged; the lookup must not stay running
        # A bug or a broken backend: asking again won't help, and the agent needs an answer.
        lookup_log.exception("Delivery lookup %s failed unexpectedly.", lookup.pk)
        _lookup_close_try(
            lookup,
            this_try,
            status=LookupStatus.FAILED,
            failure_reason=f"The lookup failed unexpectedly ({type(exc).__name__}).",
        )
        return lookup
    verdict = classify_verdict(
        [AttemptFacts(m.created_at, m.status, m.error_code) for m in messages],
        regional_advisory=_lookup_has_regional_advisory(method),
    )
    _lookup_close_try(
        lookup, this_try, status=LookupStatus.SUCCEEDED, verdict=verdict, attempts=messages
    )
    return lookup


def lookups_sweep(*, now: datetime | None = None) -> int:
    """Publish again the lookups that look lost; return how many were published.

    Lost: pending for longer than TWOSV_LOOKUP_STALE_AFTER since it was last published (the
    broker was down, or the message was lost), or running for far longer than a try takes
    (the worker died). Stop at the first publish that fails: the broker is down, and the
    next sweep tries again.
    """
    now = now or timezone.now()
    stale = now - settings.TWOSV_LOOKUP_STALE_AFTER
    stuck = now - lookup_running_stale_after()
    pending_lost = Q(status=LookupStatus.PENDING) & (
        Q(enqueued_at__lt=stale) | Q(enqueued_at__isnull=True, created_at__lt=stale)
    )
    running_lost = Q(status=LookupStatus.RUNNING) & (
        Q(started_at__lt=stuck) | Q(started_at__isnull=True, created_at__lt=stuck)
    )
    due = list(
        DeliveryLookup.objects.filter(pending_lost | running_lost)
        .order_by("created_at")
        .values_list("pk", flat=True)[:LOOKUP_SWEEP_BATCH]
    )
    published = 0
    for lookup_id in due:
        if not lookup_enqueue(lookup_id=lookup_id):
            break
        published += 1
    if due:
        lookup_log.info(
            "Delivery lookup sweep: %d found lost, %d published again.", len(due), published
        )
    return published


def lookup_read(
    *, lookup_id: str, actor: User, context: AuditContext = NO_CONTEXT
) -> DeliveryLookup:
    """Return the lookup with its method, customer and attempts, and audit the agent's read.

    Raise NotFound for an unknown or malformed id. (A read, but an audited one: it lives here
    beside `customer_state_read_audit`.)
    """
    try:
        pk = uuid.UUID(str(lookup_id))
    except ValueError:
        raise NotFound("No delivery lookup with this id.") from None
    lookup = (
        DeliveryLookup.objects.select_related("customer", "method")
        .prefetch_related("attempts")
        .filter(pk=pk)
        .first()
    )
    if lookup is None:
        raise NotFound("No delivery lookup with this id.")
    # The one way in to a customer, as for every other agent read.
    access_customer(customer_id=lookup.customer.customer_id)
    audit_record(
        actor=actor,
        action="lookup_read",
        result="ok",
        customer_ref=lookup.customer.customer_id,
        obj=lookup,
        details={"method_id": lookup.method.method_id, "status": lookup.status},
        context=context,
    )
    return lookup
