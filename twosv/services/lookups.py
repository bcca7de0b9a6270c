"""Delivery lookups ("check with ATS"): request, run, sweep.

The lookup row is its own outbox: a request commits it as pending and publishes its task
after the commit; if the broker is down the row simply stays pending and the sweeper
publishes it again later. Every state change of a run happens under the lookup's row lock
and checks that the try it closes is still the lookup's latest, so duplicate or late
messages can't overwrite a newer result.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from twosv.ats import (
    AtsClient,
    AtsMessage,
    AtsPermanentError,
    AtsTransientError,
    AttemptFacts,
    ats_client_from_settings,
    classify_verdict,
)
from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.errors import Conflict, DomainError, ErrorCode
from twosv.masking import mask_phone
from twosv.models import (
    Customer,
    DeliveryAttempt,
    DeliveryLookup,
    Incident,
    LookupStatus,
    Method,
    RegionalAdvisory,
)
from twosv.selectors import customer_method, subject_method
from twosv.services import locking, receipts
from twosv.services.enqueue import lookup_enqueue
from twosv.vocabulary import INCIDENT_ACTIVE_STATUSES

lookup_log = logging.getLogger("twosv.lookups")

LOOKUP_IN_FLIGHT = (LookupStatus.PENDING, LookupStatus.RUNNING)
LOOKUP_FINISHED = (LookupStatus.SUCCEEDED, LookupStatus.FAILED)
# A sweep publishes at most this many lookups; the next sweep takes the rest.
LOOKUP_SWEEP_BATCH = 500
LOOKUP_LOST_TRY = "the last try did not finish (its worker was lost or the ATS did not answer)."


def lookup_running_stale_after() -> timedelta:
    """Return how long a try may stay running before the sweeper takes its worker for lost.

    TWOSV_LOOKUP_RUNNING_STALE_AFTER: longer than Celery's hard time limit, which ends every
    live try sooner (twosv/checks.py refuses to start otherwise).
    """
    running_stale_after: timedelta = settings.TWOSV_LOOKUP_RUNNING_STALE_AFTER
    return running_stale_after


def _lookup_recipient(method: Method) -> str:
    """Return where the method's codes go: its phone number, else its email address."""
    return method.phone_number or method.email


def _lookup_method(customer: Customer, method_id: str | None, now: datetime) -> Method:
    """Return the method to look up: the one named, else the subject method (P in docs/SPEC.md).

    Raise NotFound for a method_id the customer doesn't have (another customer's method
    answers the same), Conflict for a method that is removed or can't receive codes.
    """
    field = "method_id" if method_id is not None else None
    if method_id is not None:
        method = customer_method(customer=customer, method_id=method_id, now=now)
    else:
        chosen = subject_method(customer=customer, chosen=None, now=now)
        if chosen is None:
            raise Conflict(
                "This customer has no active 2SV method to check.", code=ErrorCode.UNKNOWN_METHOD
            )
        method = chosen
    if not method.receives_codes:
        raise Conflict(
            "This method receives no codes (an authenticator app or security key makes its own), "
            "so there is no delivery to check.",
            code=ErrorCode.METHOD_RECEIVES_NO_CODES,
            field=field,
        )
    if not _lookup_recipient(method):
        raise Conflict(
            "This method has no phone number or email address on file to check.",
            code=ErrorCode.NO_PHONE_NUMBER,
            field=field,
        )
    return method


LOOKUP_SUPERSEDED = "Superseded by a new request: it was stale (no answer in time)."


def lookup_is_stale(lookup: DeliveryLookup, *, now: datetime) -> bool:
    """Return whether a lookup in flight looks stuck: the sweeper's own test of "lost".

    Pending since before TWOSV_LOOKUP_STALE_AFTER (since it was last published, else created),
    or running since before TWOSV_LOOKUP_RUNNING_STALE_AFTER. A finished lookup is never stale.
    """
    if lookup.status == LookupStatus.PENDING:
        since = lookup.enqueued_at or lookup.created_at
        return since < now - settings.TWOSV_LOOKUP_STALE_AFTER
    if lookup.status == LookupStatus.RUNNING:
        since = lookup.started_at or lookup.created_at
        return since < now - lookup_running_stale_after()
    return False


def lookup_stale_at(lookup: DeliveryLookup) -> datetime | None:
    """Return when a lookup in flight becomes stale (lookup_is_stale), None for a finished one."""
    if lookup.status == LookupStatus.PENDING:
        since = lookup.enqueued_at or lookup.created_at
        stale_after: timedelta = settings.TWOSV_LOOKUP_STALE_AFTER
        return since + stale_after
    if lookup.status == LookupStatus.RUNNING:
        return (lookup.started_at or lookup.created_at) + lookup_running_stale_after()
    return None


def _lookup_supersede(lookup: DeliveryLookup, *, now: datetime) -> bool:
    """Fail a stale lookup in flight under its row lock, so a new one can be created.

    Return False (and change nothing) when it moved on meanwhile: finished, or no longer stale
    (a worker picked it up). A worker still on it finds its try closed and drops its result.
    """
    current = locking.lookup_for_update(pk=lookup.pk)
    if current is None or current.status not in LOOKUP_IN_FLIGHT:
        return False
    if not lookup_is_stale(current, now=now):
        return False
    current.status = LookupStatus.FAILED
    current.finished_at = now
    current.failure_reason = LOOKUP_SUPERSEDED
    current.save(update_fields=["status", "finished_at", "failure_reason"])
    return True


def _lookup_reusable(
    method: Method, *, now: datetime, force: bool
) -> tuple[DeliveryLookup | None, DeliveryLookup | None]:
    """Return the method's lookup to reuse and the stale one superseded to make way, if any.

    The lookup in flight is reused, unless `force` and it is stale: then it is failed as
    superseded and none is reused. Without `force`, a fresh succeeded lookup is reused too.
    """
    lookups = DeliveryLookup.objects.select_related("customer", "method")
    in_flight = lookups.filter(method=method, status__in=LOOKUP_IN_FLIGHT).first()
    if in_flight is not None:
        if force and _lookup_supersede(in_flight, now=now):
            return None, in_flight
        return in_flight, None
    if force:
        return None, None
    return (
        lookups.filter(
            method=method,
            status=LookupStatus.SUCCEEDED,
            finished_at__gte=now - settings.TWOSV_LOOKUP_FRESHNESS,
        )
        .order_by("-finished_at")
        .first()
    ), None


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
        action=AuditAction.LOOKUP_REQUEST,
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

    The method is `method_id`, else the subject method (P). A lookup pending or running
    is returned as is, unless `force` and it is stale (lookup_is_stale): then it is failed as
    superseded, under its row lock, and a new one is created. One that succeeded within
    TWOSV_LOOKUP_FRESHNESS is returned as is, unless `force`. Otherwise create a pending
    lookup over the last TWOSV_LOOKUP_PERIOD and publish its task after the commit; a broker
    that is down leaves it pending for the sweeper and never fails the request.
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
            locking.method_lock(pk=method.pk)
            lookup, superseded = _lookup_reusable(method, now=now, force=force)
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
                **({"superseded": str(superseded.pk)} if superseded is not None else {}),
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
    "source",
]


def _lookup_region(method: Method) -> str:
    """Return the ISO region of the method's number ("" for an email or an unknown region)."""
    phone = mask_phone(method.phone_number)
    return phone.region if phone is not None and phone.region else ""


def _lookup_has_regional_advisory(method: Method) -> bool:
    """Return whether the number's region has a provider advisory or a delivery incident open."""
    region = _lookup_region(method)
    if not region:
        return False
    return (
        RegionalAdvisory.objects.filter(region=region, active=True).exists()
        or Incident.objects.filter(region=region, status__in=INCIDENT_ACTIVE_STATUSES).exists()
    )


def _lookup_close_try(
    lookup: DeliveryLookup,
    this_try: int,
    *,
    status: str,
    failure_reason: str = "",
    verdict: str = "",
    attempts: list[AtsMessage] | None = None,
    source: str = "",
) -> bool:
    """Record the end of try `this_try` (with its attempts, if it succeeded).

    Return False and change nothing when the lookup has moved on meanwhile: finished, or
    taken over by a newer try after the sweeper thought this worker lost.
    """
    now = timezone.now()
    with transaction.atomic():
        current = locking.lookup_for_update(pk=lookup.pk)
        if current is None or current.status != LookupStatus.RUNNING or current.tries != this_try:
            return False
        current.status = status
        current.failure_reason = failure_reason[:500]
        current.verdict = verdict
        current.source = source
        fields = ["status", "failure_reason", "verdict", "source"]
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
            region = _lookup_region(lookup.method)
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
                    region=region,
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
        lookup = locking.lookup_with_method_for_update(pk=pk)
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
            _lookup_give_up(lookup, now=now)
            return lookup
        lookup.status = LookupStatus.RUNNING
        lookup.tries += 1
        lookup.started_at = now
        lookup.save(update_fields=["status", "tries", "started_at"])
    this_try = lookup.tries
    method = lookup.method
    # With the Twilio backend, receipts answer when they cover the period: no API call.
    from_receipts = (
        receipts.receipts_answer(method, since=lookup.period_start, now=now)
        if client is None and settings.TWOSV_ATS_BACKEND == "twilio"
        else None
    )
    source = "receipts"
    try:
        if from_receipts is not None:
            messages = from_receipts
        else:
            client = client or ats_client_from_settings()
            source = getattr(client, "source", "") or str(settings.TWOSV_ATS_BACKEND)
            messages = client.messages(to=_lookup_recipient(method), since=lookup.period_start)
    except (AtsTransientError, SoftTimeLimitExceeded) as exc:
        # Celery's soft time limit interrupting the ATS call is one more transient failure:
        # recorded for this try, retried like the others.
        reason = (
            str(exc)
            if isinstance(exc, AtsTransientError)
            else (
                "the try ran into the task's "
                f"{settings.CELERY_TASK_SOFT_TIME_LIMIT:g} s soft time limit"
            )
        )
        if this_try >= max_tries:
            _lookup_close_try(
                lookup,
                this_try,
                status=LookupStatus.FAILED,
                failure_reason=f"The ATS still failed after {this_try} tries: {reason}.",
            )
            return lookup
        if _lookup_close_try(
            lookup,
            this_try,
            status=LookupStatus.PENDING,
            failure_reason=f"Try {this_try} of {max_tries} failed: {reason}; retrying.",
        ):
            if isinstance(exc, AtsTransientError):
                raise
            raise AtsTransientError(reason) from exc
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
        lookup,
        this_try,
        status=LookupStatus.SUCCEEDED,
        verdict=verdict,
        attempts=messages,
        source=source,
    )
    return lookup


def _lookup_give_up(lookup: DeliveryLookup, *, now: datetime) -> None:
    """Fail the lookup (locked by the caller) that has no try left, saying why."""
    last = (
        LOOKUP_LOST_TRY
        if lookup.status == LookupStatus.RUNNING
        else lookup.failure_reason or "no tries left."
    )
    lookup.status = LookupStatus.FAILED
    lookup.finished_at = now
    lookup.failure_reason = f"Gave up after {lookup.tries} tries: {last}"[:500]
    lookup.save(update_fields=["status", "finished_at", "failure_reason"])


def _lookup_running_lost(stuck: datetime) -> Q:
    """Match the lookups whose try has run since before `stuck`: its worker was lost."""
    return Q(status=LookupStatus.RUNNING) & (
        Q(started_at__lt=stuck) | Q(started_at__isnull=True, created_at__lt=stuck)
    )


def _lookup_release_lost_try(pk: uuid.UUID, *, stuck: datetime, now: datetime) -> str | None:
    """Close the lost try of a lookup; return its new status, None if it moved on meanwhile.

    With tries left the lookup goes back to pending (to be published again); without, it
    fails with a readable reason. A worker that was only slow finds its try closed and drops
    its result (`_lookup_close_try`).
    """
    max_tries: int = settings.TWOSV_LOOKUP_MAX_TRIES
    with transaction.atomic():
        lookup = locking.lookup_for_update(pk=pk)
        if lookup is None or lookup.status != LookupStatus.RUNNING:
            return None
        if (lookup.started_at or lookup.created_at) >= stuck:
            return None
        if lookup.tries >= max_tries:
            _lookup_give_up(lookup, now=now)
        else:
            lookup.status = LookupStatus.PENDING
            lookup.failure_reason = (
                f"Try {lookup.tries} of {max_tries} did not finish (its worker was lost); retrying."
            )
            lookup.save(update_fields=["status", "failure_reason"])
        return str(lookup.status)


def lookups_sweep(*, now: datetime | None = None) -> int:
    """Publish again the lookups that look lost; return how many were published.

    Lost: pending for longer than TWOSV_LOOKUP_STALE_AFTER since it was last published (the
    broker was down, or the message was lost), or running for longer than
    TWOSV_LOOKUP_RUNNING_STALE_AFTER (the worker died: a live try ends sooner, at Celery's
    hard time limit). A lost try goes back to pending and is published again, or fails the
    lookup when it was the last. Stop at the first publish that fails: the broker is down,
    the lookups stay pending, and the next sweep tries again.
    """
    now = now or timezone.now()
    stale = now - settings.TWOSV_LOOKUP_STALE_AFTER
    stuck = now - lookup_running_stale_after()
    pending_lost = Q(status=LookupStatus.PENDING) & (
        Q(enqueued_at__lt=stale) | Q(enqueued_at__isnull=True, created_at__lt=stale)
    )
    due = list(
        DeliveryLookup.objects.filter(pending_lost | _lookup_running_lost(stuck))
        .order_by("created_at")
        .values_list("pk", "status")[:LOOKUP_SWEEP_BATCH]
    )
    published = failed = 0
    for lookup_id, status in due:
        if status == LookupStatus.RUNNING:
            released = _lookup_release_lost_try(lookup_id, stuck=stuck, now=now)
            if released == LookupStatus.FAILED:
                failed += 1
            if released != LookupStatus.PENDING:
                continue
        if not lookup_enqueue(lookup_id=lookup_id):
            break
        published += 1
    if due:
        lookup_log.info(
            "Delivery lookup sweep: %d found lost, %d published again, %d failed (no try left).",
            len(due),
            published,
            failed,
        )
    return published
