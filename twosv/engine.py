"""The next-step engine: SPEC section 4 as a table read top to bottom.

Pure and stdlib-only. The caller gathers the facts (methods with their lock state and
resend counts, the latest delivery lookup for the method in question, the agent's answers)
and `decide` returns the first matching rule's step plus the advisories shown beside it.

Every text an agent reads is marked with `_` (a no-op, gettext_noop style) so that the API
layer can translate it; format arguments stay outside the marked literal.

Safety: no step tells the agent to reset, remove or replace a method, to read out or ask for
a code, or to confirm a number for the caller. Losing the device always leads to the
Cancel-2SV flow, which this tool links to and never performs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple


def _(message: str) -> str:
    """Mark `message` for translation and return it unchanged."""
    return message


CODE_RECEIVING_KINDS = frozenset({"sms", "voice", "email"})
PHONE_KINDS = frozenset({"sms", "voice"})
FINISHED_LOOKUP_STATUSES = frozenset({"succeeded", "failed"})
KNOWN_VERDICTS = frozenset(
    {
        "not_sent",
        "delivered",
        "recipient_blocked",
        "carrier_filtered",
        "unreachable",
        "regional_provider_issue",
        "provider_error",
    }
)

# The article's situations, as its headings and table rows word them.
SECTION_NOT_RECEIVING = "I'm just not receiving the codes on my smartphone"
SECTION_LOCKED = (
    'I got an error message that says, "To protect your account, we locked this '
    'verification method for 24 hours due to too many code requests."'
)
SECTION_INDIA = "I'm using a phone number based in India and I'm not getting the codes"
SECTION_NO_DEVICE = "I don't have the device I set up for 2SV"
SECTION_BACKUP = "If you set up a backup 2SV method"
SECTION_GENERAL = "General steps for troubleshooting"

_KIND_LABELS: Mapping[str, str] = {
    "sms": _("SMS"),
    "voice": _("voice call"),
    "email": _("email"),
    "authenticator_app": _("authenticator app"),
    "security_key": _("security key"),
}
_ROLE_LABELS: Mapping[str, str] = {"primary": _("primary"), "backup": _("backup")}


# --- Input ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodFacts:
    """One 2SV method as the engine sees it at `Facts.now`."""

    method_id: str
    kind: str  # sms | voice | email | authenticator_app | security_key
    role: str  # primary | backup
    active: bool  # False when removed
    locked: bool  # a lock is active now
    seconds_remaining: int | None  # for a locked method
    locked_until: datetime | None
    resend_count: int  # counted resends inside the window now
    has_phone: bool
    phone_region: str | None  # ISO region of the number, e.g. "IN"
    visible_in_crm: bool
    enrolled_at: datetime

    @property
    def receives_codes(self) -> bool:
        """Return whether codes travel to this method (SMS, voice call, email)."""
        return self.kind in CODE_RECEIVING_KINDS


@dataclass(frozen=True)
class LookupFacts:
    """A delivery lookup ("check with ATS") for one method."""

    lookup_id: str
    method_id: str
    status: str  # pending | running | succeeded | failed
    verdict: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Answers:
    """The agent's answers in a troubleshooting session; None means unknown."""

    has_device_access: bool | None = None
    has_backup_device_access: bool | None = None
    phone_number_matches: bool | None = None


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
    cancel_2sv_url: str = ""


# --- Output --------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question the agent asks; `field` names the answer it fills in."""

    field: str  # has_device_access | has_backup_device_access
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

    code: str
    title: str
    instructions: str
    reason: str
    rule: str
    article_section: str | None = None
    question: Question | None = None
    action: Action | None = None
    alternatives: tuple[str, ...] = ()
    seconds_remaining: int | None = None
    method_id: str | None = None


@dataclass(frozen=True)
class Advisory:
    """A hint shown beside any step."""

    code: str
    message: str
    method_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """The step, the advisories, P and whether "No code?" shows in the login window."""

    step: Step
    advisories: tuple[Advisory, ...]
    method_id: str | None
    no_code_link_visible: bool


# --- The situation the rules read ----------------------------------------------------


def primary_method(facts: Facts) -> MethodFacts | None:
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
        if method.role == "primary":
            return method
    return min(active, key=lambda m: m.enrolled_at, default=None)


@dataclass(frozen=True)
class _Situation:
    facts: Facts
    p: MethodFacts | None
    backup: MethodFacts | None  # the first usable backup
    lookup: LookupFacts | None  # the latest lookup, when it is for P

    @property
    def method(self) -> MethodFacts:
        # Every rule after R1 runs with an active method, so P exists.
        assert self.p is not None
        return self.p

    @property
    def answers(self) -> Answers:
        return self.facts.answers

    @property
    def lost_device(self) -> bool:
        answers = self.answers
        return answers.has_device_access is False or answers.phone_number_matches is False


def _situation(facts: Facts) -> _Situation:
    p = primary_method(facts)
    backup = next(
        (
            m
            for m in facts.methods
            if m.active
            and m.role == "backup"
            and not m.locked
            and (p is None or m.method_id != p.method_id)
        ),
        None,
    )
    lookup = facts.latest_lookup
    if lookup is not None and (p is None or lookup.method_id != p.method_id):
        lookup = None
    return _Situation(facts=facts, p=p, backup=backup, lookup=lookup)


# --- Predicates ----------------------------------------------------------------------


def _no_active_methods(s: _Situation) -> bool:
    return s.p is None


def _locked_backup_ready(s: _Situation) -> bool:
    return s.method.locked and s.backup is not None and s.answers.has_backup_device_access is True


def _locked_backup_unknown(s: _Situation) -> bool:
    return s.method.locked and s.backup is not None and s.answers.has_backup_device_access is None


def _locked(s: _Situation) -> bool:
    return s.method.locked


def _device_access_unknown(s: _Situation) -> bool:
    return s.answers.has_device_access is None


def _lost_device_backup_ready(s: _Situation) -> bool:
    return s.lost_device and s.backup is not None and s.answers.has_backup_device_access is True


def _lost_device_backup_unknown(s: _Situation) -> bool:
    return s.lost_device and s.backup is not None and s.answers.has_backup_device_access is None


def _lost_device(s: _Situation) -> bool:
    return s.lost_device


def _phone_unverified(s: _Situation) -> bool:
    return s.method.kind in PHONE_KINDS and s.answers.phone_number_matches is None


def _receives_no_codes(s: _Situation) -> bool:
    return not s.method.receives_codes


def _needs_lookup(s: _Situation) -> bool:
    """Return whether there is no usable lookup for P.

    A pending or running lookup is never stale (it waits, R9); a finished one is stale when
    it finished before the freshness window. A succeeded lookup without a known verdict
    can't be read, so it counts as missing too.
    """
    lookup = s.lookup
    if lookup is None or lookup.status not in {"pending", "running", "succeeded", "failed"}:
        return True
    if lookup.status in FINISHED_LOOKUP_STATUSES:
        finished_at = lookup.finished_at or lookup.created_at
        if finished_at < s.facts.now - s.facts.lookup_freshness:
            return True
    return lookup.status == "succeeded" and lookup.verdict not in KNOWN_VERDICTS


def _lookup_in_progress(s: _Situation) -> bool:
    return s.lookup is not None and s.lookup.status in {"pending", "running"}


def _lookup_failed(s: _Situation) -> bool:
    return s.lookup is not None and s.lookup.status == "failed"


def _verdict_is(*verdicts: str) -> Callable[[_Situation], bool]:
    def predicate(s: _Situation) -> bool:
        return s.lookup is not None and s.lookup.verdict in verdicts

    return predicate


# --- Wording helpers -----------------------------------------------------------------


def _describe(method: MethodFacts) -> str:
    """Return e.g. "the primary SMS method"."""
    return _("the {role} {kind} method").format(
        role=_ROLE_LABELS.get(method.role, method.role),
        kind=_KIND_LABELS.get(method.kind, method.kind),
    )


def _sentence(text: str) -> str:
    """Return `text` with its first letter upper-cased (the rest untouched)."""
    return text[:1].upper() + text[1:]


def _format_time(moment: datetime | None) -> str:
    if moment is None:
        return _("an unknown time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _format_duration(seconds: int) -> str:
    minutes = max(0, seconds + 59) // 60
    hours, minutes = divmod(minutes, 60)
    if hours:
        return _("{hours} h {minutes} min").format(hours=hours, minutes=minutes)
    return _("{minutes} min").format(minutes=minutes)


def _seconds_remaining(s: _Situation) -> int | None:
    method = s.method
    if method.seconds_remaining is not None:
        return max(0, method.seconds_remaining)
    if method.locked_until is not None:
        return max(0, int((method.locked_until - s.facts.now).total_seconds()))
    return None


def _sender_numbers(facts: Facts) -> str:
    return ", ".join(facts.sender_numbers)


def _destination(method: MethodFacts) -> str:
    if method.kind == "email":
        return _("email address")
    return _("phone number")


def _why_not_primary(s: _Situation) -> str:
    """Say why the customer can't use P: locked, no device, or a changed number."""
    method = s.method
    if method.locked:
        return _(
            '{method} is locked until {until} after more than {threshold} "resend code" requests.'
        ).format(
            method=_sentence(_describe(method)),
            until=_format_time(method.locked_until),
            threshold=s.facts.lock_threshold,
        )
    if s.answers.phone_number_matches is False:
        return _(
            "The phone number the caller gave doesn't match the one on file for {method}."
        ).format(method=_describe(method))
    return _("The customer has no access to the device for {method}.").format(
        method=_describe(method)
    )


def _lookup_finished(s: _Situation) -> str:
    lookup = s.lookup
    assert lookup is not None
    return _format_time(lookup.finished_at or lookup.created_at)


def _cancel_action(facts: Facts) -> Action | None:
    if not facts.cancel_2sv_url:
        return None
    return Action(
        method="GET", url=facts.cancel_2sv_url, label=_("Open Cancel two-step verification")
    )


def _lookup_action(facts: Facts, label: str) -> Action:
    return Action(
        method="POST",
        url=f"/api/v1/customers/{facts.customer_id}/twosv/delivery-lookups/",
        label=label,
    )


# --- Step builders -------------------------------------------------------------------


def _no_2sv_enrolled(s: _Situation, rule: str) -> Step:
    if s.facts.methods:
        reason = _("Every 2SV method on file for this customer was removed.")
    else:
        reason = _("No 2SV method is on file for this customer.")
    return Step(
        code="no_2sv_enrolled",
        title=_("No 2SV method is set up"),
        instructions=_(
            "The customer has no active two-step verification method, so no codes are sent. "
            "Make sure they are signing in to this account; if a code is still asked for at "
            "login, escalate."
        ),
        reason=reason,
        rule=rule,
    )


def _use_backup_method(s: _Situation, rule: str) -> Step:
    backup = s.backup
    assert backup is not None
    reason = " ".join(
        [
            _why_not_primary(s),
            _("The customer has access to the device for {backup}, which is not locked.").format(
                backup=_describe(backup)
            ),
        ]
    )
    return Step(
        code="use_backup_method",
        title=_("Use the backup method"),
        instructions=_(
            "Ask the customer to select No code? in the login window and choose their backup "
            "method from the list. This works only if they have access to the backup device "
            "(smartphone, etc.)."
        ),
        reason=reason,
        rule=rule,
        article_section=SECTION_BACKUP,
        method_id=s.method.method_id,
    )


def _ask_backup_device_access(s: _Situation, rule: str) -> Step:
    backup = s.backup
    assert backup is not None
    reason = " ".join(
        [
            _why_not_primary(s),
            _(
                "There is a usable backup ({backup}), but it isn't known whether the customer "
                "has access to its device."
            ).format(backup=_describe(backup)),
        ]
    )
    return Step(
        code="ask_backup_device_access",
        title=_("Ask about the backup device"),
        instructions=_(
            "Find out if the customer has access to the device for their backup 2SV method "
            "(smartphone, etc.). With it, they can select No code? in the login window and "
            "choose the backup method; without it, No code? won't help."
        ),
        reason=reason,
        rule=rule,
        article_section=SECTION_BACKUP,
        question=Question(
            field="has_backup_device_access",
            prompt=_("Do you have access to the device you set up as your backup 2SV method?"),
        ),
        method_id=s.method.method_id,
    )


def _wait_for_lock_expiry(s: _Situation, rule: str) -> Step:
    method = s.method
    remaining = _seconds_remaining(s)
    parts = [_why_not_primary(s)]
    if s.backup is None:
        parts.append(_("There is no usable backup method."))
    elif s.answers.has_backup_device_access is False:
        parts.append(_("The customer has no access to the backup device."))
    return Step(
        code="wait_for_lock_expiry",
        title=_("Wait for the lock to end"),
        instructions=_(
            'We lock a 2SV method when someone asks us to "resend code" too many times. '
            "Tell the customer to wait until {until} (about {remaining} from now) and try "
            'again, without selecting "resend code" before then. If they can\'t wait or no longer '
            "have the device, they can see Cancel two-step verification and follow the steps "
            "under I don't have access to that device."
        ).format(
            until=_format_time(method.locked_until),
            remaining=_format_duration(remaining) if remaining is not None else _("unknown"),
        ),
        reason=" ".join(parts),
        rule=rule,
        article_section=SECTION_LOCKED,
        alternatives=("cancel_2sv_no_device_access",),
        seconds_remaining=remaining,
        method_id=method.method_id,
    )


def _ask_device_access(s: _Situation, rule: str) -> Step:
    return Step(
        code="ask_device_access",
        title=_("Ask about the device"),
        instructions=_(
            "Find out if the customer has access to the device they set up for 2SV (phone, "
            "etc.). If not, they must see Cancel two-step verification and follow the steps "
            "under I don't have access to that device."
        ),
        reason=_(
            "It isn't known yet whether the customer has access to the device for {method}."
        ).format(method=_describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        question=Question(
            field="has_device_access",
            prompt=_("Do you have access to the device you set up for two-step verification?"),
        ),
        method_id=s.method.method_id,
    )


def _cancel_2sv_no_device_access(s: _Situation, rule: str) -> Step:
    parts = [_why_not_primary(s)]
    if s.backup is None:
        parts.append(_("There is no usable backup method."))
    else:
        parts.append(_("The customer has no access to the backup device."))
    return Step(
        code="cancel_2sv_no_device_access",
        title=_("Cancel 2SV: no access to the device"),
        instructions=_(
            "The customer must see Cancel two-step verification and follow the steps under "
            "I don't have access to that device. That flow proves their identity; send them "
            "there and leave their 2SV methods as they are."
        ),
        reason=" ".join(parts),
        rule=rule,
        article_section=SECTION_NO_DEVICE,
        action=_cancel_action(s.facts),
        method_id=s.method.method_id,
    )


def _verify_phone_number(s: _Situation, rule: str) -> Step:
    facts = s.facts
    instructions = _(
        "Ask the caller to say the full phone number they set up for 2SV and type it into "
        "the panel, which compares it with the number on file. Never say the number on file "
        "or any of its digits to the caller."
    )
    action = None
    if facts.session_id is not None:
        action = Action(
            method="POST",
            url=f"/api/v1/twosv/sessions/{facts.session_id}/verify-phone/",
            label=_("Check the number"),
        )
    else:
        instructions = " ".join(
            [instructions, _("Start a troubleshooting session to compare the number.")]
        )
    return Step(
        code="verify_phone_number",
        title=_("Verify the phone number"),
        instructions=instructions,
        reason=_(
            "The customer has access to the device, and the phone number of {method} hasn't "
            "been verified in this session yet."
        ).format(method=_describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        action=action,
        method_id=s.method.method_id,
    )


def _problem_lies_elsewhere(s: _Situation, rule: str) -> Step:
    method = s.method
    if not method.receives_codes:
        if method.kind == "security_key":
            instructions = _(
                "A security key doesn't receive codes, so delivery can't be at fault: the "
                "problem lies elsewhere. Check that the customer uses the key they set up "
                "for 2SV and a browser that supports security keys."
            )
        else:
            instructions = _(
                "An authenticator app doesn't receive codes, so delivery can't be at fault: "
                "the problem lies elsewhere. Check that the customer uses the app entry for "
                "this account and that the phone's date and time are set automatically."
            )
        reason = _("{method} doesn't receive codes, so there is no delivery to check.").format(
            method=_sentence(_describe(method))
        )
    else:
        instructions = _(
            "ATS shows the latest code was delivered. If all is OK and the customer is still "
            "not getting codes, the problem lies elsewhere: ask them to look for the message "
            "on the device (including blocked, filtered or spam messages) and to use the "
            "newest code in the same login window."
        )
        reason = _(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "was delivered."
        ).format(finished=_lookup_finished(s), method=_describe(method))
    return Step(
        code="problem_lies_elsewhere",
        title=_("The problem lies elsewhere"),
        instructions=instructions,
        reason=reason,
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=method.method_id,
    )


def _check_ats_delivery(s: _Situation, rule: str) -> Step:
    method = s.method
    lookup = s.lookup
    if lookup is None:
        reason = _("No delivery lookup has been run for {method} yet.").format(
            method=_describe(method)
        )
    elif lookup.status == "succeeded" and lookup.verdict not in KNOWN_VERDICTS:
        reason = _("The latest delivery lookup for {method} has no readable result.").format(
            method=_describe(method)
        )
    else:
        reason = _(
            "The latest delivery lookup for {method} finished at {finished}, more than "
            "{minutes} min ago."
        ).format(
            method=_describe(method),
            finished=_lookup_finished(s),
            minutes=int(s.facts.lookup_freshness.total_seconds() // 60),
        )
    return Step(
        code="check_ats_delivery",
        title=_("Check delivery with ATS"),
        instructions=_(
            "Check with ATS to verify that codes are being sent to the customer's {destination}: "
            "run a delivery lookup."
        ).format(destination=_destination(method)),
        reason=reason,
        rule=rule,
        article_section=SECTION_GENERAL,
        action=_lookup_action(s.facts, _("Run delivery lookup")),
        method_id=method.method_id,
    )


def _wait_for_ats_lookup(s: _Situation, rule: str) -> Step:
    lookup = s.lookup
    assert lookup is not None
    return Step(
        code="wait_for_ats_lookup",
        title=_("Wait for the ATS lookup"),
        instructions=_(
            "ATS is being asked whether codes are being sent to the customer's {destination}. "
            "The panel shows the result as soon as it arrives; meanwhile, ask the customer not "
            "to request more codes."
        ).format(destination=_destination(s.method)),
        reason=_("A delivery lookup for {method} started at {created} is {status}.").format(
            method=_describe(s.method),
            created=_format_time(lookup.created_at),
            status=_("pending") if lookup.status == "pending" else _("running"),
        ),
        rule=rule,
        article_section=SECTION_GENERAL,
        action=Action(
            method="GET",
            url=f"/api/v1/twosv/delivery-lookups/{lookup.lookup_id}/",
            label=_("Refresh lookup"),
        ),
        method_id=s.method.method_id,
    )


def _retry_ats_lookup(s: _Situation, rule: str) -> Step:
    return Step(
        code="retry_ats_lookup",
        title=_("Run the ATS lookup again"),
        instructions=_(
            "The delivery lookup couldn't get an answer from ATS. Run it again; if it keeps "
            "failing, check in ATS directly that codes are being sent to that {destination}."
        ).format(destination=_destination(s.method)),
        reason=_("The latest delivery lookup for {method} failed at {finished}.").format(
            method=_describe(s.method), finished=_lookup_finished(s)
        ),
        rule=rule,
        article_section=SECTION_GENERAL,
        action=_lookup_action(s.facts, _("Run delivery lookup again")),
        method_id=s.method.method_id,
    )


def _escalate_codes_not_sent(s: _Situation, rule: str) -> Step:
    return Step(
        code="escalate_codes_not_sent",
        title=_("Escalate: no codes were sent"),
        instructions=_(
            "ATS shows no codes sent to this {destination} in the lookup period. Make sure the "
            "customer is signing in to this account and gets as far as the code prompt; if they "
            "do, escalate with the lookup's details."
        ).format(destination=_destination(s.method)),
        reason=_(
            "The delivery lookup finished at {finished} found no messages sent to {method}."
        ).format(finished=_lookup_finished(s), method=_describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=s.method.method_id,
    )


def _check_carrier_block(s: _Situation, rule: str) -> Step:
    method = s.method
    lookup = s.lookup
    assert lookup is not None
    numbers = _sender_numbers(s.facts)
    if method.kind == "email":
        instructions = _(
            "ATS shows the latest code was blocked or filtered on its way to the customer's "
            "email address. Ask them to check their spam or junk folder and make sure their "
            "mail provider isn't blocking our messages."
        )
    elif lookup.verdict == "recipient_blocked":
        instructions = _(
            "The customer's phone refused our messages (they may have replied STOP). Make "
            "sure the customer isn't blocking {numbers}: they can reply START to that number "
            "or unblock it in the phone's settings, and then try again."
        ).format(numbers=numbers)
    else:
        instructions = _(
            "Make sure the customer's carrier isn't blocking {numbers}. The customer may need "
            "to ask their carrier to allow messages from that number."
        ).format(numbers=numbers)
    if lookup.verdict == "recipient_blocked":
        reason = _(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "was blocked by the recipient."
        )
    elif method.kind == "email":
        reason = _(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "was filtered or blocked on its way."
        )
    else:
        reason = _(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "was filtered or blocked by the carrier."
        )
    return Step(
        code="check_carrier_block",
        title=_("Check for a carrier block"),
        instructions=instructions,
        reason=reason.format(finished=_lookup_finished(s), method=_describe(method)),
        rule=rule,
        article_section=SECTION_NOT_RECEIVING if method.kind in PHONE_KINDS else None,
        method_id=method.method_id,
    )


def _check_handset_reachable(s: _Situation, rule: str) -> Step:
    if s.method.kind == "email":
        instructions = _(
            "ATS couldn't deliver to the customer's email address: the mailbox may be full or "
            "no longer in use. Ask the customer to make sure they can receive mail at that "
            "address, then try once more."
        )
    else:
        instructions = _(
            "ATS couldn't reach the customer's phone: it may be off or out of coverage, or "
            "the number can't receive text messages (a landline, for example). Ask the "
            "customer to make sure the phone is on, has signal and can receive text "
            "messages, then try once more."
        )
    return Step(
        code="check_handset_reachable",
        title=_("Check that the device can receive messages"),
        instructions=instructions,
        reason=_(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "couldn't reach the recipient."
        ).format(finished=_lookup_finished(s), method=_describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=s.method.method_id,
    )


def _regional_provider_issue(s: _Situation, rule: str) -> Step:
    method = s.method
    message = s.facts.regional_advisories.get(method.phone_region or "")
    if message is None:
        message = _(
            "Our text message provider Twilio might have problems reaching numbers in this region."
        )
    return Step(
        code="regional_provider_issue",
        title=_("Known provider problem in this region"),
        instructions=_(
            "{advisory} Explain that codes to this number may not arrive for now. If the "
            "customer set up a backup method, they can select No code? in the login window to "
            "use it; otherwise they can try again later."
        ).format(advisory=message),
        reason=_(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "failed, and ATS put it down to the provider's problems in the number's region "
            "({region})."
        ).format(
            finished=_lookup_finished(s),
            method=_describe(method),
            region=method.phone_region or _("unknown"),
        ),
        rule=rule,
        article_section=SECTION_INDIA,
        alternatives=("use_backup_method",) if s.backup is not None else (),
        method_id=method.method_id,
    )


def _escalate_provider_error(s: _Situation, rule: str) -> Step:
    return Step(
        code="escalate_provider_error",
        title=_("Escalate: the provider failed to deliver"),
        instructions=_(
            "ATS shows our message provider failed to deliver the latest code, or sent no "
            "delivery receipt. Escalate with the lookup's details; the customer can try again "
            "later."
        ),
        reason=_(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "failed at the provider."
        ).format(finished=_lookup_finished(s), method=_describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=s.method.method_id,
    )


# --- The table -----------------------------------------------------------------------


class Rule(NamedTuple):
    rule: str
    when: Callable[[_Situation], bool]
    step: Callable[[_Situation, str], Step]


# Read top to bottom: the first rule whose predicate holds gives the step.
RULES: tuple[Rule, ...] = (
    Rule("R1", _no_active_methods, _no_2sv_enrolled),
    Rule("R2", _locked_backup_ready, _use_backup_method),
    Rule("R3", _locked_backup_unknown, _ask_backup_device_access),
    Rule("R4", _locked, _wait_for_lock_expiry),
    Rule("R5", _device_access_unknown, _ask_device_access),
    Rule("R6", _lost_device_backup_ready, _use_backup_method),
    Rule("R6", _lost_device_backup_unknown, _ask_backup_device_access),
    Rule("R6", _lost_device, _cancel_2sv_no_device_access),
    Rule("R7", _phone_unverified, _verify_phone_number),
    # An authenticator app or security key receives no codes: nothing to check with ATS.
    Rule("R8", _receives_no_codes, _problem_lies_elsewhere),
    Rule("R8", _needs_lookup, _check_ats_delivery),
    Rule("R9", _lookup_in_progress, _wait_for_ats_lookup),
    Rule("R10", _lookup_failed, _retry_ats_lookup),
    Rule("R11", _verdict_is("not_sent"), _escalate_codes_not_sent),
    Rule("R12", _verdict_is("carrier_filtered", "recipient_blocked"), _check_carrier_block),
    Rule("R13", _verdict_is("unreachable"), _check_handset_reachable),
    Rule("R14", _verdict_is("regional_provider_issue"), _regional_provider_issue),
    Rule("R15", _verdict_is("provider_error"), _escalate_provider_error),
    Rule("R16", _verdict_is("delivered"), _problem_lies_elsewhere),
)


def decide(facts: Facts) -> Decision:
    """Return the next step for `facts` (first matching rule) with the advisories."""
    situation = _situation(facts)
    for rule in RULES:
        if rule.when(situation):
            step = rule.step(situation, rule.rule)
            break
    else:  # pragma: no cover - R8 catches every lookup that R9-R16 can't read
        raise AssertionError("no rule matched")
    return Decision(
        step=step,
        advisories=advisories(facts),
        method_id=situation.p.method_id if situation.p is not None else None,
        no_code_link_visible=any(m.active and m.role == "backup" for m in facts.methods),
    )


# --- Advisories ----------------------------------------------------------------------


def advisories(facts: Facts) -> tuple[Advisory, ...]:
    """Return the advisories shown beside any step.

    `backup_hidden` first, then per method in order: `carrier_hint`, `regional_provider`,
    `approaching_lock`.
    """
    found: list[Advisory] = []
    if any(m.active and m.role == "backup" and not m.visible_in_crm for m in facts.methods):
        found.append(
            Advisory(
                code="backup_hidden",
                message=_(
                    "The customer has set up a backup 2SV method that the CRM doesn't show. "
                    "No code? appears in the login window to choose it; it works only if the "
                    "customer has access to the backup device (smartphone, etc.)."
                ),
            )
        )
    for method in facts.methods:
        if not method.active:
            continue
        if method.kind in PHONE_KINDS:
            found.append(
                Advisory(
                    code="carrier_hint",
                    message=_(
                        "Codes not arriving on the phone? Make sure the customer's carrier "
                        "isn't blocking {numbers}."
                    ).format(numbers=_sender_numbers(facts)),
                    method_id=method.method_id,
                )
            )
        region_message = facts.regional_advisories.get(method.phone_region or "")
        if method.phone_region and region_message:
            found.append(
                Advisory(
                    code="regional_provider",
                    message=region_message,
                    method_id=method.method_id,
                )
            )
        if not method.locked and method.resend_count * 10 >= facts.lock_threshold * 9:
            found.append(
                Advisory(
                    code="approaching_lock",
                    message=_(
                        '{count}/{threshold} "resend code" requests: {method} locks after '
                        "more than {threshold}. Don't tell the customer to resend again."
                    ).format(
                        count=method.resend_count,
                        threshold=facts.lock_threshold,
                        method=_describe(method),
                    ),
                    method_id=method.method_id,
                )
            )
    return tuple(found)
