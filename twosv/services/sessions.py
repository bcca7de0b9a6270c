"""Troubleshooting sessions: an agent opens one, records the caller's answers, checks the
caller's phone number, and closes it with an outcome."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import phonenumbers
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.errors import Conflict, ErrorCode, InvalidInput, TooManyTries
from twosv.models import Customer, Method, PhoneCheck, TroubleshootingSession
from twosv.selectors import customer_method, customer_twosv_state, subject_method
from twosv.services import locking

SESSION_ANSWER_FIELDS = ("has_device_access", "has_backup_device_access", "phone_number_changed")
_UNSET: Any = object()


def _session_method(customer: Customer, method_id: str | None) -> Method | None:
    """Return the method the session is about: the one named, else the subject method (P).

    Recorded on the session even when the agent named none, so the admin's list and CSV say
    which method each session was about (None only when the customer has no active method).
    """
    now = timezone.now()
    chosen = (
        None
        if method_id is None
        else customer_method(customer=customer, method_id=method_id, now=now)
    )
    return subject_method(customer=customer, chosen=chosen, now=now)


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
            action=AuditAction.SESSION_START,
            result="ok",
            customer_ref=customer.customer_id,
            obj=session,
            details={"method_id": method_id, "answers": answers or {}},
            context=context,
        )
    return session


def _answer_field(key: str) -> str:
    if key not in SESSION_ANSWER_FIELDS:
        raise InvalidInput("Unknown answer.", code=ErrorCode.UNKNOWN_FIELD, field=f"answers.{key}")
    return key


def _open_session_for_update(session: TroubleshootingSession) -> TroubleshootingSession:
    locked = locking.session_for_update(pk=session.pk)
    if locked.closed_at is not None:
        raise Conflict("This session is closed.", code=ErrorCode.SESSION_CLOSED)
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
            before = subject_method(customer=locked.customer, chosen=locked.method, now=now)
            if method != before:
                # A verification was about the other method's number: it says nothing now.
                locked.phone_number_matches = None
                locked.phone_check_misses = 0
            locked.method = method
        else:
            # Kept current: a method removed since falls back to the one the engine now uses.
            locked.method = subject_method(
                customer=locked.customer, chosen=locked.method, now=timezone.now()
            )
        locked.save()
        audit_record(
            actor=actor,
            action=AuditAction.SESSION_UPDATE,
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
    """Compare the number the caller says with the subject method's; record only the result.

    The subject method (P in docs/SPEC.md) is the method being troubleshot, read under the session's
    row lock so a concurrent method switch can't slip in between. Every call, even an
    unparseable number, uses one of the session's tries and one of the customer's, so the
    number on file can't be guessed by brute force: at most TWOSV_PHONE_VERIFY_MAX_TRIES a
    session, and TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER a customer in the window across every
    session and agent (new sessions don't reset it). The customer's tries are PhoneCheck rows,
    counted under the customer's row lock, so concurrent checks can't pass the limit. A refused
    try stores nothing but its audit entry.
    """
    max_tries = settings.TWOSV_PHONE_VERIFY_MAX_TRIES
    refusal: TooManyTries | None = None
    match: bool | None = None
    with transaction.atomic():
        locked = _open_session_for_update(session)
        customer = locked.customer
        method = subject_method(customer=customer, chosen=locked.method, now=timezone.now())
        if method is None or not method.phone_number:
            raise Conflict(
                "The method being troubleshot has no phone number.", code=ErrorCode.NO_PHONE_NUMBER
            )
        details: dict[str, Any] = {"method_id": method.method_id}
        if locked.phone_verify_tries >= max_tries:
            refusal = TooManyTries(
                f"The number was checked {max_tries} times in this session; no more tries.",
                code=ErrorCode.TOO_MANY_TRIES,
            )
        else:
            customer_tries, refusal = _customer_phone_checks(customer)
            details["customer_tries"] = customer_tries
        if refusal is not None:
            # Refused after the block commits: raising in here would roll this entry back.
            audit_record(
                actor=actor,
                action=AuditAction.PHONE_VERIFY,
                result=str(refusal.code),
                customer_ref=customer.customer_id,
                obj=locked,
                details=details,
                context=context,
            )
        else:
            locked.phone_verify_tries += 1
            match = phone_numbers_match(phone_number, method.phone_number)
            if match is not None:
                # Misses in a row: one may be a misread digit (R6a), two are another number (R6).
                locked.phone_number_matches = match
                locked.phone_check_misses = 0 if match else locked.phone_check_misses + 1
            locked.save(
                update_fields=[
                    "phone_verify_tries",
                    "phone_number_matches",
                    "phone_check_misses",
                    "updated_at",
                ]
            )
            PhoneCheck.objects.create(
                customer=customer,
                session=locked,
                actor=actor,
                created_at=timezone.now(),
                matched=match,
            )
            result = "invalid" if match is None else ("match" if match else "mismatch")
            # The result only: never the number typed, which may be a guess at a real one.
            audit_record(
                actor=actor,
                action=AuditAction.PHONE_VERIFY,
                result=result,
                customer_ref=customer.customer_id,
                obj=locked,
                details={
                    **details,
                    "try": locked.phone_verify_tries,
                    "misses_in_a_row": locked.phone_check_misses,
                    "customer_tries": details["customer_tries"] + 1,
                },
                context=context,
            )
    if refusal is not None:
        raise refusal
    session.refresh_from_db()
    if match is None:
        raise InvalidInput(
            "Not a phone number. Type it as the customer says it, e.g. +1 415 555 0100.",
            code=ErrorCode.INVALID_PHONE_NUMBER,
            field="phone_number",
        )
    return match


def _customer_phone_checks(customer: Customer) -> tuple[int, TooManyTries | None]:
    """Lock the customer and count its phone checks in the window; refuse one over the limit.

    Return the count so far, and the refusal when no try is left. The row lock holds until the
    caller's transaction ends, so its PhoneCheck is written before the next check counts.
    """
    limit: int = settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER
    window: timedelta = settings.TWOSV_PHONE_VERIFY_CUSTOMER_WINDOW
    locking.customer_lock(pk=customer.pk)
    since = timezone.now() - window
    count = PhoneCheck.objects.filter(customer=customer, created_at__gt=since).count()
    if count < limit:
        return count, None
    hours = window / timedelta(hours=1)
    return count, TooManyTries(
        f"This customer's number was checked {limit} times in the last {hours:g} h, across all "
        "sessions and agents; no more tries for now.",
        code=ErrorCode.TOO_MANY_PHONE_CHECKS,
    )


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
            action=AuditAction.SESSION_CLOSE,
            result=outcome,
            customer_ref=locked.customer.customer_id,
            obj=locked,
            details={"helpful": helpful, "final_step_code": final_step_code},
            context=context,
        )
    return locked
