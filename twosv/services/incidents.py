"""Delivery incidents (docs/SPEC.md §11): detect a region's outage from its delivery attempts.

Every minute (beat, or the embedded default's scheduler) `incidents_detect` reads, per phone
region, the messages sent in the last TWOSV_INCIDENT_WINDOW and the region's failed share over
the TWOSV_INCIDENT_BASELINE before it, in ONE aggregate query whatever the data size (an index
on (region, sent_at) hands the rows over in region order; docs/performance.md). A region is
*alarming* when, in the window:

- at least TWOSV_INCIDENT_MIN_FAILURES messages failed (status failed or undelivered),
- the failed share is at least TWOSV_INCIDENT_MIN_SHARE (30%), and
- the share is at least TWOSV_INCIDENT_BASELINE_FACTOR (3) times the baseline share. A region
  with no failure (or no message) in the baseline has a baseline of 0: any share that clears
  the 30% qualifies.

An alarming region without an incident opens one, unless an admin dismissed one there less
than TWOSV_INCIDENT_QUIET_PERIOD ago. An open or confirmed incident takes each run's figures;
once its region has been below the thresholds for TWOSV_INCIDENT_RESOLVE_AFTER, it resolves
itself. Admins confirm, dismiss or resolve it (audited).

A message is counted once in the window however many lookups stored it (a lookup stores the
number's messages of the last 24 h, so looking a number up again stores them again): by its
`external_id`. The baseline is a share, which duplicates leave as it is, so it counts rows:
counting distinct ids over 7 days would sort every one of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Aggregate, Count, F, Q, TextField, Value
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.models import DeliveryAttempt, Incident, IncidentStatus
from twosv.selectors import advisory_settings_forget
from twosv.vocabulary import FAILED_ATS_STATUSES, INCIDENT_ACTIVE_STATUSES

incident_log = logging.getLogger("twosv.incidents")

# How many error codes an incident keeps, most frequent first.
TOP_ERROR_CODES = 5
_ACTIVE = sorted(INCIDENT_ACTIVE_STATUSES)
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class IncidentThresholds:
    """When a region's window opens an incident, and how incidents end (settings)."""

    window: timedelta
    baseline_period: timedelta
    min_failures: int
    min_share: float
    baseline_factor: float
    resolve_after: timedelta
    quiet_period: timedelta

    @classmethod
    def from_settings(cls) -> IncidentThresholds:
        return cls(
            window=settings.TWOSV_INCIDENT_WINDOW,
            baseline_period=settings.TWOSV_INCIDENT_BASELINE,
            min_failures=settings.TWOSV_INCIDENT_MIN_FAILURES,
            min_share=settings.TWOSV_INCIDENT_MIN_SHARE,
            baseline_factor=settings.TWOSV_INCIDENT_BASELINE_FACTOR,
            resolve_after=settings.TWOSV_INCIDENT_RESOLVE_AFTER,
            quiet_period=settings.TWOSV_INCIDENT_QUIET_PERIOD,
        )


@dataclass(frozen=True)
class RegionFigures:
    """One region's messages in the window and its baseline before it."""

    region: str
    attempts: int = 0
    failures: int = 0
    baseline_attempts: int = 0
    baseline_failures: int = 0
    top_error_codes: tuple[tuple[int | None, int], ...] = ()

    @property
    def share(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    @property
    def baseline(self) -> float:
        return self.baseline_failures / self.baseline_attempts if self.baseline_attempts else 0.0

    def alarming(self, thresholds: IncidentThresholds) -> bool:
        """Return whether the window clears every threshold (docs/SPEC.md §11)."""
        # A hair of tolerance: 30% of 70 is 21 failures, whatever 0.1 * 3 is in binary.
        return (
            self.failures >= thresholds.min_failures
            and self.share >= thresholds.min_share - _TOLERANCE
            and self.share >= thresholds.baseline_factor * self.baseline - _TOLERANCE
        )

    def incident_fields(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "failures": self.failures,
            "share": round(self.share, 4),
            "baseline": round(self.baseline, 4),
            "top_error_codes": [
                {"code": code, "count": count} for code, count in self.top_error_codes
            ],
        }


class _FailedMessageCodes(Aggregate):
    """Each failed message once, as "external_id/error_code", comma-separated.

    STRING_AGG on PostgreSQL, GROUP_CONCAT on SQLite; DISTINCT, so a message stored by several
    lookups counts once for its code too.
    """

    function = "STRING_AGG"
    name = "FailedMessageCodes"
    template = "%(function)s(DISTINCT %(expressions)s, ',')"
    arg_joiner = " || '/' || "
    output_field = TextField()

    def __init__(self, **extra: Any) -> None:
        super().__init__(
            F("external_id"), Coalesce(Cast("error_code", TextField()), Value("")), **extra
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        clone = self.copy()
        clone.function = "GROUP_CONCAT"
        clone.template = "%(function)s(DISTINCT %(expressions)s)"
        return clone.as_sql(compiler, connection, **extra)


def _top_codes(joined: str | None) -> tuple[tuple[int | None, int], ...]:
    counts: Counter[int | None] = Counter()
    for item in (joined or "").split(","):
        if "/" not in item:
            continue
        code = item.rsplit("/", 1)[1]
        counts[int(code) if code.isdigit() else None] += 1
    return tuple(counts.most_common(TOP_ERROR_CODES))


def region_figures(*, now: datetime, thresholds: IncidentThresholds) -> dict[str, RegionFigures]:
    """Return every region's figures at `now`, in one aggregate query.

    Only regions with a message in the window or the baseline are listed; attempts without a
    region (emails, numbers of no known region) are left out.
    """
    window_start = now - thresholds.window
    in_window = Q(sent_at__gte=window_start)
    in_baseline = Q(sent_at__lt=window_start)
    failed = Q(status__in=sorted(FAILED_ATS_STATUSES))
    rows = (
        DeliveryAttempt.objects.filter(
            sent_at__gte=window_start - thresholds.baseline_period, sent_at__lte=now
        )
        .exclude(region="")
        .values("region")
        .annotate(
            attempts=Count("external_id", distinct=True, filter=in_window),
            failures=Count("external_id", distinct=True, filter=in_window & failed),
            baseline_attempts=Count("sent_at", filter=in_baseline),
            baseline_failures=Count("sent_at", filter=in_baseline & failed),
            codes=_FailedMessageCodes(filter=in_window & failed),
        )
        .order_by("region")
    )
    return {
        row["region"]: RegionFigures(
            region=row["region"],
            attempts=row["attempts"],
            failures=row["failures"],
            baseline_attempts=row["baseline_attempts"],
            baseline_failures=row["baseline_failures"],
            top_error_codes=_top_codes(row["codes"]),
        )
        for row in rows
    }


@dataclass
class DetectionReport:
    """What one detection run did, by region."""

    opened: list[str]
    updated: list[str]
    resolved: list[str]
    quiet: list[str]  # alarming, but an admin dismissed an incident there recently


def incidents_detect(
    *, now: datetime | None = None, thresholds: IncidentThresholds | None = None
) -> DetectionReport:
    """Open, update and resolve the delivery incidents from the attempts at `now`.

    Two reads whatever the data (the aggregate, and the incidents open or quiet), then one
    write per incident that changes. Safe to run twice at once: a region holds at most one
    open or confirmed incident (a unique constraint), and each update is conditional on the
    incident still being open or confirmed, so an admin's dismissal in between stands.
    """
    now = now or timezone.now()
    thresholds = thresholds or IncidentThresholds.from_settings()
    figures = region_figures(now=now, thresholds=thresholds)
    known = list(
        Incident.objects.filter(
            Q(status__in=_ACTIVE) | Q(status=IncidentStatus.DISMISSED, quiet_until__gt=now)
        ).order_by("opened_at")
    )
    active = {incident.region: incident for incident in known if incident.active}
    quiet = {incident.region for incident in known if not incident.active}
    report = DetectionReport(opened=[], updated=[], resolved=[], quiet=[])

    for region, incident in active.items():
        found = figures.get(region, RegionFigures(region=region))
        fields: dict[str, Any] = {**found.incident_fields(), "updated_at": now}
        if found.alarming(thresholds):
            fields["below_since"] = None
        else:
            below_since = incident.below_since or now
            fields["below_since"] = below_since
            if now - below_since >= thresholds.resolve_after:
                fields.update(
                    status=IncidentStatus.RESOLVED,
                    resolved_at=now,
                    reason=(
                        f"Resolved by itself: below the thresholds since "
                        f"{below_since:%Y-%m-%d %H:%M} UTC."
                    ),
                )
        changed = Incident.objects.filter(pk=incident.pk, status__in=_ACTIVE).update(**fields)
        if not changed:
            continue  # an admin closed it meanwhile
        if fields.get("status") == IncidentStatus.RESOLVED:
            report.resolved.append(region)
            _audit_system(AuditAction.INCIDENT_AUTO_RESOLVE, incident, "resolved", found)
        else:
            report.updated.append(region)

    for region, found in figures.items():
        if region in active or not found.alarming(thresholds):
            continue
        if region in quiet:
            report.quiet.append(region)
            continue
        try:
            with transaction.atomic():
                incident = Incident.objects.create(
                    region=region,
                    status=IncidentStatus.OPEN,
                    opened_at=now,
                    updated_at=now,
                    **found.incident_fields(),
                )
        except IntegrityError:
            continue  # a concurrent run opened it
        report.opened.append(region)
        _audit_system(AuditAction.INCIDENT_OPEN, incident, "opened", found)

    if report.opened or report.resolved:
        # The state read caches the incident regions with the advisories (twosv/selectors.py).
        advisory_settings_forget()
        incident_log.warning(
            "Delivery incidents: opened %s, resolved %s.",
            ", ".join(report.opened) or "none",
            ", ".join(report.resolved) or "none",
            extra={"opened": report.opened, "resolved": report.resolved},
        )
    return report


def _audit_system(
    action: AuditAction, incident: Incident, result: str, found: RegionFigures
) -> None:
    audit_record(
        actor=None,
        action=action,
        result=result,
        obj=incident,
        details={"region": incident.region, **found.incident_fields()},
    )


# ---------------------------------------------------------------------------------------------
# Admin decisions: confirm, dismiss, resolve
# ---------------------------------------------------------------------------------------------


def _decide(
    *,
    incident: Incident,
    actor: User,
    action: AuditAction,
    reason: str,
    context: AuditContext,
    changes: dict[str, Any],
) -> bool:
    """Apply `changes` to the incident if it is still open or confirmed; audit either way."""
    with transaction.atomic():
        current = Incident.objects.select_for_update().filter(pk=incident.pk).first()
        applied = current is not None and current.active
        if current is not None and applied:
            for name, value in changes.items():
                setattr(current, name, value)
            current.save(update_fields=list(changes))
            for name, value in changes.items():
                setattr(incident, name, value)
        audit_record(
            actor=actor,
            action=action,
            result="changed" if applied else "not_active",
            obj=incident,
            details={
                "region": incident.region,
                "status": current.status if current is not None else None,
                "reason": reason,
            },
            context=context,
        )
    if applied and changes.get("status") != IncidentStatus.CONFIRMED:
        advisory_settings_forget()
    return applied


def incident_confirm(
    *, incident: Incident, actor: User, reason: str = "", context: AuditContext = NO_CONTEXT
) -> bool:
    """Mark the incident as real; it stays shown and still resolves itself once over."""
    now = timezone.now()
    changes: dict[str, Any] = {
        "status": IncidentStatus.CONFIRMED,
        "confirmed_at": now,
        "confirmed_by": actor,
    }
    if reason:
        changes["reason"] = reason[:500]
    return _decide(
        incident=incident,
        actor=actor,
        action=AuditAction.INCIDENT_CONFIRM,
        reason=reason,
        context=context,
        changes=changes,
    )


def incident_dismiss(
    *, incident: Incident, actor: User, reason: str, context: AuditContext = NO_CONTEXT
) -> bool:
    """Close the incident as a false alarm: none opens for its region for the quiet period."""
    now = timezone.now()
    quiet_period: timedelta = settings.TWOSV_INCIDENT_QUIET_PERIOD
    return _decide(
        incident=incident,
        actor=actor,
        action=AuditAction.INCIDENT_DISMISS,
        reason=reason,
        context=context,
        changes={
            "status": IncidentStatus.DISMISSED,
            "dismissed_at": now,
            "dismissed_by": actor,
            "reason": reason[:500],
            "quiet_until": now + quiet_period,
        },
    )


def incident_resolve(
    *, incident: Incident, actor: User, reason: str = "", context: AuditContext = NO_CONTEXT
) -> bool:
    """Close the incident as over. If its region is still alarming, the next run opens another."""
    now = timezone.now()
    return _decide(
        incident=incident,
        actor=actor,
        action=AuditAction.INCIDENT_RESOLVE,
        reason=reason,
        context=context,
        changes={
            "status": IncidentStatus.RESOLVED,
            "resolved_at": now,
            "resolved_by": actor,
            "reason": reason[:500],
        },
    )
