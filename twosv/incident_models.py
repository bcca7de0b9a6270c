"""Delivery incidents (docs/SPEC.md §11): a region's failed share far above its own baseline.

Re-exported by twosv.models (import from there). This module imports nothing of twosv.models,
so the two can't form an import cycle.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from twosv import vocabulary


class IncidentStatus(models.TextChoices):
    OPEN = vocabulary.IncidentStatus.OPEN, _("Open")
    CONFIRMED = vocabulary.IncidentStatus.CONFIRMED, _("Confirmed")
    DISMISSED = vocabulary.IncidentStatus.DISMISSED, _("Dismissed")
    RESOLVED = vocabulary.IncidentStatus.RESOLVED, _("Resolved")


class Incident(models.Model):
    """A delivery incident: one region's failed share far above its own baseline (SPEC §11).

    Opened, updated and resolved by the detection task (twosv/services/incidents.py); admins
    confirm, dismiss or resolve it. The figures are those of the latest detection run.
    """

    region = models.CharField(max_length=2, help_text=_("ISO 3166-1 alpha-2, e.g. IN"))
    status = models.CharField(
        max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN
    )
    attempts = models.PositiveIntegerField(help_text=_("Messages in the detection window"))
    failures = models.PositiveIntegerField(help_text=_("Of which failed or undelivered"))
    share = models.FloatField(help_text=_("failures / attempts, 0 to 1"))
    baseline = models.FloatField(help_text=_("The failed share over the previous 7 days"))
    top_error_codes = models.JSONField(default=list, blank=True)
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    # Since when the region has been below the opening thresholds (None while above).
    below_since = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    # Dismissed: no new incident opens for the region before this time.
    quiet_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        permissions = [
            ("manage_incident", "Can confirm, dismiss and resolve delivery incidents"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["region"],
                condition=Q(status__in=[IncidentStatus.OPEN, IncidentStatus.CONFIRMED]),
                name="incident_one_active_per_region",
            ),
            models.CheckConstraint(
                condition=Q(status__in=IncidentStatus.values), name="incident_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(region__regex=r"^[A-Z]{2}$"), name="incident_region_iso"
            ),
        ]
        indexes = [models.Index(fields=["status", "region"], name="incident_status_idx")]

    def __str__(self) -> str:
        return f"{self.region} {self.status} since {self.opened_at:%Y-%m-%d %H:%M}"

    @property
    def active(self) -> bool:
        return self.status in vocabulary.INCIDENT_ACTIVE_STATUSES
