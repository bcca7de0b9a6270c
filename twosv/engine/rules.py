"""The next-step rules: docs/SPEC.md section 4 as a table read top to bottom.

Each row names a rule of docs/SPEC.md, when it applies (twosv.engine.predicates) and the step it
gives (twosv.engine.steps_access for R1-R7 and R6a, twosv.engine.steps_delivery for R8-R16). Some
rules have variants: several rows share a rule code and the first that matches wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from twosv.engine import predicates as when
from twosv.engine import steps_access as access
from twosv.engine import steps_delivery as delivery
from twosv.engine.advisories import advisories
from twosv.engine.facts import Decision, Facts, Situation, Step, situation
from twosv.vocabulary import MethodRole, RuleCode, Verdict


class Rule(NamedTuple):
    """One row of the table: rule code, when it applies, the step it gives."""

    rule: RuleCode
    when: Callable[[Situation], bool]
    step: Callable[[Situation, RuleCode], Step]


# Read top to bottom: the first rule whose predicate holds gives the step.
RULES: tuple[Rule, ...] = (
    Rule(RuleCode.R1, when.no_active_methods, access.no_2sv_enrolled),
    Rule(RuleCode.R2, when.locked_backup_ready, access.use_backup_method),
    Rule(RuleCode.R3, when.locked_backup_unknown, access.ask_backup_device_access),
    Rule(RuleCode.R4, when.locked, access.wait_for_lock_expiry),
    Rule(RuleCode.R5, when.device_access_unknown, access.ask_device_access),
    Rule(RuleCode.R6, when.lost_device_backup_ready, access.use_backup_method),
    Rule(RuleCode.R6, when.lost_device_backup_unknown, access.ask_backup_device_access),
    Rule(RuleCode.R6, when.lost_device, access.cancel_2sv_no_device_access),
    # One failed check may be a misread digit: check again before the Cancel-2SV flow.
    Rule(RuleCode.R6A, when.phone_mismatch, access.recheck_phone_number),
    Rule(RuleCode.R7, when.phone_unverified, access.verify_phone_number),
    # An authenticator app or security key receives no codes: nothing to check with ATS.
    Rule(RuleCode.R8, when.receives_no_codes, delivery.problem_lies_elsewhere),
    Rule(RuleCode.R8, when.needs_lookup, delivery.check_ats_delivery),
    Rule(RuleCode.R9, when.lookup_in_progress, delivery.wait_for_ats_lookup),
    Rule(RuleCode.R10, when.lookup_failed, delivery.retry_ats_lookup),
    Rule(RuleCode.R11, when.verdict_is(Verdict.NOT_SENT), delivery.escalate_codes_not_sent),
    Rule(
        RuleCode.R12,
        when.verdict_is(Verdict.CARRIER_FILTERED, Verdict.RECIPIENT_BLOCKED),
        delivery.check_carrier_block,
    ),
    Rule(RuleCode.R13, when.verdict_is(Verdict.UNREACHABLE), delivery.check_handset_reachable),
    Rule(
        RuleCode.R14,
        when.verdict_is(Verdict.REGIONAL_PROVIDER_ISSUE),
        delivery.regional_provider_issue,
    ),
    Rule(RuleCode.R15, when.verdict_is(Verdict.PROVIDER_ERROR), delivery.escalate_provider_error),
    Rule(RuleCode.R16, when.verdict_is(Verdict.DELIVERED), delivery.problem_lies_elsewhere),
)


def decide(facts: Facts) -> Decision:
    """Return the next step for `facts` (first matching rule) with the advisories."""
    current = situation(facts)
    for rule in RULES:
        if rule.when(current):
            step = rule.step(current, rule.rule)
            break
    else:  # pragma: no cover - R8 catches every lookup that R9-R16 can't read
        raise AssertionError("no rule matched")
    return Decision(
        step=step,
        advisories=advisories(facts),
        method_id=current.p.method_id if current.p is not None else None,
        no_code_link_visible=any(m.active and m.role == MethodRole.BACKUP for m in facts.methods),
    )
