"""What the panel's page shows beside the engine's words: times, numbers, tries, lookup age.

Pure presentation over the selectors' objects: no writes. The engine's texts carry times as
"2025-03-01 17:30 UTC" and numbers as "+1 480-360-5516"; `pieces` cuts them out so the template
renders each time as a ``<time>`` (the page's script shows it in the agent's local time, UTC on
hover) and each number on one line (``white-space: nowrap``).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from twosv.engine import Advisory
from twosv.models import DeliveryLookup, PhoneCheck, TroubleshootingSession
from twosv.services.lookups import lookup_is_stale, lookup_stale_at

# The engine's time format (twosv.engine.wording.format_time) and an E.164-ish phone number,
# readable ("+1 480-360-5516") or masked ("+91 ••••••••10").
_PIECES = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d) UTC|(?P<number>\+\d{1,3}(?:[ \-().•]*[\d•]){4,})"
)


@dataclass(frozen=True)
class Piece:
    """A run of text, a time (rendered as <time>) or a phone number (never wrapped)."""

    text: str
    kind: str = "text"  # text | time | number
    moment: datetime | None = None


def pieces(text: str) -> list[Piece]:
    """Cut `text` into plain runs, times and phone numbers, in order."""
    found: list[Piece] = []
    position = 0
    for match in _PIECES.finditer(text):
        if match.start() > position:
            found.append(Piece(text[position : match.start()]))
        if match.group("time"):
            moment = datetime.strptime(match.group("time"), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            found.append(Piece(match.group(0), "time", moment))
        else:
            found.append(Piece(match.group(0), "number"))
        position = match.end()
    if position < len(text):
        found.append(Piece(text[position:]))
    return found


@dataclass(frozen=True)
class ShownAdvisory:
    """An advisory as the page shows it: its code, severity, method, lock end and text."""

    code: str
    severity: str
    method_id: str | None
    locked_until: datetime | None
    pieces: list[Piece]


def shown_advisories(advisories: tuple[Advisory, ...]) -> list[ShownAdvisory]:
    """Return the advisories in the engine's order (warnings first), ready for the template."""
    return [
        ShownAdvisory(
            code=str(a.code),
            severity=str(a.severity),
            method_id=a.method_id,
            locked_until=a.locked_until,
            pieces=pieces(a.message),
        )
        for a in advisories
    ]


@dataclass(frozen=True)
class PhoneTries:
    """How many phone checks are left for this call, and why none are when it's 0."""

    left: int
    why_none: str


def phone_tries(customer_pk: int, session: TroubleshootingSession | None) -> PhoneTries:
    """Return the checks left: the fewer of the session's and the customer's (docs/SPEC.md §5)."""
    per_session: int = settings.TWOSV_PHONE_VERIFY_MAX_TRIES
    per_customer: int = settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER
    window: timedelta = settings.TWOSV_PHONE_VERIFY_CUSTOMER_WINDOW
    session_left = max(per_session - (session.phone_verify_tries if session else 0), 0)
    used = PhoneCheck.objects.filter(
        customer_id=customer_pk, created_at__gt=timezone.now() - window
    ).count()
    customer_left = max(per_customer - used, 0)
    if session_left == 0:
        why = f"the number was checked {per_session} times in this session, the most allowed."
    elif customer_left == 0:
        why = (
            f"this customer's number was checked {per_customer} times in the last "
            f"{window / timedelta(hours=1):g} h, across all sessions and agents."
        )
    else:
        why = ""
    return PhoneTries(left=min(session_left, customer_left), why_none=why)


@dataclass(frozen=True)
class LookupAge:
    """Whether a lookup in flight looks stuck, and in how many seconds it will."""

    stale: bool
    stale_in: int


def lookup_age(lookup: DeliveryLookup | None, *, now: datetime) -> LookupAge:
    """Return the lookup's staleness by the service's own test (`force` supersedes it then)."""
    if lookup is None:
        return LookupAge(stale=False, stale_in=0)
    stale_at = lookup_stale_at(lookup)
    if stale_at is None:
        return LookupAge(stale=False, stale_in=0)
    seconds = max(0, int((stale_at - now).total_seconds()) + 1)
    return LookupAge(stale=lookup_is_stale(lookup, now=now), stale_in=seconds)
