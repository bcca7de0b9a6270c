"""The next-step engine as a table: one row per rule of docs/SPEC.md §4, plus its variants."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from twosv.engine import (
    RULES,
    Advisory,
    Answers,
    Decision,
    Facts,
    LookupFacts,
    MethodFacts,
    Step,
    advisories,
    decide,
    subject_method,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LOCKED_UNTIL = NOW + timedelta(hours=5, minutes=30)
CANCEL_URL = "https://help.example.com/cancel-two-step-verification"
INDIA_ADVISORY = "Our text message provider Twilio might have problems reaching numbers in India."

UNKNOWN = Answers()
HAS_DEVICE = Answers(has_device_access=True)
ALL_OK = Answers(has_device_access=True, phone_number_matches=True)
NO_DEVICE = Answers(has_device_access=False)
NO_DEVICE_BACKUP_OK = Answers(has_device_access=False, has_backup_device_access=True)
NO_DEVICE_NO_BACKUP = Answers(has_device_access=False, has_backup_device_access=False)
MISMATCH = Answers(has_device_access=True, phone_number_matches=False, phone_check_misses=1)
TWO_MISSES = Answers(has_device_access=True, phone_number_matches=False, phone_check_misses=2)
NUMBER_CHANGED = Answers(has_device_access=True, phone_number_changed=True)
MISMATCH_NOT_CHANGED = replace(MISMATCH, phone_number_changed=False)
MATCH_AFTER_MISS = Answers(has_device_access=True, phone_number_matches=True)
BACKUP_OK = Answers(has_backup_device_access=True)
BACKUP_NO = Answers(has_backup_device_access=False)


def method(method_id: str = "m-primary", **overrides: Any) -> MethodFacts:
    values: dict[str, Any] = {
        "method_id": method_id,
        "kind": "sms",
        "role": "primary",
        "active": True,
        "locked": False,
        "seconds_remaining": None,
        "locked_until": None,
        "resend_count": 0,
        "has_phone": True,
        "phone_region": "US",
        "visible_in_crm": True,
        "enrolled_at": NOW - timedelta(days=30),
    }
    values.update(overrides)
    if "has_phone" not in overrides:
        values["has_phone"] = values["kind"] in {"sms", "voice"}
    return MethodFacts(**values)


def locked(method_id: str = "m-primary", **overrides: Any) -> MethodFacts:
    values: dict[str, Any] = {
        "locked": True,
        "locked_until": LOCKED_UNTIL,
        "seconds_remaining": int((LOCKED_UNTIL - NOW).total_seconds()),
    }
    values.update(overrides)
    return method(method_id, **values)


def backup(method_id: str = "m-backup", **overrides: Any) -> MethodFacts:
    values: dict[str, Any] = {
        "kind": "authenticator_app",
        "role": "backup",
        "has_phone": False,
        "phone_region": None,
        "visible_in_crm": False,
        "enrolled_at": NOW - timedelta(days=20),
    }
    values.update(overrides)
    return method(method_id, **values)


def lookup(
    status: str = "succeeded",
    verdict: str | None = "delivered",
    age: timedelta = timedelta(minutes=2),
    method_id: str = "m-primary",
) -> LookupFacts:
    finished = status in {"succeeded", "failed"}
    return LookupFacts(
        lookup_id="lk-1",
        method_id=method_id,
        status=status,
        verdict=verdict if status == "succeeded" else None,
        created_at=NOW - age - timedelta(seconds=5),
        finished_at=NOW - age if finished else None,
    )


def facts(*methods: MethodFacts, **overrides: Any) -> Facts:
    values: dict[str, Any] = {
        "now": NOW,
        "customer_id": "cust-1",
        "methods": methods,
        "session_id": "s-1",
        "cancel_2sv_url": CANCEL_URL,
        "regional_advisories": MappingProxyType({"IN": INDIA_ADVISORY}),
    }
    values.update(overrides)
    return Facts(**values)


def delivered_so_far(verdict: str, **overrides: Any) -> Facts:
    """Return facts that pass R1-R10 with a fresh lookup giving `verdict`."""
    return facts(method(**overrides), answers=ALL_OK, latest_lookup=lookup(verdict=verdict))


# (id, facts, expected step code, expected rule)
CASES: list[tuple[str, Facts, str, str]] = [
    ("R1 no methods", facts(), "no_2sv_enrolled", "R1"),
    ("R1 all removed", facts(method(active=False)), "no_2sv_enrolled", "R1"),
    (
        "R2 locked, backup device",
        facts(locked(), backup(), answers=BACKUP_OK),
        "use_backup_method",
        "R2",
    ),
    ("R3 locked, backup unknown", facts(locked(), backup()), "ask_backup_device_access", "R3"),
    ("R4 locked, no backup", facts(locked()), "wait_for_lock_expiry", "R4"),
    (
        "R4 locked, no backup device",
        facts(locked(), backup(), answers=BACKUP_NO),
        "wait_for_lock_expiry",
        "R4",
    ),
    (
        "R4 locked, backup locked",
        facts(locked(), locked("m-backup", kind="voice", role="backup"), answers=BACKUP_OK),
        "wait_for_lock_expiry",
        "R4",
    ),
    ("R4 locked wins over answers", facts(locked(), answers=ALL_OK), "wait_for_lock_expiry", "R4"),
    ("R5 device unknown", facts(method()), "ask_device_access", "R5"),
    (
        "R5 bare state endpoint",
        facts(method(), backup(), session_id=None),
        "ask_device_access",
        "R5",
    ),
    (
        "R6 no device, backup device",
        facts(method(), backup(), answers=NO_DEVICE_BACKUP_OK),
        "use_backup_method",
        "R6",
    ),
    (
        "R6 no device, backup unknown",
        facts(method(), backup(), answers=NO_DEVICE),
        "ask_backup_device_access",
        "R6",
    ),
    (
        "R6 no device, no backup device",
        facts(method(), backup(), answers=NO_DEVICE_NO_BACKUP),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    (
        "R6 no device, no backup",
        facts(method(), answers=NO_DEVICE),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    (
        "R6 no device, backup locked",
        facts(
            method(), locked("m-backup", kind="voice", role="backup"), answers=NO_DEVICE_BACKUP_OK
        ),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    (
        "R6 two misses in a row",
        facts(method(), answers=TWO_MISSES),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    (
        "R6 two misses in a row, backup",
        facts(method(), backup(), answers=TWO_MISSES),
        "ask_backup_device_access",
        "R6",
    ),
    (
        "R6 number changed",
        facts(method(), answers=NUMBER_CHANGED),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    (
        "R6 number changed after a miss",
        facts(method(), answers=replace(MISMATCH, phone_number_changed=True)),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    (
        "R6 number changed, backup device",
        facts(method(), backup(), answers=replace(NUMBER_CHANGED, has_backup_device_access=True)),
        "use_backup_method",
        "R6",
    ),
    (
        "R6 number changed, no backup device",
        facts(method(), backup(), answers=replace(NUMBER_CHANGED, has_backup_device_access=False)),
        "cancel_2sv_no_device_access",
        "R6",
    ),
    ("R6a one miss", facts(method(), answers=MISMATCH), "recheck_phone_number", "R6a"),
    (
        "R6a one miss, with a backup",
        facts(method(), backup(), answers=MISMATCH),
        "recheck_phone_number",
        "R6a",
    ),
    (
        "R6a one miss, number not changed",
        facts(method(), answers=MISMATCH_NOT_CHANGED),
        "recheck_phone_number",
        "R6a",
    ),
    (
        "R6a one miss, voice",
        facts(method(kind="voice"), answers=MISMATCH),
        "recheck_phone_number",
        "R6a",
    ),
    (
        "R8 a match after a miss",
        facts(method(), answers=MATCH_AFTER_MISS),
        "check_ats_delivery",
        "R8",
    ),
    (
        "R8 number not changed, verified",
        facts(method(), answers=replace(ALL_OK, phone_number_changed=False)),
        "check_ats_delivery",
        "R8",
    ),
    ("R7 sms unverified", facts(method(), answers=HAS_DEVICE), "verify_phone_number", "R7"),
    (
        "R7 voice unverified",
        facts(method(kind="voice"), answers=HAS_DEVICE),
        "verify_phone_number",
        "R7",
    ),
    (
        "R7 without session",
        facts(method(), answers=HAS_DEVICE, session_id=None),
        "verify_phone_number",
        "R7",
    ),
    ("R8 no lookup", facts(method(), answers=ALL_OK), "check_ats_delivery", "R8"),
    (
        "R8 stale lookup",
        facts(method(), answers=ALL_OK, latest_lookup=lookup(age=timedelta(minutes=11))),
        "check_ats_delivery",
        "R8",
    ),
    (
        "R8 stale failed lookup",
        facts(method(), answers=ALL_OK, latest_lookup=lookup("failed", age=timedelta(hours=2))),
        "check_ats_delivery",
        "R8",
    ),
    (
        "R8 lookup of another method",
        facts(method(), answers=ALL_OK, latest_lookup=lookup(method_id="m-other")),
        "check_ats_delivery",
        "R8",
    ),
    (
        "R8 email skips R7",
        facts(method(kind="email", has_phone=False), answers=HAS_DEVICE),
        "check_ats_delivery",
        "R8",
    ),
    (
        "R8 authenticator app",
        facts(method(kind="authenticator_app", has_phone=False), answers=HAS_DEVICE),
        "problem_lies_elsewhere",
        "R8",
    ),
    (
        "R8 security key",
        facts(method(kind="security_key", has_phone=False), answers=HAS_DEVICE),
        "problem_lies_elsewhere",
        "R8",
    ),
    (
        "R9 pending",
        facts(method(), answers=ALL_OK, latest_lookup=lookup("pending")),
        "wait_for_ats_lookup",
        "R9",
    ),
    (
        "R9 running",
        facts(method(), answers=ALL_OK, latest_lookup=lookup("running")),
        "wait_for_ats_lookup",
        "R9",
    ),
    (
        "R9 stale pending is never stale",
        facts(method(), answers=ALL_OK, latest_lookup=lookup("pending", age=timedelta(hours=3))),
        "wait_for_ats_lookup",
        "R9",
    ),
    (
        "R10 failed",
        facts(method(), answers=ALL_OK, latest_lookup=lookup("failed")),
        "retry_ats_lookup",
        "R10",
    ),
    ("R11 not sent", delivered_so_far("not_sent"), "escalate_codes_not_sent", "R11"),
    ("R12 carrier filtered", delivered_so_far("carrier_filtered"), "check_carrier_block", "R12"),
    ("R12 recipient blocked", delivered_so_far("recipient_blocked"), "check_carrier_block", "R12"),
    (
        "R12 email filtered",
        facts(
            method(kind="email"),
            answers=HAS_DEVICE,
            latest_lookup=lookup(verdict="carrier_filtered"),
        ),
        "check_carrier_block",
        "R12",
    ),
    ("R13 unreachable", delivered_so_far("unreachable"), "check_handset_reachable", "R13"),
    (
        "R14 regional",
        delivered_so_far("regional_provider_issue", phone_region="IN"),
        "regional_provider_issue",
        "R14",
    ),
    (
        "R14 regional without advisory text",
        delivered_so_far("regional_provider_issue", phone_region="BR"),
        "regional_provider_issue",
        "R14",
    ),
    (
        "R14 regional with backup",
        facts(
            method(phone_region="IN"),
            backup(),
            answers=ALL_OK,
            latest_lookup=lookup(verdict="regional_provider_issue"),
        ),
        "regional_provider_issue",
        "R14",
    ),
    ("R15 provider error", delivered_so_far("provider_error"), "escalate_provider_error", "R15"),
    ("R16 delivered", delivered_so_far("delivered"), "problem_lies_elsewhere", "R16"),
    (
        "R16 email delivered",
        facts(method(kind="email"), answers=HAS_DEVICE, latest_lookup=lookup()),
        "problem_lies_elsewhere",
        "R16",
    ),
    (
        "R16 lookup fresh at the boundary",
        facts(method(), answers=ALL_OK, latest_lookup=lookup(age=timedelta(minutes=10))),
        "problem_lies_elsewhere",
        "R16",
    ),
]

CASE_PARAMS = [pytest.param(f, code, rule, id=case_id) for case_id, f, code, rule in CASES]
ALL_DECISIONS: list[Decision] = [decide(f) for _, f, _, _ in CASES]
ALL_STEPS: list[Step] = [d.step for d in ALL_DECISIONS]


@pytest.mark.parametrize(("f", "code", "rule"), CASE_PARAMS)
def test_rule_table(f: Facts, code: str, rule: str) -> None:
    step = decide(f).step
    assert (step.code, step.rule) == (code, rule)


RULE_NUMBERS = [*(f"R{n}" for n in range(1, 7)), "R6a", *(f"R{n}" for n in range(7, 17))]


def test_the_cases_cover_every_rule_and_step_code() -> None:
    assert {s.rule for s in ALL_STEPS} == set(RULE_NUMBERS)
    assert {s.code for s in ALL_STEPS} == {
        "no_2sv_enrolled",
        "use_backup_method",
        "ask_backup_device_access",
        "wait_for_lock_expiry",
        "ask_device_access",
        "cancel_2sv_no_device_access",
        "verify_phone_number",
        "recheck_phone_number",
        "check_ats_delivery",
        "wait_for_ats_lookup",
        "retry_ats_lookup",
        "escalate_codes_not_sent",
        "check_carrier_block",
        "check_handset_reachable",
        "regional_provider_issue",
        "escalate_provider_error",
        "problem_lies_elsewhere",
    }


def test_the_table_reads_in_rule_order() -> None:
    read = list(dict.fromkeys(rule.rule for rule in RULES))  # each rule once, first seen
    assert read == RULE_NUMBERS


@pytest.mark.parametrize(("f", "code", "rule"), CASE_PARAMS)
def test_every_step_has_a_title_instructions_and_reason(f: Facts, code: str, rule: str) -> None:
    step = decide(f).step
    assert step.title.strip()
    assert step.instructions.strip()
    assert step.reason.strip()
    assert "{" not in step.title + step.instructions + step.reason  # every placeholder filled


# --- Safety --------------------------------------------------------------------------

FORBIDDEN = [
    r"\breset",
    r"\bremove the\b",
    r"\bremove (their|your|this|that|a) (method|phone|number|2sv|authenticator|security key)",
    r"\bdelete",
    r"\breplace",
    r"\bdisable",
    r"\bturn off",
    r"\bread out\b",
    r"\bread (you|them|the caller) the code",
    r"\btell me the code",
    r"\bgive me the code",
    r"\bthe code you received",
    r"\bwhat code\b",
    r"\bwhat('s| is) the code",
    r"\bask (them |the customer |the caller )?for (the|a|their|your) code",
    r"\bsay the code",
    r"\bread (it|the code|the number) (out|back|to)",
    r"\bconfirm (the|their|your) (phone )?number",
    r"\byour number is\b",
    r"\bnumber on file is\b",
    r"\bchange (their|the) (phone )?number for",
    r"\bupdate (their|the) (phone )?number",
    r"\badd a new (phone|number|method)",
]


def _texts(decision: Decision) -> list[str]:
    step = decision.step
    texts = [step.title, step.instructions, step.reason]
    if step.question is not None:
        texts.append(step.question.prompt)
    if step.action is not None:
        texts.append(step.action.label)
    texts.extend(a.message for a in decision.advisories)
    return texts


@pytest.mark.parametrize("decision", ALL_DECISIONS, ids=[case_id for case_id, *_ in CASES])
def test_no_step_asks_for_an_unsafe_action(decision: Decision) -> None:
    for text in _texts(decision):
        for pattern in FORBIDDEN:
            assert not re.search(pattern, text, re.IGNORECASE), (pattern, text)


def test_the_safety_scan_catches_unsafe_phrasing() -> None:
    unsafe = [
        "Reset the customer's 2SV.",
        "Remove the SMS method and add the new number.",
        "Read out the code.",
        "Ask the caller to tell me the code.",
        "Confirm the number for the caller.",
    ]
    for text in unsafe:
        assert any(re.search(p, text, re.IGNORECASE) for p in FORBIDDEN), text


@pytest.mark.parametrize(
    "f",
    [
        facts(method(), answers=NO_DEVICE),
        facts(method(), answers=NO_DEVICE_NO_BACKUP),
        facts(method(), backup(), answers=NO_DEVICE_NO_BACKUP),
        facts(method(), answers=TWO_MISSES),
        facts(method(), answers=NUMBER_CHANGED),
        facts(method(kind="authenticator_app", has_phone=False), answers=NO_DEVICE),
    ],
)
def test_losing_the_device_leads_to_the_cancel_flow(f: Facts) -> None:
    step = decide(f).step
    assert step.code == "cancel_2sv_no_device_access"
    assert "Cancel two-step verification" in step.instructions
    assert "I don't have access to that device" in step.instructions


def test_verify_phone_number_never_shows_the_number() -> None:
    step = decide(facts(method(), answers=HAS_DEVICE)).step
    assert "say" in step.instructions
    assert "type it" in step.instructions
    assert not re.search(r"\d{3}", step.instructions + step.reason)


# --- Step details --------------------------------------------------------------------


def test_wait_for_lock_expiry_carries_the_countdown_and_the_cancel_alternative() -> None:
    step = decide(facts(locked())).step
    assert step.alternatives == ("cancel_2sv_no_device_access",)
    assert step.seconds_remaining == 5 * 3600 + 30 * 60
    assert "2025-03-01 17:30 UTC" in step.reason
    assert "more than 200" in step.reason
    assert "5 h 30 min" in step.instructions
    assert step.method_id == "m-primary"


def test_wait_for_lock_expiry_computes_seconds_from_locked_until() -> None:
    step = decide(facts(locked(seconds_remaining=None))).step
    assert step.seconds_remaining == 5 * 3600 + 30 * 60


def test_ask_steps_carry_their_question() -> None:
    device = decide(facts(method())).step
    assert device.question is not None
    assert device.question.field == "has_device_access"
    assert device.question.prompt
    backup_step = decide(facts(locked(), backup())).step
    assert backup_step.question is not None
    assert backup_step.question.field == "has_backup_device_access"
    recheck = decide(facts(method(), answers=MISMATCH)).step
    assert recheck.question is not None
    assert recheck.question.field == "phone_number_changed"
    assert recheck.question.prompt == "Has the number of this phone changed since 2SV was set up?"
    assert all(
        s.question is None
        for s in ALL_STEPS
        if s.code not in {"ask_device_access", "ask_backup_device_access", "recheck_phone_number"}
    )


def test_lookup_actions() -> None:
    check = decide(facts(method(), answers=ALL_OK)).step
    assert check.action is not None
    assert (check.action.method, check.action.url) == (
        "POST",
        "/api/v1/customers/cust-1/twosv/delivery-lookups/",
    )
    retry = decide(facts(method(), answers=ALL_OK, latest_lookup=lookup("failed"))).step
    assert retry.action is not None
    assert (retry.action.method, retry.action.url) == (
        "POST",
        "/api/v1/customers/cust-1/twosv/delivery-lookups/",
    )
    wait = decide(facts(method(), answers=ALL_OK, latest_lookup=lookup("running"))).step
    assert wait.action is not None
    assert (wait.action.method, wait.action.url) == ("GET", "/api/v1/twosv/delivery-lookups/lk-1/")


def test_verify_phone_number_action_needs_a_session() -> None:
    with_session = decide(facts(method(), answers=HAS_DEVICE)).step
    assert with_session.action is not None
    assert (with_session.action.method, with_session.action.url) == (
        "POST",
        "/api/v1/twosv/sessions/s-1/verify-phone/",
    )
    assert decide(facts(method(), answers=HAS_DEVICE, session_id=None)).step.action is None


def test_cancel_action_links_to_the_article_when_set() -> None:
    step = decide(facts(method(), answers=NO_DEVICE)).step
    assert step.action is not None
    assert (step.action.method, step.action.url) == ("GET", CANCEL_URL)
    assert decide(facts(method(), answers=NO_DEVICE, cancel_2sv_url="")).step.action is None


def test_reasons_state_the_facts() -> None:
    assert decide(facts(locked(), backup())).step.reason.startswith(
        "The primary SMS method is locked until 2025-03-01 17:30 UTC"
    )
    assert "no access to the device" in decide(facts(method(), answers=NO_DEVICE)).step.reason
    assert "doesn't match" in decide(facts(method(), answers=MISMATCH)).step.reason
    assert "2 times in a row" in decide(facts(method(), answers=TWO_MISSES)).step.reason
    assert (
        "changed since 2SV was set up"
        in decide(facts(method(), answers=NUMBER_CHANGED)).step.reason
    )
    assert (
        "no access to the backup device"
        in decide(facts(method(), backup(), answers=NO_DEVICE_NO_BACKUP)).step.reason
    )
    assert "no usable backup" in decide(facts(method(), answers=NO_DEVICE)).step.reason
    stale = facts(method(), answers=ALL_OK, latest_lookup=lookup(age=timedelta(minutes=30)))
    assert "more than 10 min ago" in decide(stale).step.reason
    assert "No delivery lookup" in decide(facts(method(), answers=ALL_OK)).step.reason


def test_article_sections() -> None:
    by_code = {s.code: s.article_section for s in ALL_STEPS}
    assert by_code["no_2sv_enrolled"] is None
    assert by_code["cancel_2sv_no_device_access"] == "I don't have the device I set up for 2SV"
    assert by_code["use_backup_method"] == "If you set up a backup 2SV method"
    assert by_code["ask_device_access"] == "General steps for troubleshooting"
    assert "locked this verification method" in (by_code["wait_for_lock_expiry"] or "")
    assert "India" in (by_code["regional_provider_issue"] or "")


def test_regional_step_uses_the_admins_message() -> None:
    step = decide(delivered_so_far("regional_provider_issue", phone_region="IN")).step
    assert "reaching numbers in India" in step.instructions
    assert step.alternatives == ()
    with_backup = facts(
        method(phone_region="IN"),
        backup(),
        answers=ALL_OK,
        latest_lookup=lookup(verdict="regional_provider_issue"),
    )
    assert decide(with_backup).step.alternatives == ("use_backup_method",)


def test_carrier_block_lists_the_sender_numbers() -> None:
    f = replace(
        delivered_so_far("carrier_filtered"), sender_numbers=("+1 480-360-5516", "+44 20 7946 0000")
    )
    step = decide(f).step
    assert "+1 480-360-5516" in step.instructions
    assert "+44 20 7946 0000" in step.instructions


# --- P and the decision --------------------------------------------------------------


def test_primary_method_prefers_the_session_method() -> None:
    f = facts(method(), backup(), session_method_id="m-backup")
    p = subject_method(f)
    assert p is not None
    assert p.method_id == "m-backup"
    decision = decide(replace(f, answers=HAS_DEVICE))
    assert decision.method_id == "m-backup"
    # The backup is an authenticator app: no delivery to check.
    assert (decision.step.code, decision.step.rule) == ("problem_lies_elsewhere", "R8")


def test_session_method_override_changes_the_usable_backup() -> None:
    # With the backup as P, a locked P has no other backup: wait rather than use it.
    f = facts(
        method(),
        locked("m-backup", kind="sms", role="backup"),
        session_method_id="m-backup",
        answers=BACKUP_OK,
    )
    assert decide(f).step.code == "wait_for_lock_expiry"
    assert decide(replace(f, session_method_id=None)).step.code == "ask_device_access"


def test_primary_method_ignores_a_removed_session_method() -> None:
    f = facts(method(), backup(active=False), session_method_id="m-backup")
    p = subject_method(f)
    assert p is not None
    assert p.method_id == "m-primary"


def test_primary_method_falls_back_to_the_oldest_active_method() -> None:
    f = facts(
        method(active=False),
        backup("m-new", enrolled_at=NOW - timedelta(days=1)),
        backup("m-old", enrolled_at=NOW - timedelta(days=9)),
    )
    p = subject_method(f)
    assert p is not None
    assert p.method_id == "m-old"
    assert subject_method(facts(method(active=False))) is None


def test_decision_carries_p_and_the_no_code_link() -> None:
    with_backup = decide(facts(method(), backup()))
    assert with_backup.method_id == "m-primary"
    assert with_backup.step.method_id == "m-primary"
    assert with_backup.no_code_link_visible is True
    assert decide(facts(method())).no_code_link_visible is False
    assert decide(facts(method(), backup(active=False))).no_code_link_visible is False
    # A locked backup still shows "No code?" in the login window.
    assert decide(facts(method(), locked("m-backup", role="backup"))).no_code_link_visible is True
    none = decide(facts())
    assert none.method_id is None
    assert none.step.method_id is None


def test_decision_includes_the_advisories() -> None:
    f = facts(method(), backup())
    assert decide(f).advisories == advisories(f)


# --- Advisories ----------------------------------------------------------------------


def codes(items: tuple[Advisory, ...]) -> list[tuple[str, str | None]]:
    return [(a.code, a.method_id) for a in items]


def test_backup_hidden() -> None:
    found = advisories(facts(method(kind="email"), backup()))
    assert codes(found) == [("backup_hidden", None)]
    assert "No code?" in found[0].message
    assert "backup device" in found[0].message


def test_backup_hidden_absent_for_a_visible_or_removed_backup() -> None:
    assert advisories(facts(method(kind="email"), backup(visible_in_crm=True))) == ()
    assert advisories(facts(method(kind="email"), backup(active=False))) == ()


def test_backup_hidden_once_for_several_backups() -> None:
    found = advisories(facts(method(kind="email"), backup("b1"), backup("b2")))
    assert codes(found) == [("backup_hidden", None)]


def test_carrier_hint_per_phone_method() -> None:
    f = facts(
        method(),
        backup("m-voice", kind="voice", visible_in_crm=True, has_phone=True),
        method("m-email", kind="email", role="backup", visible_in_crm=True),
        sender_numbers=("+1 480-360-5516", "+1 480-360-5517"),
    )
    found = advisories(f)
    assert codes(found) == [("carrier_hint", "m-primary"), ("carrier_hint", "m-voice")]
    assert all("+1 480-360-5516, +1 480-360-5517" in a.message for a in found)


def test_carrier_hint_absent_for_other_kinds_and_removed_methods() -> None:
    f = facts(
        method(active=False),
        method("m-email", kind="email", role="backup", visible_in_crm=True),
        method("m-key", kind="security_key", role="backup", visible_in_crm=True),
    )
    assert advisories(f) == ()


def test_regional_provider() -> None:
    found = advisories(facts(method(kind="email", phone_region="IN")))
    assert codes(found) == [("regional_provider", "m-primary")]
    assert (
        found[0].message
        == "Our text message provider Twilio might have problems reaching numbers in India."
    )


def test_regional_provider_absent() -> None:
    assert advisories(facts(method(kind="email", phone_region="US"))) == ()
    assert advisories(facts(method(kind="email", phone_region=None))) == ()
    assert advisories(facts(method(kind="email", phone_region="IN"), regional_advisories={})) == ()
    assert advisories(facts(method(kind="email", phone_region="IN", active=False))) == ()


def test_approaching_lock_at_ninety_percent() -> None:
    found = advisories(facts(method(kind="email", resend_count=180)))
    assert codes(found) == [("approaching_lock", "m-primary")]
    assert "180/200" in found[0].message
    assert "resend again" in found[0].message
    custom = advisories(facts(method(kind="email", resend_count=9), lock_threshold=10))
    assert codes(custom) == [("approaching_lock", "m-primary")]
    assert "9/10" in custom[0].message


def test_approaching_lock_absent() -> None:
    assert advisories(facts(method(kind="email", resend_count=179))) == ()
    assert advisories(facts(locked(kind="email", resend_count=199))) == ()
    assert advisories(facts(method(kind="email", resend_count=199, active=False))) == ()


def test_advisory_order() -> None:
    f = facts(
        method(phone_region="IN", resend_count=195),
        backup("m-voice", kind="voice", has_phone=True, phone_region="IN", resend_count=190),
    )
    found = advisories(f)
    assert codes(found) == [
        ("approaching_lock", "m-primary"),
        ("approaching_lock", "m-voice"),
        ("regional_provider", "m-primary"),
        ("regional_provider", "m-voice"),
        ("carrier_hint", "m-primary"),
        ("carrier_hint", "m-voice"),
        ("backup_hidden", None),
    ]
    assert [a.severity for a in found] == ["warning"] * 4 + ["info"] * 3


def test_advisory_order_puts_every_warning_before_any_info() -> None:
    f = facts(
        method(phone_region="IN", resend_count=195, phone_changed_at=NOW - timedelta(days=2)),
        locked("m-voice", kind="voice", role="backup", phone_region="US"),
        backup(),
        delivery_incidents=MappingProxyType({"IN": NOW - timedelta(minutes=20)}),
    )
    found = advisories(f)
    assert [a.code for a in found] == [
        "approaching_lock",
        "method_locked",
        "number_recently_changed",
        "delivery_incident",
        "regional_provider",
        "carrier_hint",
        "backup_hidden",
    ]
    assert [a.severity for a in found] == ["warning"] * 5 + ["info"] * 2


def test_a_succeeded_lookup_without_a_verdict_is_run_again() -> None:
    f = facts(method(), answers=ALL_OK, latest_lookup=lookup(verdict=None))
    step = decide(f).step
    assert (step.code, step.rule) == ("check_ats_delivery", "R8")
    assert "no readable result" in step.reason


def test_advisory_messages_read_well() -> None:
    f = facts(
        method(phone_region="IN", resend_count=185),
        backup(),
    )
    for advisory in advisories(f):
        assert advisory.message.strip()
        assert "{" not in advisory.message
    messages = {a.code: a.message for a in advisories(f)}
    assert "+1 480-360-5516" in messages["carrier_hint"]
    assert "Don't tell the customer to resend again" in messages["approaching_lock"]


# --- Issue 17: locks elsewhere, changed numbers, rechecks, wording -------------------


def test_method_locked_for_every_lock_but_the_steps_own() -> None:
    f = facts(
        method(),
        locked("m-voice", kind="voice", role="backup", visible_in_crm=True),
        answers=HAS_DEVICE,
    )
    decision = decide(f)
    assert decision.step.method_id == "m-primary"
    [advisory] = [a for a in decision.advisories if a.code == "method_locked"]
    assert (advisory.method_id, advisory.locked_until) == ("m-voice", LOCKED_UNTIL)
    assert advisory.severity == "warning"
    assert "2025-03-01 17:30 UTC" in advisory.message
    assert "5 h 30 min" in advisory.message


def test_method_locked_not_for_the_method_the_step_is_about() -> None:
    # P's lock is the step itself (R4); a removed method's lock says nothing.
    f = facts(locked(), locked("m-old", role="backup", active=False))
    assert decide(f).step.code == "wait_for_lock_expiry"
    assert "method_locked" not in [a.code for a in decide(f).advisories]


def test_method_locked_when_the_session_method_is_the_unlocked_backup() -> None:
    f = facts(locked(), backup(), session_method_id="m-backup", answers=HAS_DEVICE)
    found = [(a.code, a.method_id) for a in decide(f).advisories]
    assert ("method_locked", "m-primary") in found


def test_number_recently_changed_within_30_days() -> None:
    changed = NOW - timedelta(days=2, hours=3)
    found = advisories(facts(method(phone_changed_at=changed)))
    [advisory] = [a for a in found if a.code == "number_recently_changed"]
    assert advisory.method_id == "m-primary"
    assert advisory.severity == "warning"
    assert "2025-02-27 09:00 UTC" in advisory.message
    assert "2 days ago" in advisory.message


@pytest.mark.parametrize(
    "m",
    [
        method(phone_changed_at=None),
        method(phone_changed_at=NOW - timedelta(days=30)),
        method(phone_changed_at=NOW - timedelta(days=2), active=False),
        method(kind="email", phone_changed_at=NOW - timedelta(days=2)),
    ],
    ids=["never", "30 days ago", "removed", "email"],
)
def test_number_recently_changed_absent(m: MethodFacts) -> None:
    assert "number_recently_changed" not in [a.code for a in advisories(facts(m))]


@pytest.mark.parametrize(
    ("m", "shown"),
    [
        (method(), True),
        (method(latest_verdict="carrier_filtered"), True),
        (method(kind="voice", latest_verdict="unreachable"), True),
        (method(latest_verdict="delivered"), False),
        (locked(), False),
        (method(kind="email"), False),
    ],
    ids=["no lookup", "filtered", "voice unreachable", "delivered", "locked", "email"],
)
def test_carrier_hint_only_for_unlocked_phones_not_known_delivered(
    m: MethodFacts, shown: bool
) -> None:
    found = [a for a in advisories(facts(m)) if a.code == "carrier_hint"]
    assert bool(found) is shown
    assert all(a.severity == "info" for a in found)


def test_a_match_after_a_miss_goes_on_to_ats() -> None:
    assert decide(facts(method(), answers=MISMATCH)).step.code == "recheck_phone_number"
    step = decide(facts(method(), answers=MATCH_AFTER_MISS)).step
    assert (step.code, step.rule) == ("check_ats_delivery", "R8")


def test_recheck_asks_for_the_number_again_and_whether_it_changed() -> None:
    step = decide(facts(method(), answers=MISMATCH)).step
    assert step.action is not None
    assert (step.action.method, step.action.url) == (
        "POST",
        "/api/v1/twosv/sessions/s-1/verify-phone/",
    )
    assert "once more" in step.instructions
    assert "changed since they set up 2SV" in step.instructions
    assert "Never say the number on file" in step.instructions
    assert step.alternatives == ()
    assert not re.search(r"\d{3}", step.instructions + step.reason)


def test_first_question_with_a_usable_backup_leads_to_the_backup_question() -> None:
    with_backup = decide(facts(method(), backup())).step
    assert with_backup.code == "ask_device_access"
    assert "Cancel two-step verification" not in with_backup.instructions
    assert "backup" in with_backup.instructions
    # No, then: the backup question, as the first step said.
    assert decide(facts(method(), backup(), answers=NO_DEVICE)).step.code == (
        "ask_backup_device_access"
    )
    without = decide(facts(method())).step
    assert "Cancel two-step verification" in without.instructions
    locked_backup = decide(facts(method(), locked("m-b", kind="voice", role="backup"))).step
    assert "Cancel two-step verification" in locked_backup.instructions


def test_india_step_says_what_the_backup_situation_is() -> None:
    lookup_ = lookup(verdict="regional_provider_issue")
    none = decide(
        facts(method(phone_region="IN"), answers=ALL_OK, latest_lookup=lookup_)
    ).step.instructions
    assert "If the customer set up a backup" not in none
    assert "no usable backup method" in none
    with_backup = decide(
        facts(method(phone_region="IN"), backup(), answers=ALL_OK, latest_lookup=lookup_)
    ).step.instructions
    assert "No code?" in with_backup
    assert "the backup authenticator app method" in with_backup
    no_device = decide(
        facts(
            method(phone_region="IN"),
            backup(),
            answers=replace(ALL_OK, has_backup_device_access=False),
            latest_lookup=lookup_,
        )
    ).step.instructions
    assert "no access to their backup device" in no_device
