"""The advisories: hints shown beside whatever step the rules give."""

from __future__ import annotations

from twosv.engine.facts import Advisory, Facts, MethodFacts, subject_method
from twosv.engine.wording import (
    _,
    describe,
    format_duration,
    format_time,
    lock_seconds_remaining,
    sender_numbers,
    sentence,
)
from twosv.vocabulary import (
    ADVISORY_ORDER,
    PHONE_KINDS,
    AdvisoryCode,
    MethodRole,
    Verdict,
)


def advisories(facts: Facts) -> tuple[Advisory, ...]:
    """Return the advisories shown beside any step, warnings first (docs/SPEC.md section 4).

    In the order of vocabulary.ADVISORY_ORDER: `approaching_lock`, `method_locked`,
    `number_recently_changed`, `delivery_incident`, `regional_provider` (warnings), then
    `carrier_hint` and `backup_hidden` (info); the methods' advisories of one code in the
    methods' order.
    """
    p = subject_method(facts)
    found: list[Advisory] = list(_delivery_incidents(facts))
    if any(
        m.active and m.role == MethodRole.BACKUP and not m.visible_in_crm for m in facts.methods
    ):
        found.append(
            Advisory(
                code=AdvisoryCode.BACKUP_HIDDEN,
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
        if method.locked and (p is None or method.method_id != p.method_id):
            # The step speaks of P's lock; every other lock needs saying too.
            found.append(_method_locked(facts, method))
        if _number_recently_changed(facts, method):
            found.append(
                Advisory(
                    code=AdvisoryCode.NUMBER_RECENTLY_CHANGED,
                    message=_(
                        "The number on file for {method} changed on {changed}, {ago}. Codes "
                        "go to the new number only; a caller who gives the old one may not "
                        "have the phone set up for 2SV."
                    ).format(
                        method=describe(method),
                        changed=format_time(method.phone_changed_at),
                        ago=_days_ago(facts, method),
                    ),
                    method_id=method.method_id,
                )
            )
        if (
            method.kind in PHONE_KINDS
            and not method.locked
            and method.latest_verdict != Verdict.DELIVERED
        ):
            # Not for a locked method (no code is sent) nor after "delivered" (no block).
            found.append(
                Advisory(
                    code=AdvisoryCode.CARRIER_HINT,
                    message=_(
                        "Codes not arriving on the phone? Make sure the customer's carrier "
                        "isn't blocking {numbers}."
                    ).format(numbers=sender_numbers(facts)),
                    method_id=method.method_id,
                )
            )
        region_message = facts.regional_advisories.get(method.phone_region or "")
        if method.phone_region and region_message:
            found.append(
                Advisory(
                    code=AdvisoryCode.REGIONAL_PROVIDER,
                    message=region_message,
                    method_id=method.method_id,
                )
            )
        if not method.locked and method.resend_count * 10 >= facts.lock_threshold * 9:
            found.append(
                Advisory(
                    code=AdvisoryCode.APPROACHING_LOCK,
                    message=_(
                        '{count}/{threshold} "resend code" requests: {method} locks after '
                        "more than {threshold}. Don't tell the customer to resend again."
                    ).format(
                        count=method.resend_count,
                        threshold=facts.lock_threshold,
                        method=describe(method),
                    ),
                    method_id=method.method_id,
                )
            )
    # A stable sort: the methods' order holds within each code.
    return tuple(sorted(found, key=_rank))


def _rank(advisory: Advisory) -> int:
    code = advisory.code
    return ADVISORY_ORDER.index(code) if code in ADVISORY_ORDER else len(ADVISORY_ORDER)


def _method_locked(facts: Facts, method: MethodFacts) -> Advisory:
    remaining = lock_seconds_remaining(method, facts.now)
    return Advisory(
        code=AdvisoryCode.METHOD_LOCKED,
        message=_(
            "{method} is locked until {until} (about {remaining} from now) after more than "
            '{threshold} "resend code" requests: it can\'t be used before then.'
        ).format(
            method=sentence(describe(method)),
            until=format_time(method.locked_until),
            remaining=format_duration(remaining) if remaining is not None else _("unknown"),
            threshold=facts.lock_threshold,
        ),
        method_id=method.method_id,
        locked_until=method.locked_until,
    )


def _number_recently_changed(facts: Facts, method: MethodFacts) -> bool:
    changed = method.phone_changed_at
    return (
        method.active
        and method.kind in PHONE_KINDS
        and changed is not None
        and facts.now - changed < facts.recent_number_change
    )


def _days_ago(facts: Facts, method: MethodFacts) -> str:
    assert method.phone_changed_at is not None
    days = max(0, (facts.now - method.phone_changed_at).days)
    if days == 0:
        return _("today")
    if days == 1:
        return _("1 day ago")
    return _("{days} days ago").format(days=days)


def _delivery_incidents(facts: Facts) -> list[Advisory]:
    """Return one `delivery_incident` per incident region the customer has a phone number in."""
    found: list[Advisory] = []
    for method in facts.methods:
        region = method.phone_region
        if not (method.active and method.kind in PHONE_KINDS and region):
            continue
        since = facts.delivery_incidents.get(region)
        if since is None or any(a.region == region for a in found):
            continue
        found.append(
            Advisory(
                code=AdvisoryCode.DELIVERY_INCIDENT,
                message=_(
                    "Delivery incident: many codes to phone numbers in {region} have failed "
                    "since {since}. Codes to this customer's number there may not arrive for "
                    "now; don't tell them to resend again and again."
                ).format(region=region, since=format_time(since)),
                region=region,
                since=since,
            )
        )
    return found
