"""Writes: every change to the 2SV domain goes through one of these functions.

Each is keyword-only, atomic, and audited where an agent or admin acts. Row locks are taken on
the method before its events are folded, so concurrent events for one method serialize.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import phonenumbers
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from twosv import policy
from twosv.audit import NO_CONTEXT, AuditContext, audit_record
from twosv.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyTries
from twosv.models import (
    PHONE_KINDS,
    Customer,
    Event,
    EventType,
    Method,
    MethodKind,
    MethodRole,
    TroubleshootingSession,
    validate_e164,
)
from twosv.selectors import lock_policy, method_projection

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
    existing = Event.objects.select_related("method").filter(event_id=event_id).first()
    if existing is not None:
        return IngestResult("duplicate", existing, existing.method)

    if event_type == EventType.METHOD_ENROLLED:
        if method is not None:
            raise Conflict(
                "A method with this method_id exists.", code="method_exists", field="data.method_id"
            )
        customer, _ = Customer.objects.get_or_create(customer_id=customer_id)
        method = Method.objects.create(
            customer=customer,
            method_id=method_id,
            kind=data["kind"],
            role=data["role"],
            phone_number=data.get("phone_number") or "",
            email=data.get("email") or "",
            label=data["label"],
            visible_in_crm=data["visible_in_crm"],
            enrolled_at=occurred_at,
            phone_changed_at=occurred_at,
        )
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

    event = Event.objects.create(
        event_id=event_id,
        type=event_type,
        customer=customer,
        method=method,
        occurred_at=occurred_at,
        data=data,
    )
    _apply_method_attributes(method, event)
    _fold_into(method, event)
    return IngestResult("accepted", event, method)


def _apply_method_attributes(method: Method, event: Event) -> None:
    """Apply what an event says about the method itself (removal, number on file)."""
    if event.type == EventType.METHOD_REMOVED:
        if method.removed_at is None or event.occurred_at < method.removed_at:
            method.removed_at = event.occurred_at
    elif event.type == EventType.PHONE_NUMBER_CHANGED:
        # Last writer by occurred_at wins, so a late, older change can't overwrite a newer one.
        if method.phone_changed_at is None or event.occurred_at >= method.phone_changed_at:
            method.phone_number = event.data["phone_number"]
            method.phone_changed_at = event.occurred_at


def _store_projection(method: Method, projection: policy.Projection) -> None:
    method.resend_times = [t.isoformat() for t in projection.resend_times]
    lock = projection.lock
    method.locked_at = lock.locked_at if lock else None
    method.locked_until = lock.locked_until if lock else None
    method.lock_lifted_at = lock.lifted_at if lock else None
    if projection.last_key is not None:
        method.last_event_at, method.last_event_id = projection.last_key
    method.save()


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
    *, customer: Customer, actor: User, step_code: str, context: AuditContext = NO_CONTEXT
) -> None:
    """Record that an agent read a customer's 2SV state (and which step it showed)."""
    audit_record(
        actor=actor,
        action="state_read",
        result="ok",
        customer_ref=customer.customer_id,
        obj=customer,
        details={"next_step": step_code},
        context=context,
    )


def _session_method(customer: Customer, method_id: str | None) -> Method | None:
    if method_id is None:
        return None
    method = Method.objects.filter(customer=customer, method_id=method_id).first()
    if method is None:
        raise NotFound(
            "This customer has no method with this id.", code="unknown_method", field="method_id"
        )
    if not method.is_active:
        raise Conflict("This method was removed.", code="method_removed", field="method_id")
    return method


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
        TroubleshootingSession.objects.select_for_update()
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
            if method != locked.method:
                # A verification was about the other method's number: it says nothing now.
                locked.method = method
                locked.phone_number_matches = None
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
    method: Method | None,
    phone_number: str,
    context: AuditContext = NO_CONTEXT,
) -> bool:
    """Compare the number the caller says with the one on file; record only the result.

    ``method`` is P, the method being troubleshot. Every call, even an unparseable number,
    uses one of the session's tries, so the number on file can't be guessed by brute force.
    """
    max_tries = settings.TWOSV_PHONE_VERIFY_MAX_TRIES
    with transaction.atomic():
        locked = _open_session_for_update(session)
        customer_ref = locked.customer.customer_id
        if method is None or not method.phone_number:
            raise Conflict(
                "The method being troubleshot has no phone number.", code="no_phone_number"
            )
        if locked.phone_verify_tries >= max_tries:
            audit_record(
                actor=actor,
                action="phone_verify",
                result="too_many_tries",
                customer_ref=customer_ref,
                obj=locked,
                context=context,
            )
            raise TooManyTries(
                f"The number was checked {max_tries} times in this session; no more tries.",
                code="too_many_tries",
            )
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
    final_step_code: str,
    context: AuditContext = NO_CONTEXT,
) -> TroubleshootingSession:
    """Close the session with its outcome and the agent's feedback on the last step."""
    with transaction.atomic():
        locked = _open_session_for_update(session)
        locked.closed_at = timezone.now()
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
