"""Twilio's delivery receipts: record a status callback, answer lookups from them, reconcile.

Receipts are idempotent per (message, status) and order-safe: each message keeps the furthest
status it is known to have reached (`STATUS_RANK`), so a late `sent` never overwrites
`delivered`, and a final status never changes. Callbacks can arrive out of order or not at all,
so a periodic task asks the Messages API about messages still open after a few minutes.

A lookup answers from receipts, without asking the API, only when they *cover* its period
(`receipts_answer`):
- the callbacks have been arriving since before the period started (the first receipt ever
  received is older than the period's start), and the number on file has not changed since;
- the method has at least one message in the period (with none, "not sent" and "callbacks
  broken" look the same: ask the API);
- no message in the period has been open for longer than TWILIO_RECONCILE_AFTER without the
  API confirming it (its final callback may be lost).
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from twosv.ats import AtsMessage, AtsPermanentError, AtsTransientError
from twosv.ats_twilio import ats_status
from twosv.models import Method
from twosv.receipt_models import (
    FINAL_RANK,
    STATUS_RANK,
    DeliveryReceipt,
    ReceiptVia,
    TwilioMessage,
)

receipt_log = logging.getLogger("twosv.receipts")

# Inbound messages: never about a code we sent.
INBOUND_STATUSES = frozenset({"receiving", "received"})
# The reconciliation asks about at most this many messages a run; the next run takes the rest.
RECONCILE_BATCH = 100


class ReceiptResult(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    DROPPED = "dropped"


def _method_for_number(to: str) -> Method | None:
    """Return the active method a message to `to` was for: an SMS method first, the newest."""
    return (
        Method.objects.filter(phone_number=to, removed_at__isnull=True)
        .order_by(Case(When(kind="sms", then=Value(0)), default=Value(1)), "-enrolled_at", "-pk")
        .first()
    )


def _advance(
    message: TwilioMessage,
    status: str,
    error_code: int | None,
    *,
    now: datetime,
    sent_at: datetime | None = None,
) -> bool:
    """Move the (locked) message to `status` if that is further on; return whether it moved."""
    fields = []
    rank = STATUS_RANK[status]
    if rank > message.rank:
        message.status, message.rank, message.error_code = status, rank, error_code
        message.updated_at = now
        fields += ["status", "rank", "error_code", "updated_at"]
    if sent_at is not None and sent_at != message.sent_at:
        message.sent_at = sent_at
        fields.append("sent_at")
    if fields:
        message.save(update_fields=fields)
    return "status" in fields


def receipt_record(
    *,
    message_sid: str,
    status: str,
    error_code: int | None,
    to: str,
    sender: str = "",
    now: datetime | None = None,
) -> ReceiptResult:
    """Record one status callback; return whether it was stored, a duplicate, or dropped.

    A receipt for a number on no active method is dropped (nothing is stored); so is an
    inbound message's. The caller has checked the signature and the values' shapes.
    """
    now = now or timezone.now()
    if status not in STATUS_RANK:
        return ReceiptResult.DROPPED
    with transaction.atomic():
        message = TwilioMessage.objects.select_for_update().filter(message_sid=message_sid).first()
        if message is None:
            method = _method_for_number(to)
            if method is None:
                return ReceiptResult.DROPPED
            # Two first callbacks of a message racing: one row, both then lock it.
            TwilioMessage.objects.bulk_create(
                [
                    TwilioMessage(
                        message_sid=message_sid,
                        method=method,
                        status=status,
                        rank=STATUS_RANK[status],
                        error_code=error_code,
                        sender=sender[:64],
                        sent_at=now,
                        updated_at=now,
                    )
                ],
                ignore_conflicts=True,
            )
            message = TwilioMessage.objects.select_for_update().get(message_sid=message_sid)
        if DeliveryReceipt.objects.filter(message=message, status=status).exists():
            return ReceiptResult.DUPLICATE
        DeliveryReceipt.objects.bulk_create(
            [
                DeliveryReceipt(
                    message=message,
                    method_id=message.method_id,
                    status=status,
                    error_code=error_code,
                    received_at=now,
                    via=ReceiptVia.CALLBACK,
                )
            ],
            ignore_conflicts=True,
        )
        if sender and not message.sender:
            message.sender = sender[:64]
            message.save(update_fields=["sender"])
        _advance(message, status, error_code, now=now)
    return ReceiptResult.STORED


def receipts_feed_started_at() -> datetime | None:
    """Return when the first status callback still on record arrived (None: none yet)."""
    return (
        DeliveryReceipt.objects.filter(via=ReceiptVia.CALLBACK)
        .order_by("received_at")
        .values_list("received_at", flat=True)
        .first()
    )


def receipts_answer(method: Method, *, since: datetime, now: datetime) -> list[AtsMessage] | None:
    """Return the method's delivery attempts since `since` from receipts, or None.

    None when the receipts don't cover the period (the module's docstring says when they do):
    the lookup then asks the Messages API.
    """
    if not settings.TWILIO_RECEIPTS_ANSWER_LOOKUPS or not method.phone_number:
        return None
    if method.phone_changed_at is not None and method.phone_changed_at > since:
        return None
    started = receipts_feed_started_at()
    if started is None or started > since:
        return None
    messages = list(TwilioMessage.objects.filter(method=method, sent_at__gte=since))
    if not messages:
        return None
    stale = now - settings.TWILIO_RECONCILE_AFTER
    if any(m.rank < FINAL_RANK and m.sent_at < stale and m.reconciled_at is None for m in messages):
        return None
    return [
        AtsMessage(
            id=m.message_sid,
            to=method.phone_number,
            sender=m.sender,
            provider="twilio",
            status=ats_status(m.status),
            error_code=m.error_code,
            created_at=m.sent_at,
            updated_at=m.updated_at,
        )
        for m in messages
        if m.status != "canceled"
    ]


def _reconcile_one(message: TwilioMessage, found: AtsMessage | None, *, now: datetime) -> bool:
    """Apply what the Messages API says about `message`; return whether its status moved."""
    status = "canceled" if found is None else str(found.status)
    error_code = None if found is None else found.error_code
    with transaction.atomic():
        current = TwilioMessage.objects.select_for_update().filter(pk=message.pk).first()
        if current is None:
            return False
        moved = _advance(
            current,
            status,
            error_code,
            now=now,
            sent_at=None if found is None else found.created_at,
        )
        if moved:
            DeliveryReceipt.objects.bulk_create(
                [
                    DeliveryReceipt(
                        message=current,
                        method_id=current.method_id,
                        status=status,
                        error_code=error_code,
                        received_at=now,
                        via=ReceiptVia.API,
                    )
                ],
                ignore_conflicts=True,
            )
        current.reconciled_at = now
        current.save(update_fields=["reconciled_at"])
    return moved


def receipts_reconcile(*, client: object | None = None, now: datetime | None = None) -> int:
    """Ask the Messages API about messages still open after TWILIO_RECONCILE_AFTER.

    Only with the Twilio backend (or a `client` given). Each message is asked about at most
    once per TWILIO_RECONCILE_AFTER, and only within the lookup period. Stop at the first
    transient error: Twilio is down or limiting us, the next run tries again. Return how many
    messages moved on.
    """
    if client is None and settings.TWOSV_ATS_BACKEND != "twilio":
        return 0
    now = now or timezone.now()
    after = settings.TWILIO_RECONCILE_AFTER
    due = list(
        TwilioMessage.objects.filter(
            rank__lt=FINAL_RANK,
            sent_at__lt=now - after,
            sent_at__gte=now - settings.TWOSV_LOOKUP_PERIOD,
        )
        .filter(Q(reconciled_at__isnull=True) | Q(reconciled_at__lt=now - after))
        .order_by("sent_at")[:RECONCILE_BATCH]
    )
    if not due:
        return 0
    if client is None:
        from twosv.ats_twilio import twilio_client_from_settings

        try:
            client = twilio_client_from_settings()
        except AtsPermanentError as exc:
            receipt_log.warning("Receipt reconciliation skipped: %s", exc)
            return 0
    moved = 0
    for message in due:
        try:
            found = client.message(message.message_sid)  # type: ignore[attr-defined]
        except AtsTransientError as exc:
            receipt_log.info("Receipt reconciliation paused: %s", exc)
            break
        except AtsPermanentError as exc:
            # Asking again won't help (an unknown SID, say): don't ask again this period.
            receipt_log.warning("Receipt reconciliation of %s failed: %s", message.pk, exc)
            TwilioMessage.objects.filter(pk=message.pk).update(reconciled_at=now)
            continue
        moved += _reconcile_one(message, found, now=now)
    receipt_log.info("Receipt reconciliation: %d asked about, %d moved on.", len(due), moved)
    return moved
