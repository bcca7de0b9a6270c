"""The 2SV domain: customers, their methods, the event log and what is derived from it."""

import uuid

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from twosv import vocabulary

# Re-exported: services and the API have always read the kind sets from here.
from twosv.vocabulary import CODE_RECEIVING_KINDS as CODE_RECEIVING_KINDS
from twosv.vocabulary import PHONE_KINDS as PHONE_KINDS

customer_id_validator = RegexValidator(
    r"^[A-Za-z0-9._:-]{1,64}\Z", _("1 to 64 characters of A-Z, a-z, 0-9 and . _ : -")
)


def validate_e164(value: str) -> None:
    """Refuse anything that is not a valid phone number written in E.164 (+ and digits)."""
    if not value.startswith("+") or not value[1:].isdigit():
        raise ValidationError(
            _("Enter the number in E.164 format, e.g. +14155550100."), code="e164"
        )
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(_("Not a phone number."), code="invalid_phone") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(_("Not a valid phone number."), code="invalid_phone")


class MethodKind(models.TextChoices):
    SMS = vocabulary.MethodKind.SMS, _("Text message (SMS)")
    VOICE = vocabulary.MethodKind.VOICE, _("Voice call")
    EMAIL = vocabulary.MethodKind.EMAIL, _("Email")
    AUTHENTICATOR_APP = vocabulary.MethodKind.AUTHENTICATOR_APP, _("Authenticator app")
    SECURITY_KEY = vocabulary.MethodKind.SECURITY_KEY, _("Security key")


class MethodRole(models.TextChoices):
    PRIMARY = vocabulary.MethodRole.PRIMARY, _("Primary")
    BACKUP = vocabulary.MethodRole.BACKUP, _("Backup")


class EventType(models.TextChoices):
    METHOD_ENROLLED = vocabulary.EventType.METHOD_ENROLLED, _("Method enrolled")
    METHOD_REMOVED = vocabulary.EventType.METHOD_REMOVED, _("Method removed")
    PHONE_NUMBER_CHANGED = vocabulary.EventType.PHONE_NUMBER_CHANGED, _("Phone number changed")
    CODE_SENT = vocabulary.EventType.CODE_SENT, _("Code sent")
    CODE_RESEND_REQUESTED = vocabulary.EventType.CODE_RESEND_REQUESTED, _("Code resend requested")
    CODE_VERIFIED = vocabulary.EventType.CODE_VERIFIED, _("Code verified")
    CODE_REJECTED = vocabulary.EventType.CODE_REJECTED, _("Code rejected")
    LOCK_LIFTED = vocabulary.EventType.LOCK_LIFTED, _("Lock lifted")


class EventOutcome(models.TextChoices):
    RECORDED = vocabulary.EventOutcome.RECORDED, _("Recorded")
    COUNTED = vocabulary.EventOutcome.COUNTED, _("Counted toward the lock")
    BLOCKED = vocabulary.EventOutcome.BLOCKED, _("Blocked (method locked)")
    LOCKED = vocabulary.EventOutcome.LOCKED, _("Locked the method")
    RESET = vocabulary.EventOutcome.RESET, _("Reset the resend count")
    LIFTED = vocabulary.EventOutcome.LIFTED, _("Lifted the lock")


class Customer(models.Model):
    customer_id = models.CharField(max_length=64, unique=True, validators=[customer_id_validator])
    display_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(customer_id__regex=r"^[A-Za-z0-9._:-]{1,64}$"),
                name="customer_id_charset",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.customer_id


class Method(models.Model):
    """A 2SV method with the lock projection folded from its events.

    ``resend_times``, ``locked_at``, ``locked_until``, ``lock_lifted_at`` and the last folded
    event key are a projection of the event log (see twosv/policy.py); only services write them.
    """

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="methods")
    method_id = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=24, choices=MethodKind.choices)
    role = models.CharField(max_length=16, choices=MethodRole.choices)
    phone_number = models.CharField(max_length=20, blank=True, validators=[validate_e164])
    email = models.EmailField(blank=True)
    label = models.CharField(max_length=100, blank=True)
    visible_in_crm = models.BooleanField()
    enrolled_at = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)
    # When the number on file last changed (at enrolment, then each phone_number_changed that
    # brought another number): what the "number recently changed" advisory reads.
    phone_changed_at = models.DateTimeField(null=True, blank=True)
    # When the latest phone_number_changed occurred, even one that repeated the number: the
    # last writer, so a late, older event can't overwrite a newer one. Null until the first
    # (phone_changed_at stands in).
    phone_written_at = models.DateTimeField(null=True, blank=True)

    # Lock projection.
    resend_times = models.JSONField(default=list, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    lock_lifted_at = models.DateTimeField(null=True, blank=True)
    # The "resend code" requests refused while the latest lock held (policy.Lock.blocked).
    lock_blocked = models.PositiveIntegerField(default=0, db_default=0)
    last_event_at = models.DateTimeField(null=True, blank=True)
    last_event_id = models.CharField(max_length=128, blank=True)
    # Events folded since the latest MethodCheckpoint: one is written every
    # TWOSV_CHECKPOINT_EVERY, so a late event re-folds at most that many plus those after it.
    checkpoint_lag = models.PositiveIntegerField(default=0)
    # Retention: the events before this time were purged (their effect is in a checkpoint);
    # an event that occurred before it is refused (event_too_old).
    purged_before = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Not by customer: that would join the customer table into every methods query.
        ordering = ["enrolled_at", "id"]
        permissions = [("lift_lock", "Can lift a 2SV method lock")]
        constraints = [
            models.CheckConstraint(
                # A removed method's number is erased once it is older than the retention.
                condition=~Q(kind__in=[MethodKind.SMS, MethodKind.VOICE])
                | ~Q(phone_number="")
                | Q(removed_at__isnull=False),
                name="method_phone_required_for_sms_voice",
            ),
            models.CheckConstraint(
                condition=Q(phone_number="") | Q(phone_number__regex=r"^\+[1-9][0-9]{6,14}$"),
                name="method_phone_e164",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=MethodKind.values), name="method_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(role__in=MethodRole.values), name="method_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(locked_until__isnull=True) | Q(locked_until__gt=models.F("locked_at")),
                name="method_lock_ends_after_start",
            ),
        ]
        indexes = [
            models.Index(fields=["locked_until"], name="method_locked_until_idx"),
            # A delivery receipt finds its method by the number it went to: one per callback.
            models.Index(
                fields=["phone_number"],
                name="method_active_phone_idx",
                condition=Q(removed_at__isnull=True) & ~Q(phone_number=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.role}) {self.method_id}"

    @property
    def receives_codes(self) -> bool:
        return self.kind in CODE_RECEIVING_KINDS

    @property
    def is_active(self) -> bool:
        return self.removed_at is None

    def clean(self) -> None:
        if self.kind in PHONE_KINDS and not self.phone_number and self.removed_at is None:
            raise ValidationError({"phone_number": _("SMS and voice methods need a phone number.")})


class MethodCheckpoint(models.Model):
    """A method's projection after folding its events up to and including (event_at, event_id).

    Written as the fold goes (every TWOSV_CHECKPOINT_EVERY events) and at the purge horizon: a
    late event re-folds from the latest checkpoint before it, reading only the events after.
    """

    method = models.ForeignKey(Method, on_delete=models.CASCADE, related_name="checkpoints")
    event_at = models.DateTimeField()
    event_id = models.CharField(max_length=128)
    resend_times = models.JSONField(default=list, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    lock_lifted_at = models.DateTimeField(null=True, blank=True)
    lock_blocked = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        ordering = ["method_id", "event_at", "event_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["method", "event_at", "event_id"], name="checkpoint_method_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method_id} at {self.event_at:%Y-%m-%d %H:%M:%S} {self.event_id}"


class Event(models.Model):
    """One 2SV event from the identity system (or an admin's lock lift): the source of truth."""

    event_id = models.CharField(max_length=128, unique=True)
    type = models.CharField(max_length=32, choices=EventType.choices)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="events")
    # No index of its own: event_method_order_idx starts with it (migration 0012).
    method = models.ForeignKey(
        Method,
        on_delete=models.PROTECT,
        related_name="events",
        null=True,
        blank=True,
        db_index=False,
    )
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    data = models.JSONField(default=dict, blank=True)
    # What the fold made of it; rewritten when a late event re-folds the method.
    outcome = models.CharField(
        max_length=16, choices=EventOutcome.choices, default=EventOutcome.RECORDED
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["occurred_at", "event_id"]
        constraints = [
            models.CheckConstraint(condition=Q(type__in=EventType.values), name="event_type_valid"),
        ]
        indexes = [
            models.Index(
                fields=["method", "occurred_at", "event_id"], name="event_method_order_idx"
            ),
            models.Index(fields=["outcome", "occurred_at"], name="event_outcome_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class LookupStatus(models.TextChoices):
    PENDING = vocabulary.LookupStatus.PENDING, _("Pending")
    RUNNING = vocabulary.LookupStatus.RUNNING, _("Running")
    SUCCEEDED = vocabulary.LookupStatus.SUCCEEDED, _("Succeeded")
    FAILED = vocabulary.LookupStatus.FAILED, _("Failed")


class Verdict(models.TextChoices):
    NOT_SENT = vocabulary.Verdict.NOT_SENT, _("Not sent")
    DELIVERED = vocabulary.Verdict.DELIVERED, _("Delivered")
    RECIPIENT_BLOCKED = vocabulary.Verdict.RECIPIENT_BLOCKED, _("Recipient blocked the sender")
    CARRIER_FILTERED = vocabulary.Verdict.CARRIER_FILTERED, _("Carrier filtered")
    UNREACHABLE = vocabulary.Verdict.UNREACHABLE, _("Handset unreachable")
    REGIONAL_PROVIDER_ISSUE = (
        vocabulary.Verdict.REGIONAL_PROVIDER_ISSUE,
        _("Regional provider issue"),
    )
    PROVIDER_ERROR = vocabulary.Verdict.PROVIDER_ERROR, _("Provider error")


class DeliveryLookup(models.Model):
    """One "check with ATS" for a method; the row is also its own outbox entry."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="lookups")
    method = models.ForeignKey(Method, on_delete=models.CASCADE, related_name="lookups")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=LookupStatus.choices, default=LookupStatus.PENDING
    )
    verdict = models.CharField(max_length=32, choices=Verdict.choices, blank=True)
    period_start = models.DateTimeField()
    tries = models.PositiveSmallIntegerField(default=0)
    failure_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, blank=True)  # receipts | api | local | http

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one lookup per method may be in flight.
            models.UniqueConstraint(
                fields=["method"],
                condition=Q(status__in=[LookupStatus.PENDING, LookupStatus.RUNNING]),
                name="lookup_one_in_flight_per_method",
            ),
            models.CheckConstraint(
                condition=Q(status__in=LookupStatus.values), name="lookup_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["method", "-created_at"], name="lookup_method_latest_idx"),
            models.Index(fields=["status", "created_at"], name="lookup_status_idx"),
        ]

    def __str__(self) -> str:
        return f"Lookup {self.id} ({self.status})"


class DeliveryAttempt(models.Model):
    """A message the ATS reports for the lookup's number or address."""

    lookup = models.ForeignKey(DeliveryLookup, on_delete=models.CASCADE, related_name="attempts")
    external_id = models.CharField(max_length=128)
    sent_at = models.DateTimeField()
    updated_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16)
    error_code = models.IntegerField(null=True, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    sender = models.CharField(max_length=64, blank=True)
    # The ISO region of the number the message went to ("IN"; "" for an email or an unknown
    # number): what delivery incidents are detected by (twosv/services/incidents.py).
    region = models.CharField(max_length=2, blank=True, default="")

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["lookup", "external_id"], name="attempt_unique_per_lookup"
            ),
        ]
        indexes = [
            # Incident detection's one aggregate: rows in region order for a range of sent_at,
            # read from the index alone on PostgreSQL (docs/performance.md).
            models.Index(
                fields=["region", "sent_at"],
                include=["status", "error_code", "external_id"],
                condition=~Q(region=""),
                name="attempt_region_sent_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} {self.sent_at:%Y-%m-%d %H:%M}"


class LocalDeliveryRecord(models.Model):
    """A message record of the local ATS backend (demo and development), editable in the admin."""

    external_id = models.CharField(max_length=128, unique=True, default=uuid.uuid4)
    to = models.CharField(max_length=254, db_index=True, help_text=_("E.164 number or email"))
    sender = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=64, default="twilio")
    status = models.CharField(
        max_length=16,
        choices=[(status.value, status.value) for status in vocabulary.AtsStatus],
    )
    error_code = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("local ATS delivery record")

    def __str__(self) -> str:
        return f"{self.status} {self.created_at:%Y-%m-%d %H:%M}"


class SenderNumber(models.Model):
    """A number our codes are sent from: shown in the carrier hint."""

    phone_number = models.CharField(max_length=20, unique=True, validators=[validate_e164])
    label = models.CharField(max_length=100, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["phone_number"]

    def __str__(self) -> str:
        return self.phone_number


class RegionalAdvisory(models.Model):
    """A known provider problem reaching numbers of one region (e.g. India)."""

    region = models.CharField(max_length=2, help_text=_("ISO 3166-1 alpha-2, e.g. IN"))
    message = models.CharField(max_length=500)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["region"]
        verbose_name_plural = _("regional advisories")
        constraints = [
            models.CheckConstraint(
                condition=Q(region__regex=r"^[A-Z]{2}$"), name="advisory_region_iso"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.region}: {self.message[:40]}"


class SessionOutcome(models.TextChoices):
    RESOLVED = vocabulary.SessionOutcome.RESOLVED, _("Resolved")
    NOT_RESOLVED = vocabulary.SessionOutcome.NOT_RESOLVED, _("Not resolved")
    ESCALATED = vocabulary.SessionOutcome.ESCALATED, _("Escalated")


class TroubleshootingSession(models.Model):
    """An agent working through the article with a customer on the line."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="sessions")
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="twosv_sessions"
    )
    method = models.ForeignKey(
        Method, on_delete=models.SET_NULL, null=True, blank=True, related_name="sessions"
    )
    has_device_access = models.BooleanField(null=True, blank=True)
    has_backup_device_access = models.BooleanField(null=True, blank=True)
    # Has the number of the customer's phone changed since 2SV was set up?
    phone_number_changed = models.BooleanField(null=True, blank=True)
    # The latest phone verification, and the failed ones in a row (a match clears them).
    phone_number_matches = models.BooleanField(null=True, blank=True)
    phone_check_misses = models.PositiveSmallIntegerField(default=0, db_default=0)
    phone_verify_tries = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=SessionOutcome.choices, blank=True)
    helpful = models.BooleanField(null=True, blank=True)
    comment = models.TextField(blank=True, max_length=2000)
    # The step shown when the session closed: what "helpful" is about.
    final_step_code = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(closed_at__isnull=True) | ~Q(outcome=""),
                name="session_closed_has_outcome",
            ),
        ]

    def __str__(self) -> str:
        return f"Session {self.id}"


class AuditEntry(models.Model):
    """Who did what to which customer, when, and with what result. Append-only."""

    created_at = models.DateTimeField(auto_now_add=True)
    # No database constraint: every agent read writes a row, and the foreign-key check locked
    # the agent's user row (FOR KEY SHARE) in each of those transactions, which cost concurrent
    # reads by one agent more than the insert itself (docs/performance.md). Deleting a
    # user also leaves their entries as they were: actor_username keeps the name.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    customer_ref = models.CharField(max_length=64, blank=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    result = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = _("audit entries")
        # The questions asked of the trail, newest first: everything, one customer's, one
        # action's. Only these: each index is paid for by every audited read.
        indexes = [
            models.Index(fields=["-created_at"], name="audit_newest_idx"),
            models.Index(fields=["customer_ref", "-created_at"], name="audit_customer_idx"),
            models.Index(fields=["action", "-created_at"], name="audit_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username} {self.action}"


class SpentNonce(models.Model):
    """The nonce of a single-use signed token (a panel link) that was used: it can't be again.

    Kept in the database, not the cache: a link stays single-use and still opens while the
    cache is down. A row is needed only while its token could still verify; rows past
    `expires_at` are deleted as new ones are written.
    """

    nonce = models.CharField(max_length=64, primary_key=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"spent until {self.expires_at:%Y-%m-%d %H:%M:%S}"


class PhoneCheck(models.Model):
    """One phone-number check an agent ran for a customer: what the per-customer limit counts.

    Counted in the database, under the customer's row lock, so the limit holds across sessions,
    agents and processes (a cache can be down, or per process). ``matched`` is None for a number
    that couldn't be parsed: that is a try too. Never the number typed.
    """

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="phone_checks")
    session = models.ForeignKey(
        TroubleshootingSession,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="phone_checks",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    matched = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["customer", "created_at"], name="phone_check_customer_idx"),
        ]

    def __str__(self) -> str:
        result = "invalid" if self.matched is None else ("match" if self.matched else "mismatch")
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {result}"


# Delivery incidents (docs/SPEC.md §11) live in their own module; re-exported here.
from twosv.incident_models import Incident as Incident  # noqa: E402
from twosv.incident_models import IncidentStatus as IncidentStatus  # noqa: E402

# Twilio's delivery receipts (docs/SPEC.md §10) too.
from twosv.receipt_models import DeliveryReceipt as DeliveryReceipt  # noqa: E402
from twosv.receipt_models import TwilioMessage as TwilioMessage  # noqa: E402
