"""The steps about who can use which method (rules R1 to R7): locks, devices, numbers.

Safety: no step tells the agent to reset, remove or replace a method, to read out or ask for
a code, or to confirm a number for the caller. Losing the device always leads to the
Cancel-2SV flow, which this tool links to and never performs.
"""

from __future__ import annotations

from twosv.engine.facts import Action, Question, Situation, Step
from twosv.engine.wording import (
    SECTION_BACKUP,
    SECTION_GENERAL,
    SECTION_LOCKED,
    SECTION_NO_DEVICE,
    _,
    cancel_action,
    describe,
    format_duration,
    format_time,
    seconds_remaining,
    why_not_primary,
)
from twosv.vocabulary import RuleCode, StepCode


def no_2sv_enrolled(s: Situation, rule: RuleCode) -> Step:
    if s.facts.methods:
        reason = _("Every 2SV method on file for this customer was removed.")
    else:
        reason = _("No 2SV method is on file for this customer.")
    return Step(
        code=StepCode.NO_2SV_ENROLLED,
        title=_("No 2SV method is set up"),
        instructions=_(
            "The customer has no active two-step verification method, so no codes are sent. "
            "Make sure they are signing in to this account; if a code is still asked for at "
            "login, escalate."
        ),
        reason=reason,
        rule=rule,
    )


def use_backup_method(s: Situation, rule: RuleCode) -> Step:
    backup = s.backup
    assert backup is not None
    reason = " ".join(
        [
            why_not_primary(s),
            _("The customer has access to the device for {backup}, which is not locked.").format(
                backup=describe(backup)
            ),
        ]
    )
    return Step(
        code=StepCode.USE_BACKUP_METHOD,
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


def ask_backup_device_access(s: Situation, rule: RuleCode) -> Step:
    backup = s.backup
    assert backup is not None
    reason = " ".join(
        [
            why_not_primary(s),
            _(
                "There is a usable backup ({backup}), but it isn't known whether the customer "
                "has access to its device."
            ).format(backup=describe(backup)),
        ]
    )
    return Step(
        code=StepCode.ASK_BACKUP_DEVICE_ACCESS,
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


def wait_for_lock_expiry(s: Situation, rule: RuleCode) -> Step:
    method = s.method
    remaining = seconds_remaining(s)
    parts = [why_not_primary(s)]
    if s.backup is None:
        parts.append(_("There is no usable backup method."))
    elif s.answers.has_backup_device_access is False:
        parts.append(_("The customer has no access to the backup device."))
    return Step(
        code=StepCode.WAIT_FOR_LOCK_EXPIRY,
        title=_("Wait for the lock to end"),
        instructions=_(
            'We lock a 2SV method when someone asks us to "resend code" too many times. '
            "Tell the customer to wait until {until} (about {remaining} from now) and try "
            'again, without selecting "resend code" before then. If they can\'t wait or no longer '
            "have the device, they can see Cancel two-step verification and follow the steps "
            "under I don't have access to that device."
        ).format(
            until=format_time(method.locked_until),
            remaining=format_duration(remaining) if remaining is not None else _("unknown"),
        ),
        reason=" ".join(parts),
        rule=rule,
        article_section=SECTION_LOCKED,
        alternatives=(StepCode.CANCEL_2SV_NO_DEVICE_ACCESS,),
        seconds_remaining=remaining,
        method_id=method.method_id,
    )


def ask_device_access(s: Situation, rule: RuleCode) -> Step:
    if s.backup is not None:
        # No leads to the backup question (R6 as R3), not straight to Cancel 2SV.
        if_not = _("If not, the panel asks next about the device for their backup method.")
    else:
        if_not = _(
            "If not, they must see Cancel two-step verification and follow the steps under "
            "I don't have access to that device."
        )
    return Step(
        code=StepCode.ASK_DEVICE_ACCESS,
        title=_("Ask about the device"),
        instructions=" ".join(
            [
                _(
                    "Find out if the customer has access to the device they set up for 2SV "
                    "(phone, etc.)."
                ),
                if_not,
            ]
        ),
        reason=_(
            "It isn't known yet whether the customer has access to the device for {method}."
        ).format(method=describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        question=Question(
            field="has_device_access",
            prompt=_("Do you have access to the device you set up for two-step verification?"),
        ),
        method_id=s.method.method_id,
    )


def cancel_2sv_no_device_access(s: Situation, rule: RuleCode) -> Step:
    parts = [why_not_primary(s)]
    if s.backup is None:
        parts.append(_("There is no usable backup method."))
    else:
        parts.append(_("The customer has no access to the backup device."))
    return Step(
        code=StepCode.CANCEL_2SV_NO_DEVICE_ACCESS,
        title=_("Cancel 2SV: no access to the device"),
        instructions=_(
            "The customer must see Cancel two-step verification and follow the steps under "
            "I don't have access to that device. That flow proves their identity; send them "
            "there and leave their 2SV methods as they are."
        ),
        reason=" ".join(parts),
        rule=rule,
        article_section=SECTION_NO_DEVICE,
        action=cancel_action(s.facts),
        method_id=s.method.method_id,
    )


def _verify_phone_action(s: Situation, label: str) -> Action | None:
    """Return the session's phone check; None without a session (the bare state endpoint)."""
    if s.facts.session_id is None:
        return None
    return Action(
        method="POST", url=f"/api/v1/twosv/sessions/{s.facts.session_id}/verify-phone/", label=label
    )


def verify_phone_number(s: Situation, rule: RuleCode) -> Step:
    instructions = _(
        "Ask the caller to say the full phone number they set up for 2SV and type it into "
        "the panel, which compares it with the number on file. Never say the number on file "
        "or any of its digits to the caller."
    )
    action = _verify_phone_action(s, _("Check the number"))
    if action is None:
        instructions = " ".join(
            [instructions, _("Start a troubleshooting session to compare the number.")]
        )
    return Step(
        code=StepCode.VERIFY_PHONE_NUMBER,
        title=_("Verify the phone number"),
        instructions=instructions,
        reason=_(
            "The customer has access to the device, and the phone number of {method} hasn't "
            "been verified in this session yet."
        ).format(method=describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        action=action,
        method_id=s.method.method_id,
    )


def recheck_phone_number(s: Situation, rule: RuleCode) -> Step:
    """R6a: one failed check is not proof, people misread digits; check once more."""
    method = s.method
    parts = [
        _("The phone number the caller gave doesn't match the one on file for {method}.").format(
            method=describe(method)
        )
    ]
    parts.append(
        _(
            "One wrong number may be a misread digit; a second wrong number in a row leads to "
            "Cancel two-step verification."
        )
    )
    return Step(
        code=StepCode.RECHECK_PHONE_NUMBER,
        title=_("Check the number again"),
        instructions=_(
            "Ask the caller to say the full phone number of the device they set up for 2SV "
            "once more, slowly, digit by digit, and type it into the panel again. Also ask "
            "whether that phone's number has changed since they set up 2SV: if it has, the "
            "panel leads to the steps for a device they no longer have. Never say the number "
            "on file or any of its digits to the caller."
        ),
        reason=" ".join(parts),
        rule=rule,
        article_section=SECTION_GENERAL,
        question=Question(
            field="phone_number_changed",
            prompt=_("Has the number of this phone changed since 2SV was set up?"),
        ),
        action=_verify_phone_action(s, _("Check the number again")),
        method_id=method.method_id,
    )
