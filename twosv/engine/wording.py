"""The words the steps share: the translation marker, the article's headings, the phrases.

Every text an agent reads is marked with `_` (a no-op, gettext_noop style) so that the API
layer can translate it; format arguments stay outside the marked literal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from twosv.engine.facts import (
    MISSES_FOR_ANOTHER_NUMBER,
    Action,
    Facts,
    MethodFacts,
    Situation,
)
from twosv.vocabulary import MethodKind, MethodRole


def _(message: str) -> str:
    """Mark `message` for translation and return it unchanged."""
    return message


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
    MethodKind.SMS: _("SMS"),
    MethodKind.VOICE: _("voice call"),
    MethodKind.EMAIL: _("email"),
    MethodKind.AUTHENTICATOR_APP: _("authenticator app"),
    MethodKind.SECURITY_KEY: _("security key"),
}
_ROLE_LABELS: Mapping[str, str] = {
    MethodRole.PRIMARY: _("primary"),
    MethodRole.BACKUP: _("backup"),
}


def describe(method: MethodFacts) -> str:
    """Return e.g. "the primary SMS method"."""
    return _("the {role} {kind} method").format(
        role=_ROLE_LABELS.get(method.role, method.role),
        kind=_KIND_LABELS.get(method.kind, method.kind),
    )


def sentence(text: str) -> str:
    """Return `text` with its first letter upper-cased (the rest untouched)."""
    return text[:1].upper() + text[1:]


def format_time(moment: datetime | None) -> str:
    """Return `moment` as e.g. "2025-03-01 17:30 UTC"."""
    if moment is None:
        return _("an unknown time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_duration(seconds: int) -> str:
    """Return `seconds` rounded up to the minute, e.g. "5 h 30 min"."""
    minutes = max(0, seconds + 59) // 60
    hours, minutes = divmod(minutes, 60)
    if hours:
        return _("{hours} h {minutes} min").format(hours=hours, minutes=minutes)
    return _("{minutes} min").format(minutes=minutes)


def seconds_remaining(s: Situation) -> int | None:
    """Return the seconds left on P's lock, or None when unknown."""
    return lock_seconds_remaining(s.method, s.facts.now)


def lock_seconds_remaining(method: MethodFacts, now: datetime) -> int | None:
    """Return the seconds left on the method's lock at `now`, or None when unknown."""
    if method.seconds_remaining is not None:
        return max(0, method.seconds_remaining)
    if method.locked_until is not None:
        return max(0, int((method.locked_until - now).total_seconds()))
    return None


def sender_numbers(facts: Facts) -> str:
    """Return the numbers our codes come from, as one phrase."""
    return ", ".join(facts.sender_numbers)


def destination(method: MethodFacts) -> str:
    """Return where the method's codes go: an email address or a phone number."""
    if method.kind == MethodKind.EMAIL:
        return _("email address")
    return _("phone number")


def why_not_primary(s: Situation) -> str:
    """Say why the customer can't use P: locked, no device, a changed number or two misses."""
    method = s.method
    if method.locked:
        return _(
            '{method} is locked until {until} after more than {threshold} "resend code" requests.'
        ).format(
            method=sentence(describe(method)),
            until=format_time(method.locked_until),
            threshold=s.facts.lock_threshold,
        )
    answers = s.answers
    if answers.has_device_access is False:
        return _("The customer has no access to the device for {method}.").format(
            method=describe(method)
        )
    if answers.phone_number_changed is True:
        return _(
            "The number of the customer's phone changed since 2SV was set up for {method}."
        ).format(method=describe(method))
    if answers.phone_check_misses >= MISSES_FOR_ANOTHER_NUMBER:
        return _(
            "The phone number the caller gave didn't match the one on file for {method}, "
            "{misses} times in a row."
        ).format(method=describe(method), misses=answers.phone_check_misses)
    return _("The customer has no access to the device for {method}.").format(
        method=describe(method)
    )


def lookup_finished(s: Situation) -> str:
    """Return when P's latest lookup finished (or started, when it has no end time)."""
    lookup = s.lookup
    assert lookup is not None
    return format_time(lookup.finished_at or lookup.created_at)


def cancel_action(facts: Facts) -> Action | None:
    """Return the link to the Cancel-2SV flow, when one is configured."""
    if not facts.cancel_2sv_url:
        return None
    return Action(
        method="GET", url=facts.cancel_2sv_url, label=_("Open Cancel two-step verification")
    )


def lookup_action(facts: Facts, label: str) -> Action:
    """Return the action that starts a delivery lookup for the customer."""
    return Action(
        method="POST",
        url=f"/api/v1/customers/{facts.customer_id}/twosv/delivery-lookups/",
        label=label,
    )
