"""Reads for the admin's insights page: aggregate queries over a period of whole days.

Every figure comes from a grouped query (``values().annotate(Count(...))``); Python only merges
the grouped rows (a handful per day, verdict, prefix or step), never the underlying rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache

import phonenumbers
from django.db.models import Count, Q
from django.db.models.functions import Substr, TruncDate
from django.utils import timezone

from twosv.masking import mask_phone
from twosv.models import (
    DeliveryLookup,
    DeliveryReceipt,
    Event,
    EventOutcome,
    Incident,
    LookupStatus,
    RegionalAdvisory,
    SessionOutcome,
    TroubleshootingSession,
    Verdict,
)
from twosv.twilio_errors import error_code_meaning
from twosv.vocabulary import StepCode

PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30

# A lookup that failed (ATS down, tries used up) has no verdict; it is shown as its own column.
LOOKUP_FAILED = "lookup_failed"
VERDICT_COLUMNS: tuple[tuple[str, str], ...] = (
    *((value, str(label)) for value, label in Verdict.choices),
    (LOOKUP_FAILED, "Lookup failed"),
)
EMAIL_REGION = "email"
UNKNOWN_REGION = "unknown"


@dataclass(frozen=True)
class Period:
    """Whole days from `first_day` to `last_day` (inclusive), as ``[start, end)`` instants."""

    days: int
    first_day: date
    last_day: date
    start: datetime
    end: datetime

    def day_list(self) -> list[date]:
        return [self.first_day + timedelta(days=offset) for offset in range(self.days)]


def period_for(days: int, *, now: datetime) -> Period:
    """Return the `days` whole days ending today (in the current time zone)."""
    today = timezone.localtime(now).date()
    first_day = today - timedelta(days=days - 1)
    zone = timezone.get_current_timezone()
    return Period(
        days=days,
        first_day=first_day,
        last_day=today,
        start=datetime.combine(first_day, time.min, tzinfo=zone),
        end=datetime.combine(today + timedelta(days=1), time.min, tzinfo=zone),
    )


def parse_period(raw: str | None) -> int:
    """Return the period in days asked for by a GET parameter, or the default."""
    try:
        days = int(raw or "")
    except ValueError:
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


# ---------------------------------------------------------------------------------------------
# Locks per day
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayLocks:
    day: date
    locked: int
    lifted: int


def locks_per_day(period: Period) -> list[DayLocks]:
    """Return, for each day of the period, how many methods locked and how many locks admins lifted.

    A lock is the event whose fold outcome is ``locked`` (the 201st counted resend), dated by
    its ``occurred_at``.
    """
    rows = (
        Event.objects.filter(
            outcome__in=[EventOutcome.LOCKED, EventOutcome.LIFTED],
            occurred_at__gte=period.start,
            occurred_at__lt=period.end,
        )
        .annotate(day=TruncDate("occurred_at"))
        .values("day", "outcome")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    counts: dict[tuple[date, str], int] = {(row["day"], row["outcome"]): row["n"] for row in rows}
    return [
        DayLocks(
            day=day,
            locked=counts.get((day, EventOutcome.LOCKED), 0),
            lifted=counts.get((day, EventOutcome.LIFTED), 0),
        )
        for day in period.day_list()
    ]


# ---------------------------------------------------------------------------------------------
# Lookup verdicts by phone region
# ---------------------------------------------------------------------------------------------


@dataclass
class RegionVerdicts:
    """Finished lookups of one country calling code, counted by verdict."""

    key: str  # the calling code as "+91", or EMAIL_REGION / UNKNOWN_REGION
    label: str
    regions: tuple[str, ...]
    advisory: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, verdict: str) -> int:
        return self.counts.get(verdict, 0)

    def cells(self) -> list[int]:
        return [self.count(verdict) for verdict, _label in VERDICT_COLUMNS]


def calling_code(prefix: str) -> int | None:
    """Return the country calling code an E.164 number starting with `prefix` has.

    Calling codes are a prefix code (no code is the start of another), so the first of the
    1-, 2- and 3-digit prefixes that is assigned is the number's code.
    """
    digits = prefix.removeprefix("+")
    for length in (1, 2, 3):
        if len(digits) < length or not digits[:length].isdigit():
            return None
        code = int(digits[:length])
        if phonenumbers.region_code_for_country_code(code) != phonenumbers.UNKNOWN_REGION:
            return code
    return None


@lru_cache(maxsize=1024)
def _region_group(prefix: str) -> tuple[str, str, tuple[str, ...]]:
    """Return (key, label, regions) of the calling code a phone number prefix belongs to."""
    if not prefix:
        return EMAIL_REGION, "Email (no phone)", ()
    code = calling_code(prefix)
    if code is None:
        return UNKNOWN_REGION, "Unknown", ()
    regions = tuple(phonenumbers.region_codes_for_country_code(code))
    if regions == (phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY,):
        return f"+{code}", f"Non-geographic (+{code})", ()
    name = _region_name(phonenumbers.region_code_for_country_code(code))
    others = len(regions) - 1
    label = f"{name} (+{code})" if others == 0 else f"{name} and {others} more (+{code})"
    return f"+{code}", label, regions


def _region_name(region: str) -> str:
    """Return the region's English name ("India"), or its code when none is known."""
    # Imported here, not at the top: phonenumbers.geocoder loads ~100 MB of geocoding data
    # (and ~2 s), and admin.py imports this module into every web and Celery process.
    from phonenumbers import geocoder

    example = phonenumbers.example_number(region)
    name = geocoder.country_name_for_number(example, "en") if example is not None else ""
    return name or region


def verdicts_by_region(period: Period) -> list[RegionVerdicts]:
    """Return finished lookups created in the period by verdict and the number's calling code.

    Lookups are grouped in SQL by verdict and the first four characters of the method's number
    ("+" and three digits, enough to hold any calling code); the calling code and its regions
    are then derived from each grouped prefix. Email methods form their own group. Regions with
    an active provider advisory are flagged. Largest groups first.
    """
    rows = (
        DeliveryLookup.objects.filter(
            created_at__gte=period.start,
            created_at__lt=period.end,
            status__in=[LookupStatus.SUCCEEDED, LookupStatus.FAILED],
        )
        .annotate(prefix=Substr("method__phone_number", 1, 4))
        .values("status", "verdict", "prefix")
        .annotate(n=Count("id"))
        .order_by()
    )
    advised = set(RegionalAdvisory.objects.filter(active=True).values_list("region", flat=True))
    groups: dict[str, RegionVerdicts] = {}
    for row in rows:
        key, label, regions = _region_group(row["prefix"] or "")
        group = groups.get(key)
        if group is None:
            group = groups[key] = RegionVerdicts(
                key=key, label=label, regions=regions, advisory=bool(advised & set(regions))
            )
        bucket = LOOKUP_FAILED if row["status"] == LookupStatus.FAILED else row["verdict"]
        if not bucket:  # pragma: no cover - a succeeded lookup always has a verdict
            continue
        group.counts[bucket] = group.counts.get(bucket, 0) + row["n"]
    return sorted(groups.values(), key=lambda group: (-group.total, group.label))


@dataclass(frozen=True)
class IncidentMark:
    """A delivery incident that was open during the period, placed on its region's row."""

    region: str  # ISO, e.g. "IN"
    group_key: str  # the calling code group of verdicts_by_region, e.g. "+91"
    status: str
    opened_at: datetime
    ended_at: datetime | None  # resolved or dismissed; None while open or confirmed
    failures: int
    attempts: int
    share: float

    @property
    def percent(self) -> str:
        return f"{self.share:.0%}"


def incidents_in(period: Period) -> list[IncidentMark]:
    """Return the delivery incidents open at any time in the period, oldest first."""
    rows = (
        Incident.objects.filter(opened_at__lt=period.end)
        .exclude(resolved_at__lt=period.start)
        .exclude(dismissed_at__lt=period.start)
        .order_by("opened_at", "id")
    )
    marks = []
    for incident in rows:
        code = phonenumbers.country_code_for_region(incident.region)
        marks.append(
            IncidentMark(
                region=incident.region,
                group_key=f"+{code}" if code else UNKNOWN_REGION,
                status=incident.status,
                opened_at=incident.opened_at,
                ended_at=incident.resolved_at or incident.dismissed_at,
                failures=incident.failures,
                attempts=incident.attempts,
                share=incident.share,
            )
        )
    return marks


# ---------------------------------------------------------------------------------------------
# Twilio delivery receipts by region, status and error code
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptBucket:
    """Receipts of one region with one status and error code (None: no error)."""

    region: str  # ISO, e.g. "IN"; UNKNOWN_REGION for a number no region is known for
    label: str
    status: str
    error_code: int | None
    count: int

    @property
    def series(self) -> str:
        """Return the chart series the bucket is drawn in: "undelivered 30003" or "delivered"."""
        return self.status if self.error_code is None else f"{self.status} {self.error_code}"

    @property
    def meaning(self) -> str:
        return error_code_meaning(self.error_code) or ""


@lru_cache(maxsize=4096)
def _number_region(number: str) -> str:
    masked = mask_phone(number)
    region = masked.region if masked is not None else None
    if not region or region == phonenumbers.UNKNOWN_REGION:
        return UNKNOWN_REGION
    return region


def _receipt_region_label(region: str) -> str:
    if region == UNKNOWN_REGION:
        return "Unknown"
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return "Non-geographic"
    return f"{_region_name(region)} ({region})"


def receipts_by_region(period: Period) -> list[ReceiptBucket]:
    """Return the delivery receipts received in the period by region, status and error code.

    One grouped query, by the method's number, status and error code; the region (phonenumbers'
    region code) is derived in Python once per distinct number, and the rows merged by region.
    Largest regions first, then largest buckets within a region.
    """
    rows = (
        DeliveryReceipt.objects.filter(received_at__gte=period.start, received_at__lt=period.end)
        .values("method__phone_number", "status", "error_code")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[tuple[str, str, int | None], int] = {}
    for row in rows:
        key = (_number_region(row["method__phone_number"] or ""), row["status"], row["error_code"])
        counts[key] = counts.get(key, 0) + row["n"]
    region_totals: dict[str, int] = {}
    for (region, _status, _code), n in counts.items():
        region_totals[region] = region_totals.get(region, 0) + n
    buckets = [
        ReceiptBucket(
            region=region,
            label=_receipt_region_label(region),
            status=status,
            error_code=code,
            count=n,
        )
        for (region, status, code), n in counts.items()
    ]
    return sorted(
        buckets,
        key=lambda b: (-region_totals[b.region], b.region, -b.count, b.status, b.error_code or 0),
    )


# ---------------------------------------------------------------------------------------------
# Next-step outcomes
# ---------------------------------------------------------------------------------------------

# The engine's step titles (the `title` of each Step in twosv/engine/steps_*.py), as the panel
# shows them; tests/test_insights.py checks this table against the engine's source.
STEP_TITLES: dict[str, str] = {
    StepCode.NO_2SV_ENROLLED: "No 2SV method is set up",
    StepCode.USE_BACKUP_METHOD: "Use the backup method",
    StepCode.ASK_BACKUP_DEVICE_ACCESS: "Ask about the backup device",
    StepCode.WAIT_FOR_LOCK_EXPIRY: "Wait for the lock to end",
    StepCode.ASK_DEVICE_ACCESS: "Ask about the device",
    StepCode.CANCEL_2SV_NO_DEVICE_ACCESS: "Cancel 2SV: no access to the device",
    StepCode.VERIFY_PHONE_NUMBER: "Verify the phone number",
    StepCode.RECHECK_PHONE_NUMBER: "Check the number again",
    StepCode.PROBLEM_LIES_ELSEWHERE: "The problem lies elsewhere",
    StepCode.CHECK_ATS_DELIVERY: "Check delivery with ATS",
    StepCode.WAIT_FOR_ATS_LOOKUP: "Wait for the ATS lookup",
    StepCode.RETRY_ATS_LOOKUP: "Run the ATS lookup again",
    StepCode.ESCALATE_CODES_NOT_SENT: "Escalate: no codes were sent",
    StepCode.CHECK_CARRIER_BLOCK: "Check for a carrier block",
    StepCode.CHECK_HANDSET_REACHABLE: "Check that the device can receive messages",
    StepCode.REGIONAL_PROVIDER_ISSUE: "Known provider problem in this region",
    StepCode.ESCALATE_PROVIDER_ERROR: "Escalate: the provider failed to deliver",
}
NO_STEP = "(no step)"


def step_title(step_code: str) -> str:
    """Return the step's title as agents saw it; a code no longer known is shown as is."""
    if not step_code:
        return NO_STEP
    return STEP_TITLES.get(step_code, step_code)


@dataclass
class StepOutcomes:
    """Sessions closed on one step, by outcome, and how agents rated the step."""

    step_code: str
    resolved: int = 0
    not_resolved: int = 0
    escalated: int = 0
    helpful_yes: int = 0
    helpful_answered: int = 0

    @property
    def title(self) -> str:
        """Return the step's title, as the panel showed it."""
        return step_title(self.step_code)

    @property
    def total(self) -> int:
        return self.resolved + self.not_resolved + self.escalated

    @property
    def helpful_rate(self) -> float | None:
        """Return the share of rated sessions found helpful, or None when none was rated."""
        if not self.helpful_answered:
            return None
        return self.helpful_yes / self.helpful_answered


def step_outcomes(period: Period) -> list[StepOutcomes]:
    """Return the sessions closed in the period by final step code and outcome, most used first."""
    rows = (
        TroubleshootingSession.objects.filter(closed_at__gte=period.start, closed_at__lt=period.end)
        .values("final_step_code", "outcome")
        .annotate(
            n=Count("id"),
            helpful_yes=Count("id", filter=Q(helpful=True)),
            helpful_answered=Count("id", filter=Q(helpful__isnull=False)),
        )
        .order_by()
    )
    steps: dict[str, StepOutcomes] = {}
    for row in rows:
        code = row["final_step_code"]
        step = steps.setdefault(code, StepOutcomes(step_code=code))
        if row["outcome"] == SessionOutcome.RESOLVED:
            step.resolved += row["n"]
        elif row["outcome"] == SessionOutcome.ESCALATED:
            step.escalated += row["n"]
        else:
            step.not_resolved += row["n"]
        step.helpful_yes += row["helpful_yes"]
        step.helpful_answered += row["helpful_answered"]
    return sorted(steps.values(), key=lambda step: (-step.total, step.step_code))


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Insights:
    period: Period
    locks: list[DayLocks]
    regions: list[RegionVerdicts]
    steps: list[StepOutcomes]
    incidents: list[IncidentMark] = field(default_factory=list)
    receipts: list[ReceiptBucket] = field(default_factory=list)

    @property
    def locks_total(self) -> int:
        return sum(day.locked for day in self.locks)

    @property
    def lifts_total(self) -> int:
        return sum(day.lifted for day in self.locks)

    @property
    def lookups_total(self) -> int:
        return sum(group.total for group in self.regions)

    @property
    def receipts_total(self) -> int:
        return sum(bucket.count for bucket in self.receipts)

    @property
    def sessions_total(self) -> int:
        return sum(step.total for step in self.steps)

    def verdict_totals(self) -> list[int]:
        return [
            sum(group.count(verdict) for group in self.regions) for verdict, _ in VERDICT_COLUMNS
        ]

    def step_totals(self) -> StepOutcomes:
        total = StepOutcomes(step_code="")
        for step in self.steps:
            total.resolved += step.resolved
            total.not_resolved += step.not_resolved
            total.escalated += step.escalated
            total.helpful_yes += step.helpful_yes
            total.helpful_answered += step.helpful_answered
        return total


def insights_for(*, days: int, now: datetime | None = None, receipts: bool = True) -> Insights:
    """Return every figure of the insights page for the `days` whole days ending today
    (without the delivery receipts unless `receipts`)."""
    period = period_for(days, now=now or timezone.now())
    return Insights(
        period=period,
        locks=locks_per_day(period),
        regions=verdicts_by_region(period),
        steps=step_outcomes(period),
        incidents=incidents_in(period),
        receipts=receipts_by_region(period) if receipts else [],
    )
