"""The codes every layer shares: one spelling for models, policy, engine, ATS client and API.

Stdlib only, so the pure modules (policy, engine, ats) can use it without Django. The models'
``TextChoices`` take their values from these enums and add the translated labels; a member is a
``str``, so it compares, hashes and serialises exactly like its value.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ADVISORY_ORDER",
    "ADVISORY_SEVERITIES",
    "CODE_RECEIVING_KINDS",
    "FAILED_ATS_STATUSES",
    "FINAL_ATS_STATUSES",
    "FINISHED_LOOKUP_STATUSES",
    "INCIDENT_ACTIVE_STATUSES",
    "IN_FLIGHT_LOOKUP_STATUSES",
    "PHONE_KINDS",
    "PRODUCER_EVENT_TYPES",
    "AdvisoryCode",
    "AdvisorySeverity",
    "AtsStatus",
    "EventOutcome",
    "EventType",
    "IncidentStatus",
    "LookupStatus",
    "MethodKind",
    "MethodRole",
    "RuleCode",
    "SessionOutcome",
    "StepCode",
    "Verdict",
]


# --- Methods ---------------------------------------------------------------------------


class MethodKind(StrEnum):
    """How a 2SV method proves the customer: where the code goes, or what answers instead."""

    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    AUTHENTICATOR_APP = "authenticator_app"
    SECURITY_KEY = "security_key"


# Codes travel to these methods, so the ATS can say what happened to them.
CODE_RECEIVING_KINDS = frozenset({MethodKind.SMS, MethodKind.VOICE, MethodKind.EMAIL})
# These need a phone number.
PHONE_KINDS = frozenset({MethodKind.SMS, MethodKind.VOICE})


class MethodRole(StrEnum):
    """A method's place in the customer's setup."""

    PRIMARY = "primary"
    BACKUP = "backup"


# --- Events ----------------------------------------------------------------------------


class EventType(StrEnum):
    """The event types the identity system and the admin write to a method's log."""

    METHOD_ENROLLED = "method_enrolled"
    METHOD_REMOVED = "method_removed"
    PHONE_NUMBER_CHANGED = "phone_number_changed"
    CODE_SENT = "code_sent"
    CODE_RESEND_REQUESTED = "code_resend_requested"
    CODE_VERIFIED = "code_verified"
    CODE_REJECTED = "code_rejected"
    LOCK_LIFTED = "lock_lifted"


# What a producer may post; a lock lift comes only from an admin, through a service.
PRODUCER_EVENT_TYPES = frozenset(EventType) - {EventType.LOCK_LIFTED}


class EventOutcome(StrEnum):
    """What folding one event did to the method's lock projection."""

    RECORDED = "recorded"
    COUNTED = "counted"
    BLOCKED = "blocked"
    LOCKED = "locked"
    RESET = "reset"
    LIFTED = "lifted"


# --- Delivery lookups ------------------------------------------------------------------


class LookupStatus(StrEnum):
    """Where a delivery lookup ("check with ATS") is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


IN_FLIGHT_LOOKUP_STATUSES = frozenset({LookupStatus.PENDING, LookupStatus.RUNNING})
FINISHED_LOOKUP_STATUSES = frozenset({LookupStatus.SUCCEEDED, LookupStatus.FAILED})


class Verdict(StrEnum):
    """What a succeeded lookup concluded about the latest code sent to a method."""

    NOT_SENT = "not_sent"
    DELIVERED = "delivered"
    RECIPIENT_BLOCKED = "recipient_blocked"
    CARRIER_FILTERED = "carrier_filtered"
    UNREACHABLE = "unreachable"
    REGIONAL_PROVIDER_ISSUE = "regional_provider_issue"
    PROVIDER_ERROR = "provider_error"


class AtsStatus(StrEnum):
    """A message's status as the ATS (Twilio's vocabulary) reports it."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


# A message in one of these has its delivery receipt: its status won't change again.
FINAL_ATS_STATUSES = frozenset({AtsStatus.DELIVERED, AtsStatus.UNDELIVERED, AtsStatus.FAILED})
# A message in one of these did not reach the handset: what delivery incidents count.
FAILED_ATS_STATUSES = frozenset({AtsStatus.UNDELIVERED, AtsStatus.FAILED})


class IncidentStatus(StrEnum):
    """Where a delivery incident (a region's failure share far above its baseline) stands."""

    OPEN = "open"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"
    RESOLVED = "resolved"


# While an incident is in one of these, its region's customers see `delivery_incident`.
INCIDENT_ACTIVE_STATUSES = frozenset({IncidentStatus.OPEN, IncidentStatus.CONFIRMED})


# --- Troubleshooting sessions and the next-step engine ---------------------------------


class SessionOutcome(StrEnum):
    """How the agent closed a troubleshooting session."""

    RESOLVED = "resolved"
    NOT_RESOLVED = "not_resolved"
    ESCALATED = "escalated"


class RuleCode(StrEnum):
    """The rules of docs/SPEC.md section 4, in the order the engine reads them."""

    R1 = "R1"
    R2 = "R2"
    R3 = "R3"
    R4 = "R4"
    R5 = "R5"
    R6 = "R6"
    R6A = "R6a"
    R7 = "R7"
    R8 = "R8"
    R9 = "R9"
    R10 = "R10"
    R11 = "R11"
    R12 = "R12"
    R13 = "R13"
    R14 = "R14"
    R15 = "R15"
    R16 = "R16"


class StepCode(StrEnum):
    """The next steps the engine can recommend (``Step.code``, a session's final step)."""

    NO_2SV_ENROLLED = "no_2sv_enrolled"
    USE_BACKUP_METHOD = "use_backup_method"
    ASK_BACKUP_DEVICE_ACCESS = "ask_backup_device_access"
    WAIT_FOR_LOCK_EXPIRY = "wait_for_lock_expiry"
    ASK_DEVICE_ACCESS = "ask_device_access"
    CANCEL_2SV_NO_DEVICE_ACCESS = "cancel_2sv_no_device_access"
    VERIFY_PHONE_NUMBER = "verify_phone_number"
    RECHECK_PHONE_NUMBER = "recheck_phone_number"
    PROBLEM_LIES_ELSEWHERE = "problem_lies_elsewhere"
    CHECK_ATS_DELIVERY = "check_ats_delivery"
    WAIT_FOR_ATS_LOOKUP = "wait_for_ats_lookup"
    RETRY_ATS_LOOKUP = "retry_ats_lookup"
    ESCALATE_CODES_NOT_SENT = "escalate_codes_not_sent"
    CHECK_CARRIER_BLOCK = "check_carrier_block"
    CHECK_HANDSET_REACHABLE = "check_handset_reachable"
    REGIONAL_PROVIDER_ISSUE = "regional_provider_issue"
    ESCALATE_PROVIDER_ERROR = "escalate_provider_error"


class AdvisoryCode(StrEnum):
    """The hints the engine shows beside any step."""

    BACKUP_HIDDEN = "backup_hidden"
    CARRIER_HINT = "carrier_hint"
    DELIVERY_INCIDENT = "delivery_incident"
    REGIONAL_PROVIDER = "regional_provider"
    APPROACHING_LOCK = "approaching_lock"
    METHOD_LOCKED = "method_locked"
    NUMBER_RECENTLY_CHANGED = "number_recently_changed"


class AdvisorySeverity(StrEnum):
    """How loudly the panel shows an advisory; warnings come first."""

    WARNING = "warning"
    INFO = "info"


# Every advisory's severity, in the order the panel lists them (docs/SPEC.md section 4):
# warnings first, each severity in this order.
ADVISORY_SEVERITIES = {
    AdvisoryCode.APPROACHING_LOCK: AdvisorySeverity.WARNING,
    AdvisoryCode.METHOD_LOCKED: AdvisorySeverity.WARNING,
    AdvisoryCode.NUMBER_RECENTLY_CHANGED: AdvisorySeverity.WARNING,
    AdvisoryCode.DELIVERY_INCIDENT: AdvisorySeverity.WARNING,
    AdvisoryCode.REGIONAL_PROVIDER: AdvisorySeverity.WARNING,
    AdvisoryCode.CARRIER_HINT: AdvisorySeverity.INFO,
    AdvisoryCode.BACKUP_HIDDEN: AdvisorySeverity.INFO,
}
ADVISORY_ORDER = tuple(ADVISORY_SEVERITIES)
