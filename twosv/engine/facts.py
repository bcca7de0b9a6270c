"""What the engine reads and what it returns: plain frozen dataclasses, no behaviour to speak of.

The caller (twosv.selectors) builds `Facts` from the database; `decide` answers a `Decision`.
`Situation` is the engine's own view of the facts, shared by the predicates and the wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from twosv.vocabulary import (
    ADVISORY_SEVERITIES,
    CODE_RECEIVING_KINDS,
    AdvisoryCode,
    AdvisorySeverity,
    MethodRole,
    RuleCode,
    StepCode,
    Verdict,
)

# Failed phone checks in a row after which the caller's phone is taken to have another number.
MISSES_FOR_ANOTHER_NUMBER = 2

# A succeeded lookup with any other verdict can't be read: the engine treats it as missing.
KNOWN_VERDICTS = frozenset(Verdict)

# --- Input ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodFacts:
    """One 2SV method as the engine sees it at `Facts.now`."""

    method_id: str
    kind: str  # a vocabulary.MethodKind value
    role: str  # a vocabulary.MethodRole value
    active: bool  # False when removed
    locked: bool  # a lock is active now
    seconds_remaining: int | None  # for a locked method
    locked_until: datetime | None
    resend_count: int  # counted resends inside the window now
    has_phone: bool
    phone_region: str | None  # ISO region of the number, e.g. "IN"
    visible_in_crm: bool
    enrolled_at: datetime
    # When the number on file last changed after enrolment (a phone_number_changed event).
    phone_changed_at: datetime | None = None
    # The verdict of this method's latest delivery lookup, when it has one.
    latest_verdict: str | None = None

    @property
    def receives_codes(self) -> bool:
        """Return whether codes travel to this method (SMS, voice call, email)."""
        return self.kind in CODE_RECEIVING_KINDS


@dataclass(frozen=True)
class LookupFacts:
    """A delivery lookup ("check with ATS") for one method."""

    lookup_id: str
    method_id: str
    status: str  # a vocabulary.LookupStatus value
    verdict: str | None  # a vocabulary.Verdict value once succeeded
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Answers:
    """The agent's answers in a troubleshooting session; None means unknown.

    `phone_number_matches` is the session's latest phone verification and
    `phone_check_misses` the number of failed verifications in a row (a match clears it).
    """

    has_device_access: bool | None = None
    has_backup_device_access: bool | None = None
    phone_number_matches: bool | None = None
    phone_number_changed: bool | None = None
    phone_check_misses: int = 0


@dataclass(frozen=True)
class Facts:
    """Everything the engine decides on."""

    now: datetime
    customer_id: str
    methods: tuple[MethodFacts, ...]
    answers: Answers = Answers()
    session_id: str | None = None  # None for the bare state endpoint
    session_method_id: str | None = None
    latest_lookup: LookupFacts | None = None  # the latest lookup for P
    lock_threshold: int = 200
    lookup_freshness: timedelta = timedelta(minutes=10)
    sender_numbers: tuple[str, ...] = ("+1 480-360-5516",)
    regional_advisories: Mapping[str, str] = field(default_factory=dict)
    # A number on file changed less than this long ago is `number_recently_changed`.
    recent_number_change: timedelta = timedelta(days=30)
    # Regions with an open (or confirmed) delivery incident, each with the time it opened.
    delivery_incidents: Mapping[str, datetime] = field(default_factory=dict)
    cancel_2sv_url: str = ""


# --- Output --------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question the agent asks; `field` names the answer it fills in."""

    field: str  # has_device_access | has_backup_device_access | phone_number_changed
    prompt: str


@dataclass(frozen=True)
class Action:
    """Something the panel can do for the step (HTTP method and relative URL)."""

    method: str
    url: str
    label: str


@dataclass(frozen=True)
class Step:
    """The recommended next step."""

    code: StepCode
    title: str
    instructions: str
    reason: str
    rule: RuleCode
    article_section: str | None = None
    question: Question | None = None
    action: Action | None = None
    alternatives: tuple[StepCode, ...] = ()
    seconds_remaining: int | None = None
    method_id: str | None = None


@dataclass(frozen=True)
class Advisory:
    """A hint shown beside any step."""

    code: AdvisoryCode
    message: str
    method_id: str | None = None
    locked_until: datetime | None = None  # method_locked: when the lock ends
    region: str | None = None  # delivery_incident: the region it is about
    since: datetime | None = None  # delivery_incident: when it opened

    @property
    def severity(self) -> AdvisorySeverity:
        """Return `warning` or `info` (docs/SPEC.md section 4): warnings are listed first."""
        return ADVISORY_SEVERITIES[self.code]


@dataclass(frozen=True)
class Decision:
    """The step, the advisories, P and whether "No code?" shows in the login window."""

    step: Step
    advisories: tuple[Advisory, ...]
    method_id: str | None
    no_code_link_visible: bool


# --- The situation the rules read ----------------------------------------------------


def subject_method(facts: Facts) -> MethodFacts | None:
    """Return P, the method the customer is trying to use.

    The session's method if it names an active method, else the active primary method,
    else the oldest active method; None when no method is active.
    """
    active = [m for m in facts.methods if m.active]
    if facts.session_method_id is not None:
        for method in active:
            if method.method_id == facts.session_method_id:
                return method
    for method in active:
        if method.role == MethodRole.PRIMARY:
            return method
    return min(active, key=lambda m: m.enrolled_at, default=None)


@dataclass(frozen=True)
class Situation:
    """The facts with P, its first usable backup and P's latest lookup picked out."""

    facts: Facts
    p: MethodFacts | None
    backup: MethodFacts | None  # the first usable backup
    lookup: LookupFacts | None  # the latest lookup, when it is for P

    @property
    def method(self) -> MethodFacts:
        """Return P; only for rules after R1, which all run with an active method."""
        assert self.p is not None
        return self.p

    @property
    def answers(self) -> Answers:
        """Return the agent's answers."""
        return self.facts.answers

    @property
    def lost_device(self) -> bool:
        """Return whether the customer can't use P's device (R6).

        No access to the device, a phone whose number changed since 2SV was set up, or the
        number checked wrong twice in a row: one miss alone may be a misread digit (R6a).
        """
        answers = self.answers
        return (
            answers.has_device_access is False
            or answers.phone_number_changed is True
            or answers.phone_check_misses >= MISSES_FOR_ANOTHER_NUMBER
        )


def situation(facts: Facts) -> Situation:
    """Return the situation the rules read for `facts`."""
    p = subject_method(facts)
    backup = next(
        (
            m
            for m in facts.methods
            if m.active
            and m.role == MethodRole.BACKUP
            and not m.locked
            and (p is None or m.method_id != p.method_id)
        ),
        None,
    )
    lookup = facts.latest_lookup
    if lookup is not None and (p is None or lookup.method_id != p.method_id):
        lookup = None
    return Situation(facts=facts, p=p, backup=backup, lookup=lookup)
