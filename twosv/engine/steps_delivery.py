"""The steps about codes that don't arrive (rules R8 to R16): what the ATS lookup says."""

from __future__ import annotations

from twosv.engine.facts import KNOWN_VERDICTS, Action, Situation, Step
from twosv.engine.wording import (
    SECTION_GENERAL,
    SECTION_INDIA,
    SECTION_NOT_RECEIVING,
    _,
    describe,
    destination,
    format_time,
    lookup_action,
    lookup_finished,
    sender_numbers,
    sentence,
)
from twosv.vocabulary import PHONE_KINDS, LookupStatus, MethodKind, RuleCode, StepCode, Verdict


def problem_lies_elsewhere(s: Situation, rule: RuleCode) -> Step:
    method = s.method
    if not method.receives_codes:
        if method.kind == MethodKind.SECURITY_KEY:
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
            method=sentence(describe(method))
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
        ).format(finished=lookup_finished(s), method=describe(method))
    return Step(
        code=StepCode.PROBLEM_LIES_ELSEWHERE,
        title=_("The problem lies elsewhere"),
        instructions=instructions,
        reason=reason,
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=method.method_id,
    )


def check_ats_delivery(s: Situation, rule: RuleCode) -> Step:
    method = s.method
    lookup = s.lookup
    if lookup is None:
        reason = _("No delivery lookup has been run for {method} yet.").format(
            method=describe(method)
        )
    elif lookup.status == LookupStatus.SUCCEEDED and lookup.verdict not in KNOWN_VERDICTS:
        reason = _("The latest delivery lookup for {method} has no readable result.").format(
            method=describe(method)
        )
    else:
        reason = _(
            "The latest delivery lookup for {method} finished at {finished}, more than "
            "{minutes} min ago."
        ).format(
            method=describe(method),
            finished=lookup_finished(s),
            minutes=int(s.facts.lookup_freshness.total_seconds() // 60),
        )
    return Step(
        code=StepCode.CHECK_ATS_DELIVERY,
        title=_("Check delivery with ATS"),
        instructions=_(
            "Check with ATS to verify that codes are being sent to the customer's {destination}: "
            "run a delivery lookup."
        ).format(destination=destination(method)),
        reason=reason,
        rule=rule,
        article_section=SECTION_GENERAL,
        action=lookup_action(s.facts, _("Run delivery lookup")),
        method_id=method.method_id,
    )


def wait_for_ats_lookup(s: Situation, rule: RuleCode) -> Step:
    lookup = s.lookup
    assert lookup is not None
    return Step(
        code=StepCode.WAIT_FOR_ATS_LOOKUP,
        title=_("Wait for the ATS lookup"),
        instructions=_(
            "ATS is being asked whether codes are being sent to the customer's {destination}. "
            "The panel shows the result as soon as it arrives; meanwhile, ask the customer not "
            "to request more codes."
        ).format(destination=destination(s.method)),
        reason=_("A delivery lookup for {method} started at {created} is {status}.").format(
            method=describe(s.method),
            created=format_time(lookup.created_at),
            status=_("pending") if lookup.status == LookupStatus.PENDING else _("running"),
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


def retry_ats_lookup(s: Situation, rule: RuleCode) -> Step:
    return Step(
        code=StepCode.RETRY_ATS_LOOKUP,
        title=_("Run the ATS lookup again"),
        instructions=_(
            "The delivery lookup couldn't get an answer from ATS. Run it again; if it keeps "
            "failing, check in ATS directly that codes are being sent to that {destination}."
        ).format(destination=destination(s.method)),
        reason=_("The latest delivery lookup for {method} failed at {finished}.").format(
            method=describe(s.method), finished=lookup_finished(s)
        ),
        rule=rule,
        article_section=SECTION_GENERAL,
        action=lookup_action(s.facts, _("Run delivery lookup again")),
        method_id=s.method.method_id,
    )


def escalate_codes_not_sent(s: Situation, rule: RuleCode) -> Step:
    return Step(
        code=StepCode.ESCALATE_CODES_NOT_SENT,
        title=_("Escalate: no codes were sent"),
        instructions=_(
            "ATS shows no codes sent to this {destination} in the lookup period. Make sure the "
            "customer is signing in to this account and gets as far as the code prompt; if they "
            "do, escalate with the lookup's details."
        ).format(destination=destination(s.method)),
        reason=_(
            "The delivery lookup finished at {finished} found no messages sent to {method}."
        ).format(finished=lookup_finished(s), method=describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=s.method.method_id,
    )


def check_carrier_block(s: Situation, rule: RuleCode) -> Step:
    method = s.method
    lookup = s.lookup
    assert lookup is not None
    numbers = sender_numbers(s.facts)
    if method.kind == MethodKind.EMAIL:
        instructions = _(
            "ATS shows the latest code was blocked or filtered on its way to the customer's "
            "email address. Ask them to check their spam or junk folder and make sure their "
            "mail provider isn't blocking our messages."
        )
    elif lookup.verdict == Verdict.RECIPIENT_BLOCKED:
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
    if lookup.verdict == Verdict.RECIPIENT_BLOCKED:
        reason = _(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "was blocked by the recipient."
        )
    elif method.kind == MethodKind.EMAIL:
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
        code=StepCode.CHECK_CARRIER_BLOCK,
        title=_("Check for a carrier block"),
        instructions=instructions,
        reason=reason.format(finished=lookup_finished(s), method=describe(method)),
        rule=rule,
        article_section=SECTION_NOT_RECEIVING if method.kind in PHONE_KINDS else None,
        method_id=method.method_id,
    )


def check_handset_reachable(s: Situation, rule: RuleCode) -> Step:
    if s.method.kind == MethodKind.EMAIL:
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
        code=StepCode.CHECK_HANDSET_REACHABLE,
        title=_("Check that the device can receive messages"),
        instructions=instructions,
        reason=_(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "couldn't reach the recipient."
        ).format(finished=lookup_finished(s), method=describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=s.method.method_id,
    )


def regional_provider_issue(s: Situation, rule: RuleCode) -> Step:
    method = s.method
    message = s.facts.regional_advisories.get(method.phone_region or "")
    incident_since = s.facts.delivery_incidents.get(method.phone_region or "")
    if message is None and incident_since is not None:
        message = _(
            "Many codes to phone numbers in this region have failed since {since} (a delivery "
            "incident)."
        ).format(since=format_time(incident_since))
    if message is None:
        message = _(
            "Our text message provider Twilio might have problems reaching numbers in this region."
        )
    # The panel knows whether there is a backup: say what applies, not "if they set one up".
    if s.backup is None:
        fallback = _("There is no usable backup method, so they can try again later.")
    elif s.answers.has_backup_device_access is False:
        fallback = _("They have no access to their backup device, so they can try again later.")
    else:
        fallback = _(
            "They can select No code? in the login window and choose {backup}, if they have "
            "access to its device; otherwise they can try again later."
        ).format(backup=describe(s.backup))
    return Step(
        code=StepCode.REGIONAL_PROVIDER_ISSUE,
        title=_("Known provider problem in this region"),
        instructions=_(
            "{advisory} Explain that codes to this number may not arrive for now. {fallback}"
        ).format(advisory=message, fallback=fallback),
        reason=_(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "failed, and ATS put it down to the provider's problems in the number's region "
            "({region})."
        ).format(
            finished=lookup_finished(s),
            method=describe(method),
            region=method.phone_region or _("unknown"),
        ),
        rule=rule,
        article_section=SECTION_INDIA,
        alternatives=(StepCode.USE_BACKUP_METHOD,) if s.backup is not None else (),
        method_id=method.method_id,
    )


def escalate_provider_error(s: Situation, rule: RuleCode) -> Step:
    return Step(
        code=StepCode.ESCALATE_PROVIDER_ERROR,
        title=_("Escalate: the provider failed to deliver"),
        instructions=_(
            "ATS shows our message provider failed to deliver the latest code, or sent no "
            "delivery receipt. Escalate with the lookup's details; the customer can try again "
            "later."
        ),
        reason=_(
            "The delivery lookup finished at {finished} shows the latest message to {method} "
            "failed at the provider."
        ).format(finished=lookup_finished(s), method=describe(s.method)),
        rule=rule,
        article_section=SECTION_GENERAL,
        method_id=s.method.method_id,
    )
