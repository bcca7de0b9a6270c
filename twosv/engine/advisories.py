"""The advisories: hints shown beside whatever step the rules give."""

from __future__ import annotations

from twosv.engine.facts import Advisory, Facts
from twosv.engine.wording import _, describe, sender_numbers
from twosv.vocabulary import PHONE_KINDS, AdvisoryCode, MethodRole


def advisories(facts: Facts) -> tuple[Advisory, ...]:
    """Return the advisories shown beside any step.

    `backup_hidden` first, then per method in order: `carrier_hint`, `regional_provider`,
    `approaching_lock`.
    """
    found: list[Advisory] = []
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
        if method.kind in PHONE_KINDS:
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
    return tuple(found)
