"""A method's timeline (docs/SPEC.md §10): one list of what happened to it, newest first.

Three sources, merged: the method's events (sent, resend requested or blocked, locked, verified,
rejected, lifted, number changed, removed), the delivery attempts its lookups found (each
message once, as its latest lookup saw it, and only when no receipt speaks for it) and Twilio's
receipts (each status of each message). Numbers are masked; error codes come with their meaning
in words (twosv/twilio_errors.py).

Paged by an opaque cursor: the sort key (time, source, row id) of the last item given, signed
so that a client can hand it back but not forge it, and tied to the method and `since`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.core import signing
from django.db.models import Max, Q, QuerySet

from twosv.errors import InvalidInput
from twosv.masking import mask_phone
from twosv.models import DeliveryAttempt, Event, Method
from twosv.receipt_models import DeliveryReceipt, TwilioMessage
from twosv.twilio_errors import error_code_meaning
from twosv.vocabulary import EventOutcome, EventType

TIMELINE_MAX_ITEMS = 500
_CURSOR_SALT = "twosv.timeline.cursor"
# Sources, in their order within one instant (part of the sort key).
_EVENT, _ATTEMPT, _RECEIPT = 0, 1, 2

# The item types, and the words each event becomes.
TIMELINE_TYPES = (
    "enrolled",
    "code_sent",
    "resend_requested",
    "resend_blocked",
    "locked",
    "verified",
    "rejected",
    "lock_lifted",
    "number_changed",
    "removed",
    "delivery_attempt",
    "delivery_receipt",
)


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    type: str
    detail: str
    status: str | None
    error_code: int | None
    source: int
    row: int

    @property
    def key(self) -> tuple[datetime, int, int]:
        return (self.at, self.source, self.row)


@dataclass(frozen=True)
class TimelinePage:
    items: list[TimelineItem]
    next_cursor: str | None
    since: datetime


@dataclass(frozen=True)
class _Cursor:
    since: datetime
    at: datetime
    source: int
    row: int


def _cursor_dumps(method: Method, since: datetime, last: TimelineItem) -> str:
    payload = [method.pk, since.isoformat(), last.at.isoformat(), last.source, last.row]
    return signing.dumps(payload, salt=_CURSOR_SALT, compress=True)


def _cursor_loads(method: Method, value: str) -> _Cursor:
    invalid = InvalidInput("This cursor is not one this timeline gave.", field="cursor")
    try:
        method_pk, since, at, source, row = signing.loads(value, salt=_CURSOR_SALT)
        cursor = _Cursor(datetime.fromisoformat(since), datetime.fromisoformat(at), source, row)
    except (signing.BadSignature, ValueError, TypeError):
        raise invalid from None
    if method_pk != method.pk:
        raise invalid
    return cursor


def _before(field: str, source: int, cursor: _Cursor | None) -> Q:
    """Match the rows of `source` that sort after the cursor (older), newest first."""
    if cursor is None:
        return Q()
    if source < cursor.source:
        return Q(**{f"{field}__lte": cursor.at})
    if source > cursor.source:
        return Q(**{f"{field}__lt": cursor.at})
    return Q(**{f"{field}__lt": cursor.at}) | Q(**{field: cursor.at, "pk__lt": cursor.row})


def _masked(number: str) -> str:
    masked = mask_phone(number)
    return masked.masked if masked is not None else "the number on file"


def _event_item(event: Event, number: str) -> TimelineItem:
    kind, outcome = event.type, event.outcome
    if kind == EventType.CODE_RESEND_REQUESTED and outcome == EventOutcome.LOCKED:
        item = ("locked", "A resend request went over the limit: the method locked.")
    elif kind == EventType.CODE_RESEND_REQUESTED and outcome == EventOutcome.BLOCKED:
        item = ("resend_blocked", "Resend requested while locked: blocked, not counted.")
    else:
        new_number = event.data.get("phone_number") if isinstance(event.data, dict) else None
        words = {
            EventType.METHOD_ENROLLED: ("enrolled", "Method enrolled."),
            EventType.METHOD_REMOVED: ("removed", "Method removed."),
            EventType.PHONE_NUMBER_CHANGED: (
                "number_changed",
                f"Number on file changed to {_masked(new_number or '')}.",
            ),
            EventType.CODE_SENT: ("code_sent", f"A code was sent to {number}."),
            EventType.CODE_RESEND_REQUESTED: (
                "resend_requested",
                "The customer asked for a resend.",
            ),
            EventType.CODE_VERIFIED: ("verified", "A code was verified: the resend count reset."),
            EventType.CODE_REJECTED: ("rejected", "A wrong code was typed."),
            EventType.LOCK_LIFTED: ("lock_lifted", "An admin lifted the lock."),
        }
        item = words.get(EventType(kind), (str(kind), str(kind)))
    return TimelineItem(event.occurred_at, item[0], item[1], None, None, _EVENT, event.pk)


def _delivery_detail(status: str, error_code: int | None, number: str, how: str) -> str:
    words = {
        "delivered": f"Delivered to {number}",
        "read": f"Delivered to {number} and read",
        "undelivered": f"Not delivered to {number}",
        "failed": f"Failed: not sent to {number}",
        "sent": f"Sent to {number}'s carrier, no receipt yet",
        "sending": f"Being sent to {number}",
        "queued": "Queued at the provider",
        "accepted": "Accepted by the provider",
        "scheduled": "Scheduled at the provider",
        "canceled": "Cancelled before it was sent",
    }
    text = f"{words.get(status, status.capitalize())} ({how})."
    meaning = error_code_meaning(error_code)
    if meaning is not None:
        text += f" Error {error_code}: {meaning}"
    return text


def _events(method: Method, since: datetime, cursor: _Cursor | None, n: int) -> list[Event]:
    rows = Event.objects.filter(method=method, occurred_at__gte=since).filter(
        _before("occurred_at", _EVENT, cursor)
    )
    return list(
        rows.order_by("-occurred_at", "-pk").only("occurred_at", "type", "outcome", "data")[:n]
    )


def _attempts(
    method: Method, since: datetime, cursor: _Cursor | None, n: int
) -> QuerySet[DeliveryAttempt]:
    latest = (
        DeliveryAttempt.objects.filter(lookup__method=method)
        .values("external_id")
        .annotate(latest=Max("pk"))
        .values("latest")
    )
    with_receipts = TwilioMessage.objects.filter(method=method).values("message_sid")
    return (
        DeliveryAttempt.objects.filter(pk__in=latest, sent_at__gte=since)
        .exclude(external_id__in=with_receipts)
        .filter(_before("sent_at", _ATTEMPT, cursor))
        .order_by("-sent_at", "-pk")[:n]
    )


def _receipts(
    method: Method, since: datetime, cursor: _Cursor | None, n: int
) -> QuerySet[DeliveryReceipt]:
    return (
        DeliveryReceipt.objects.filter(method=method, received_at__gte=since)
        .filter(_before("received_at", _RECEIPT, cursor))
        .select_related("message")
        .order_by("-received_at", "-pk")[:n]
    )


def method_timeline(
    *, method: Method, since: datetime, cursor: str | None = None, limit: int = TIMELINE_MAX_ITEMS
) -> TimelinePage:
    """Return the method's timeline since `since` (or the cursor's), newest first, one page.

    Raise InvalidInput for a cursor this timeline didn't give.
    """
    limit = max(1, min(limit, TIMELINE_MAX_ITEMS))
    parsed = _cursor_loads(method, cursor) if cursor else None
    if parsed is not None:
        since = parsed.since
    number = _masked(method.phone_number) if method.phone_number else "the address on file"
    n = limit + 1
    items = [_event_item(event, number) for event in _events(method, since, parsed, n)]
    items += [
        TimelineItem(
            a.sent_at,
            "delivery_attempt",
            _delivery_detail(a.status, a.error_code, number, "found by a delivery lookup"),
            a.status,
            a.error_code,
            _ATTEMPT,
            a.pk,
        )
        for a in _attempts(method, since, parsed, n)
    ]
    items += [
        TimelineItem(
            r.received_at,
            "delivery_receipt",
            _delivery_detail(
                r.status,
                r.error_code,
                number,
                f"Twilio receipt for message {r.message.message_sid}",
            ),
            r.status,
            r.error_code,
            _RECEIPT,
            r.pk,
        )
        for r in _receipts(method, since, parsed, n)
    ]
    items.sort(key=lambda item: item.key, reverse=True)
    page = items[:limit]
    next_cursor = _cursor_dumps(method, since, page[-1]) if len(items) > limit else None
    return TimelinePage(items=page, next_cursor=next_cursor, since=since)
