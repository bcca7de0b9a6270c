"""GET /api/v1/customers/{id}/twosv/: what the agent's panel shows (docs/SPEC.md §4, §5)."""

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from tests.builders import AT_ONCE, METHOD_KEYS, T0, enroll, ingest, lock, parse_time, resends
from tests.factories import CustomerFactory
from twosv.models import AuditEntry, DeliveryLookup, Method, RegionalAdvisory, SenderNumber

US_NUMBER = "+14155550123"
IN_NUMBER = "+919876543210"
GB_NUMBER = "+442079460958"
INDIA_ADVISORY = "Our text message provider Twilio might have problems reaching numbers in India."

STEP_KEYS = {
    "code",
    "title",
    "instructions",
    "reason",
    "rule",
    "article_section",
    "question",
    "action",
    "alternatives",
    "seconds_remaining",
}

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]

# State is built the way the identity system builds it: through the ingestion service
# (tests/builders.py).


def add_lookup(
    method_id: str,
    status: str,
    verdict: str = "",
    *,
    finished_ago: timedelta | None = timedelta(minutes=1),
) -> DeliveryLookup:
    method = Method.objects.get(method_id=method_id)
    finished = status in {"succeeded", "failed"}
    return DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        status=status,
        verdict=verdict,
        period_start=T0 - timedelta(hours=24),
        finished_at=T0 - finished_ago if finished and finished_ago is not None else None,
        failure_reason="ATS answered 503 five times." if status == "failed" else "",
    )


def state_url(customer_id: str) -> str:
    return f"/api/v1/customers/{quote(customer_id, safe='')}/twosv/"


def read_state(client: APIClient, customer_id: str) -> dict[str, Any]:
    response = client.get(state_url(customer_id))
    assert response.status_code == 200, response.content
    return response.json()


def method_in(body: dict[str, Any], method_id: str) -> dict[str, Any]:
    return next(m for m in body["methods"] if m["id"] == method_id)


def advisory_codes(body: dict[str, Any], method_id: str | None = None) -> list[str]:
    return [
        a["code"]
        for a in body["advisories"]
        if method_id is None or a.get("method_id") == method_id
    ]


# ---------------------------------------------------------------------------------------------
# The fields of docs/SPEC.md section 5
# ---------------------------------------------------------------------------------------------


def test_every_field_of_the_state_is_present_with_its_type(agent_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    enroll("cust-1", "m-sms", label="Work phone")
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")
    enroll("cust-1", "m-mail", kind="email", role="backup", email="ada@example.com")
    ingest(event_type="method_removed", customer_id="cust-1", method_id="m-mail")
    lock("m-sms", customer_id="cust-1", step=AT_ONCE, at=T0 - timedelta(hours=1))
    add_lookup("m-sms", "succeeded", "delivered")

    body = read_state(agent_client, "cust-1")

    assert set(body) == {
        "customer",
        "server_time",
        "no_code_link_visible",
        "methods",
        "advisories",
        "latest_lookup",
        "next_step",
    }
    assert body["customer"]["customer_id"] == "cust-1"
    assert isinstance(body["customer"]["display_name"], str)
    assert parse_time(body["server_time"]) == T0
    assert body["no_code_link_visible"] is True

    assert [m["id"] for m in body["methods"]] == ["m-sms", "m-voice", "m-app", "m-mail"]
    for method in body["methods"]:
        assert set(method) == METHOD_KEYS
        assert isinstance(method["kind"], str)
        assert method["role"] in {"primary", "backup"}
        assert isinstance(method["hidden_from_crm"], bool)
        assert isinstance(method["label"], str)
        assert method["status"] in {"active", "locked", "removed"}
        if method["kind"] in {"sms", "voice", "email"}:
            assert set(method["resends"]) == {"count", "threshold", "blocked"}
            assert isinstance(method["resends"]["count"], int)
            assert isinstance(method["resends"]["blocked"], int)
            assert method["resends"]["threshold"] == 3
        else:
            assert method["resends"] is None

    sms = method_in(body, "m-sms")
    assert sms["label"] == "Work phone"
    assert sms["status"] == "locked"
    assert set(sms["phone"]) == {"masked", "country_code", "region", "changed_at"}
    assert sms["phone"]["changed_at"] is None  # never changed since enrolment
    assert isinstance(sms["phone"]["masked"], str)
    assert sms["phone"]["country_code"] == 1
    assert sms["phone"]["region"] == "US"
    assert set(sms["lock"]) == {"locked_at", "locked_until", "seconds_remaining", "reason"}
    assert parse_time(sms["lock"]["locked_at"]) == T0 - timedelta(hours=1)
    assert parse_time(sms["lock"]["locked_until"]) == T0 + timedelta(hours=23)
    assert sms["lock"]["seconds_remaining"] == 23 * 3600
    assert isinstance(sms["lock"]["reason"], str)
    assert sms["lock"]["reason"]
    assert method_in(body, "m-voice")["phone"]["region"] == "GB"
    assert method_in(body, "m-app")["phone"] is None
    assert method_in(body, "m-app")["lock"] is None

    for advisory in body["advisories"]:
        assert {"code", "message", "severity"} <= set(advisory)
        assert set(advisory) <= {"code", "message", "severity", "method_id", "locked_until"}
        assert advisory["severity"] in {"warning", "info"}
        assert isinstance(advisory["message"], str)

    lookup = body["latest_lookup"]
    assert lookup["method_id"] == "m-sms"
    assert lookup["status"] == "succeeded"
    assert lookup["verdict"] == "delivered"
    assert parse_time(lookup["finished_at"]) == T0 - timedelta(minutes=1)
    assert lookup["url"] == f"/api/v1/twosv/delivery-lookups/{lookup['id']}/"

    step = body["next_step"]
    assert set(step) >= STEP_KEYS
    # P is locked and the hidden authenticator backup is usable: ask about the backup device.
    assert step["code"] == "ask_backup_device_access"
    assert step["rule"] == "R3"
    assert all(isinstance(step[key], str) and step[key] for key in ("title", "instructions"))
    assert isinstance(step["reason"], str)
    assert step["reason"]
    assert isinstance(step["article_section"], str)
    assert step["question"] == {
        "field": "has_backup_device_access",
        "prompt": step["question"]["prompt"],
    }
    assert isinstance(step["question"]["prompt"], str)
    assert step["action"] is None
    assert step["alternatives"] == []
    assert step["seconds_remaining"] is None


def test_a_customer_without_a_lookup_has_latest_lookup_null(agent_client):
    enroll("cust-1", "m-sms")

    body = read_state(agent_client, "cust-1")

    assert body["latest_lookup"] is None
    assert body["no_code_link_visible"] is False
    assert method_in(body, "m-sms")["lock"] is None


def test_latest_lookup_is_the_newest_of_the_method_in_question(agent_client, time_machine):
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    enroll("cust-2", "m-other")
    time_machine.move_to(T0 - timedelta(hours=3), tick=False)
    add_lookup("m-sms", "failed")
    time_machine.move_to(T0 - timedelta(hours=2), tick=False)
    newest = add_lookup("m-sms", "succeeded", "delivered")
    # Newer, but of a backup method and of another customer: neither is the agent's question.
    time_machine.move_to(T0 - timedelta(hours=1), tick=False)
    add_lookup("m-voice", "succeeded", "carrier_filtered")
    add_lookup("m-other", "succeeded", "invalid_number")
    time_machine.move_to(T0, tick=False)

    lookup = read_state(agent_client, "cust-1")["latest_lookup"]

    assert lookup["id"] == str(newest.id)
    assert lookup["method_id"] == "m-sms"
    assert lookup["verdict"] == "delivered"
    assert parse_time(lookup["created_at"]) == T0 - timedelta(hours=2)


def test_a_customer_without_methods_is_told_to_enrol(agent_client):
    CustomerFactory(customer_id="cust-bare")

    body = read_state(agent_client, "cust-bare")

    assert body["customer"]["customer_id"] == "cust-bare"
    assert body["methods"] == []
    assert body["latest_lookup"] is None
    assert body["next_step"]["rule"] == "R1"


@pytest.mark.parametrize(
    ("number", "country_code", "region", "last_two"),
    [
        (US_NUMBER, 1, "US", "23"),
        (IN_NUMBER, 91, "IN", "10"),
        (GB_NUMBER, 44, "GB", "58"),
    ],
)
def test_masked_phone_shows_only_the_country_code_and_last_two_digits(
    agent_client, number, country_code, region, last_two
):
    enroll("cust-1", "m-sms", phone_number=number)

    phone = method_in(read_state(agent_client, "cust-1"), "m-sms")["phone"]

    assert phone["country_code"] == country_code
    assert phone["region"] == region
    assert phone["masked"].startswith(f"+{country_code} ")
    assert phone["masked"].endswith(last_two)
    digits = "".join(ch for ch in phone["masked"] if ch.isdigit())
    assert digits == f"{country_code}{last_two}"


def test_backup_methods_are_hidden_from_crm_unless_enrolled_visible(agent_client):
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")
    enroll("cust-1", "m-voice", kind="voice", role="backup", visible_in_crm=True)

    body = read_state(agent_client, "cust-1")

    assert method_in(body, "m-sms")["hidden_from_crm"] is False
    assert method_in(body, "m-app")["hidden_from_crm"] is True
    assert method_in(body, "m-voice")["hidden_from_crm"] is False


def test_removed_method_has_status_removed_and_no_lock(agent_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-voice", kind="voice", role="backup")
    lock("m-voice", customer_id="cust-1", step=AT_ONCE, at=T0 - timedelta(hours=2))
    ingest(event_type="method_removed", customer_id="cust-1", method_id="m-voice")

    voice = method_in(read_state(agent_client, "cust-1"), "m-voice")

    assert voice["status"] == "removed"
    assert voice["lock"] is None


def test_resend_count_drops_requests_older_than_the_window_at_read_time(agent_client, time_machine):
    enroll("cust-1", "m-sms")
    resends("m-sms", 3, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(hours=20))
    resends("m-sms", 2, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(hours=2))

    assert method_in(read_state(agent_client, "cust-1"), "m-sms")["resends"]["count"] == 5

    # 24 h after the first three they fall out of the window, with no new event.
    time_machine.move_to(T0 + timedelta(hours=4), tick=False)
    assert method_in(read_state(agent_client, "cust-1"), "m-sms")["resends"]["count"] == 2

    time_machine.move_to(T0 + timedelta(hours=22, seconds=1), tick=False)
    assert method_in(read_state(agent_client, "cust-1"), "m-sms")["resends"] == {
        "count": 0,
        "threshold": 200,
        "blocked": 0,
    }


def test_lock_counts_down_and_disappears_at_locked_until(agent_client, time_machine):
    enroll("cust-1", "m-sms")
    locked_at = T0 - timedelta(hours=1)
    lock("m-sms", customer_id="cust-1", step=AT_ONCE, at=locked_at)
    locked_until = locked_at + timedelta(hours=24)

    body = read_state(agent_client, "cust-1")
    sms = method_in(body, "m-sms")
    assert sms["status"] == "locked"
    assert parse_time(sms["lock"]["locked_until"]) == locked_until
    assert sms["lock"]["seconds_remaining"] == 23 * 3600
    assert sms["resends"]["count"] == 0
    assert body["next_step"]["code"] == "wait_for_lock_expiry"
    assert body["next_step"]["seconds_remaining"] == 23 * 3600

    time_machine.move_to(T0 + timedelta(hours=2), tick=False)
    body = read_state(agent_client, "cust-1")
    assert method_in(body, "m-sms")["lock"]["seconds_remaining"] == 21 * 3600
    assert body["next_step"]["seconds_remaining"] == 21 * 3600

    time_machine.move_to(locked_until - timedelta(seconds=1), tick=False)
    body = read_state(agent_client, "cust-1")
    assert method_in(body, "m-sms")["lock"]["seconds_remaining"] == 1
    assert body["next_step"]["seconds_remaining"] == 1

    time_machine.move_to(locked_until, tick=False)
    body = read_state(agent_client, "cust-1")
    sms = method_in(body, "m-sms")
    assert sms["status"] == "active"
    assert sms["lock"] is None
    assert body["next_step"]["code"] == "ask_device_access"
    assert body["next_step"]["seconds_remaining"] is None


# ---------------------------------------------------------------------------------------------
# Unknown and malformed customer ids; the audit trail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "customer_id",
    [
        "nobody",
        "x' OR '1'='1",
        "a;DROP TABLE twosv_customer;--",
        '"; SELECT * FROM auth_user; --',
        "%' OR 1=1 --",
        "a" * 65,
        "cust-1\n",
        "cust-1\x00",
        "ü",
        "..",
        " ",
    ],
)
def test_unknown_or_malformed_customer_is_404_with_a_code(agent_client, customer_id):
    enroll("cust-1", "m-sms")

    response = agent_client.get(state_url(customer_id))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_customer"
    assert not AuditEntry.objects.filter(action="state_read").exists()
    # The real customer is untouched by whatever the id tried.
    assert read_state(agent_client, "cust-1")["customer"]["customer_id"] == "cust-1"


def test_a_64_character_id_is_a_valid_id(agent_client):
    customer_id = "c" * 64
    enroll(customer_id, "m-sms")

    assert read_state(agent_client, customer_id)["customer"]["customer_id"] == customer_id


def test_every_read_writes_one_state_read_audit_entry(agent_client, agent):
    enroll("cust-1", "m-sms")

    read_state(agent_client, "cust-1")
    read_state(agent_client, "cust-1")

    entries = AuditEntry.objects.filter(action="state_read")
    assert entries.count() == 2
    for entry in entries:
        assert entry.actor == agent
        assert entry.actor_username == "agent"
        assert entry.customer_ref == "cust-1"
        assert entry.result == "ok"
        assert entry.details == {"next_step": "ask_device_access"}
        assert entry.request_id


def test_state_needs_an_agent(client, producer_client, staff_client):
    enroll("cust-1", "m-sms")

    anonymous = client.get(state_url("cust-1"))
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Token")
    assert producer_client.get(state_url("cust-1")).status_code == 403
    # Admins read what agents read.
    assert staff_client.get(state_url("cust-1")).status_code == 200


# ---------------------------------------------------------------------------------------------
# The rules R1-R16 through the API: the bare state endpoint, or a session with its answers
# ---------------------------------------------------------------------------------------------


def _removed(customer_id: str) -> None:
    enroll(customer_id, "m-sms")
    ingest(event_type="method_removed", customer_id=customer_id, method_id="m-sms")


def _sms(customer_id: str) -> None:
    enroll(customer_id, "m-sms")


def _sms_backup(customer_id: str) -> None:
    enroll(customer_id, "m-sms")
    enroll(customer_id, "m-app", kind="authenticator_app", role="backup")


def _locked(customer_id: str) -> None:
    enroll(customer_id, "m-sms")
    lock("m-sms", customer_id=customer_id, step=AT_ONCE, at=T0 - timedelta(hours=1))


def _locked_backup(customer_id: str) -> None:
    _locked(customer_id)
    enroll(customer_id, "m-app", kind="authenticator_app", role="backup")


def _locked_backup_locked(customer_id: str) -> None:
    _locked(customer_id)
    enroll(customer_id, "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    lock("m-voice", customer_id=customer_id, step=AT_ONCE, at=T0 - timedelta(hours=1))


def _authenticator(customer_id: str) -> None:
    enroll(customer_id, "m-app", kind="authenticator_app", role="primary")


def _email(customer_id: str) -> None:
    enroll(customer_id, "m-mail", kind="email", role="primary", email="ada@example.com")


SCENARIOS = {
    "removed": _removed,
    "sms": _sms,
    "sms+backup": _sms_backup,
    "locked": _locked,
    "locked+backup": _locked_backup,
    "locked+locked backup": _locked_backup_locked,
    "authenticator": _authenticator,
    "email": _email,
}

STATE = None  # the bare state endpoint: every answer unknown
DEVICE = {"has_device_access": True}
NO_DEVICE = {"has_device_access": False}
RIGHT = "(415) 555-0123"
WRONG = "(415) 555-0124"
TWICE_WRONG = (WRONG, WRONG)
CHANGED = {**DEVICE, "phone_number_changed": True}


def lookup_row(status: str, verdict: str = "", minutes_ago: int = 1) -> dict[str, Any]:
    return {"status": status, "verdict": verdict, "finished_ago": timedelta(minutes=minutes_ago)}


# (scenario, lookup, session answers or STATE, number(s) the caller says, step code, rule)
RULE_ROWS = [
    pytest.param("removed", None, STATE, None, "no_2sv_enrolled", "R1", id="R1"),
    pytest.param(
        "locked+backup",
        None,
        {"has_backup_device_access": True},
        None,
        "use_backup_method",
        "R2",
        id="R2",
    ),
    pytest.param(
        "locked+backup", None, STATE, None, "ask_backup_device_access", "R3", id="R3-state"
    ),
    pytest.param(
        "locked+backup", None, DEVICE, None, "ask_backup_device_access", "R3", id="R3-session"
    ),
    pytest.param("locked", None, STATE, None, "wait_for_lock_expiry", "R4", id="R4-no-backup"),
    pytest.param(
        "locked+backup",
        None,
        {"has_backup_device_access": False},
        None,
        "wait_for_lock_expiry",
        "R4",
        id="R4-no-backup-device",
    ),
    pytest.param(
        "locked+locked backup",
        None,
        {"has_backup_device_access": True},
        None,
        "wait_for_lock_expiry",
        "R4",
        id="R4-backup-locked-too",
    ),
    pytest.param("sms", None, STATE, None, "ask_device_access", "R5", id="R5-state"),
    pytest.param("sms+backup", None, {}, None, "ask_device_access", "R5", id="R5-session"),
    pytest.param(
        "sms", None, NO_DEVICE, None, "cancel_2sv_no_device_access", "R6", id="R6-no-device"
    ),
    pytest.param(
        "sms+backup",
        None,
        NO_DEVICE,
        None,
        "ask_backup_device_access",
        "R6",
        id="R6-no-device-backup-unknown",
    ),
    pytest.param(
        "sms+backup",
        None,
        {**NO_DEVICE, "has_backup_device_access": True},
        None,
        "use_backup_method",
        "R6",
        id="R6-no-device-backup-device",
    ),
    pytest.param(
        "sms+backup",
        None,
        {**NO_DEVICE, "has_backup_device_access": False},
        None,
        "cancel_2sv_no_device_access",
        "R6",
        id="R6-no-device-no-backup-device",
    ),
    pytest.param(
        "sms",
        None,
        DEVICE,
        TWICE_WRONG,
        "cancel_2sv_no_device_access",
        "R6",
        id="R6-wrong-number-twice",
    ),
    pytest.param(
        "sms+backup",
        None,
        DEVICE,
        TWICE_WRONG,
        "ask_backup_device_access",
        "R6",
        id="R6-wrong-number-twice-backup-unknown",
    ),
    pytest.param(
        "sms+backup",
        None,
        {**DEVICE, "has_backup_device_access": True},
        TWICE_WRONG,
        "use_backup_method",
        "R6",
        id="R6-wrong-number-twice-backup-device",
    ),
    pytest.param(
        "sms+backup",
        None,
        {**DEVICE, "has_backup_device_access": False},
        TWICE_WRONG,
        "cancel_2sv_no_device_access",
        "R6",
        id="R6-wrong-number-twice-no-backup-device",
    ),
    pytest.param(
        "sms", None, CHANGED, None, "cancel_2sv_no_device_access", "R6", id="R6-number-changed"
    ),
    pytest.param(
        "sms+backup",
        None,
        CHANGED,
        None,
        "ask_backup_device_access",
        "R6",
        id="R6-number-changed-backup-unknown",
    ),
    pytest.param("sms", None, DEVICE, WRONG, "recheck_phone_number", "R6a", id="R6a"),
    pytest.param("sms+backup", None, DEVICE, WRONG, "recheck_phone_number", "R6a", id="R6a-backup"),
    pytest.param(
        "sms",
        None,
        {**DEVICE, "phone_number_changed": False},
        WRONG,
        "recheck_phone_number",
        "R6a",
        id="R6a-number-not-changed",
    ),
    pytest.param(
        "sms", None, DEVICE, (WRONG, RIGHT), "check_ats_delivery", "R8", id="R8-right-after-wrong"
    ),
    pytest.param("sms", None, DEVICE, None, "verify_phone_number", "R7", id="R7"),
    pytest.param("sms", None, DEVICE, RIGHT, "check_ats_delivery", "R8", id="R8-no-lookup"),
    pytest.param(
        "sms",
        lookup_row("succeeded", "delivered", minutes_ago=11),
        DEVICE,
        RIGHT,
        "check_ats_delivery",
        "R8",
        id="R8-stale-lookup",
    ),
    pytest.param("email", None, DEVICE, None, "check_ats_delivery", "R8", id="R8-email"),
    pytest.param(
        "authenticator", None, DEVICE, None, "problem_lies_elsewhere", "R8", id="R8-no-codes"
    ),
    pytest.param(
        "sms", lookup_row("pending"), DEVICE, RIGHT, "wait_for_ats_lookup", "R9", id="R9-pending"
    ),
    pytest.param(
        "sms", lookup_row("running"), DEVICE, RIGHT, "wait_for_ats_lookup", "R9", id="R9-running"
    ),
    pytest.param("sms", lookup_row("failed"), DEVICE, RIGHT, "retry_ats_lookup", "R10", id="R10"),
    pytest.param(
        "sms",
        lookup_row("succeeded", "not_sent"),
        DEVICE,
        RIGHT,
        "escalate_codes_not_sent",
        "R11",
        id="R11",
    ),
    pytest.param(
        "sms",
        lookup_row("succeeded", "carrier_filtered"),
        DEVICE,
        RIGHT,
        "check_carrier_block",
        "R12",
        id="R12-carrier-filtered",
    ),
    pytest.param(
        "sms",
        lookup_row("succeeded", "recipient_blocked"),
        DEVICE,
        RIGHT,
        "check_carrier_block",
        "R12",
        id="R12-recipient-blocked",
    ),
    pytest.param(
        "sms",
        lookup_row("succeeded", "unreachable"),
        DEVICE,
        RIGHT,
        "check_handset_reachable",
        "R13",
        id="R13",
    ),
    pytest.param(
        "sms",
        lookup_row("succeeded", "regional_provider_issue"),
        DEVICE,
        RIGHT,
        "regional_provider_issue",
        "R14",
        id="R14",
    ),
    pytest.param(
        "sms",
        lookup_row("succeeded", "provider_error"),
        DEVICE,
        RIGHT,
        "escalate_provider_error",
        "R15",
        id="R15",
    ),
    pytest.param(
        "sms",
        lookup_row("succeeded", "delivered", minutes_ago=9),
        DEVICE,
        RIGHT,
        "problem_lies_elsewhere",
        "R16",
        id="R16",
    ),
]


@pytest.mark.parametrize(("scenario", "lookup", "answers", "spoken", "code", "rule"), RULE_ROWS)
def test_rule_table_through_the_api(
    agent_client, settings, scenario, lookup, answers, spoken, code, rule
):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3  # a lock in 4 resends keeps the table fast
    SCENARIOS[scenario]("cust-1")
    if lookup is not None:
        method_id = "m-mail" if scenario == "email" else "m-sms"
        add_lookup(method_id, **lookup)

    if answers is STATE:
        step = read_state(agent_client, "cust-1")["next_step"]
    else:
        created = agent_client.post(
            "/api/v1/customers/cust-1/twosv/sessions/", {"answers": answers}, format="json"
        )
        assert created.status_code == 201, created.content
        session_url = f"/api/v1/twosv/sessions/{created.json()['id']}/"
        numbers = (spoken,) if isinstance(spoken, str) else (spoken or ())
        for number in numbers:
            verified = agent_client.post(
                f"{session_url}verify-phone/", {"phone_number": number}, format="json"
            )
            assert verified.status_code == 200, verified.content
        if numbers:
            assert verified.json()["next_step"]["code"] == code
        step = agent_client.get(session_url).json()["next_step"]

    assert (step["code"], step["rule"]) == (code, rule)


def test_the_rule_table_covers_every_rule():
    rules = {param.values[5] for param in RULE_ROWS}
    assert rules == {f"R{n}" for n in range(1, 17)} | {"R6a"}


# ---------------------------------------------------------------------------------------------
# Advisories
# ---------------------------------------------------------------------------------------------


def test_carrier_hint_lists_the_admins_sender_numbers(agent_client):
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")

    body = read_state(agent_client, "cust-1")
    hints = [a for a in body["advisories"] if a["code"] == "carrier_hint"]
    # One per phone method; the authenticator app gets none.
    assert [a["method_id"] for a in hints] == ["m-sms", "m-voice"]
    assert "+1 480-360-5516" in hints[0]["message"]

    SenderNumber.objects.create(phone_number="+12025550143", label="2SV codes (backup route)")
    SenderNumber.objects.create(phone_number="+16175550123", label="retired", active=False)

    message = next(
        a["message"]
        for a in read_state(agent_client, "cust-1")["advisories"]
        if a["code"] == "carrier_hint"
    )
    assert "+1 480-360-5516" in message
    assert "+1 202-555-0143" in message
    assert "617" not in message


def test_no_carrier_hint_without_a_phone_method(agent_client):
    enroll("cust-1", "m-app", kind="authenticator_app", role="primary")
    enroll("cust-1", "m-mail", kind="email", role="backup", email="ada@example.com")

    assert "carrier_hint" not in advisory_codes(read_state(agent_client, "cust-1"))


def test_regional_provider_advisory_for_an_indian_number_until_deactivated(agent_client):
    enroll("cust-1", "m-sms", phone_number=IN_NUMBER)
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=US_NUMBER)

    body = read_state(agent_client, "cust-1")
    regional = [a for a in body["advisories"] if a["code"] == "regional_provider"]
    assert regional == [
        {
            "code": "regional_provider",
            "severity": "warning",
            "message": INDIA_ADVISORY,
            "method_id": "m-sms",
        }
    ]

    # As the admin's change form does it: a save, which also refreshes the cached advisories.
    advisory = RegionalAdvisory.objects.get(region="IN")
    advisory.active = False
    advisory.save()

    assert "regional_provider" not in advisory_codes(read_state(agent_client, "cust-1"))


def test_regional_provider_advisory_follows_the_admins_regions(agent_client):
    enroll("cust-1", "m-sms", phone_number=GB_NUMBER)
    assert "regional_provider" not in advisory_codes(read_state(agent_client, "cust-1"))

    RegionalAdvisory.objects.create(region="GB", message="Delays reaching UK numbers.")

    body = read_state(agent_client, "cust-1")
    assert {
        "code": "regional_provider",
        "severity": "warning",
        "message": "Delays reaching UK numbers.",
        "method_id": "m-sms",
    } in body["advisories"]


def test_approaching_lock_from_180_of_200_resends(agent_client):
    enroll("cust-1", "m-sms")
    resends("m-sms", 179, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(hours=1))

    body = read_state(agent_client, "cust-1")
    assert method_in(body, "m-sms")["resends"]["count"] == 179
    assert "approaching_lock" not in advisory_codes(body)

    resends("m-sms", 1, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(minutes=30))

    body = read_state(agent_client, "cust-1")
    assert method_in(body, "m-sms")["resends"]["count"] == 180
    approaching = [a for a in body["advisories"] if a["code"] == "approaching_lock"]
    assert len(approaching) == 1
    assert approaching[0]["method_id"] == "m-sms"
    assert "180/200" in approaching[0]["message"]


def test_no_approaching_lock_once_the_method_is_locked(agent_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 10
    enroll("cust-1", "m-sms")
    resends("m-sms", 9, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(hours=2))
    assert "approaching_lock" in advisory_codes(read_state(agent_client, "cust-1"))

    resends("m-sms", 2, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(hours=1))

    body = read_state(agent_client, "cust-1")
    assert method_in(body, "m-sms")["status"] == "locked"
    assert "approaching_lock" not in advisory_codes(body)


def test_backup_hidden_when_a_backup_exists_that_the_crm_does_not_show(agent_client):
    enroll("cust-1", "m-sms")
    body = read_state(agent_client, "cust-1")
    assert "backup_hidden" not in advisory_codes(body)
    assert body["no_code_link_visible"] is False

    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")

    body = read_state(agent_client, "cust-1")
    assert "backup_hidden" in advisory_codes(body)
    assert body["no_code_link_visible"] is True
    hidden = next(a for a in body["advisories"] if a["code"] == "backup_hidden")
    assert "No code?" in hidden["message"]


def test_no_backup_hidden_when_the_backup_is_visible_or_removed(agent_client):
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-voice", kind="voice", role="backup", visible_in_crm=True)
    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")
    ingest(event_type="method_removed", customer_id="cust-1", method_id="m-app")

    body = read_state(agent_client, "cust-1")

    assert "backup_hidden" not in advisory_codes(body)
    # "No code?" shows for any active backup, visible in the CRM or not.
    assert body["no_code_link_visible"] is True


# ---------------------------------------------------------------------------------------------
# Issue 17: severity and order, every lock on screen, changed numbers, blocked resends
# ---------------------------------------------------------------------------------------------


def test_advisories_carry_a_severity_and_come_warnings_first(agent_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 10
    enroll("cust-1", "m-sms", phone_number=IN_NUMBER)
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")
    resends("m-sms", 9, customer_id="cust-1", step=AT_ONCE, start=T0 - timedelta(hours=1))
    lock("m-voice", customer_id="cust-1", step=AT_ONCE, at=T0 - timedelta(hours=2))
    ingest(
        event_type="phone_number_changed",
        at=T0 - timedelta(days=3),
        customer_id="cust-1",
        method_id="m-sms",
        phone_number="+919876543211",
    )

    body = read_state(agent_client, "cust-1")

    assert [(a["code"], a["severity"], a.get("method_id")) for a in body["advisories"]] == [
        ("approaching_lock", "warning", "m-sms"),
        ("method_locked", "warning", "m-voice"),
        ("number_recently_changed", "warning", "m-sms"),
        ("regional_provider", "warning", "m-sms"),
        ("carrier_hint", "info", "m-sms"),
        ("backup_hidden", "info", None),
    ]


def test_method_locked_names_every_lock_the_step_is_not_about(agent_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    locked_at = T0 - timedelta(hours=2)
    lock("m-voice", customer_id="cust-1", step=AT_ONCE, at=locked_at)

    body = read_state(agent_client, "cust-1")

    assert body["next_step"]["method_id"] == "m-sms"
    [advisory] = [a for a in body["advisories"] if a["code"] == "method_locked"]
    assert advisory["method_id"] == "m-voice"
    assert parse_time(advisory["locked_until"]) == locked_at + timedelta(hours=24)
    assert advisory["severity"] == "warning"
    # Only method_locked carries locked_until.
    assert all("locked_until" not in a for a in body["advisories"] if a is not advisory)

    # The locked primary is the step itself (R4): no advisory repeats it.
    lock("m-sms", customer_id="cust-1", step=AT_ONCE, at=T0 - timedelta(hours=1))
    body = read_state(agent_client, "cust-1")
    assert body["next_step"]["code"] == "wait_for_lock_expiry"
    assert [a["method_id"] for a in body["advisories"] if a["code"] == "method_locked"] == [
        "m-voice"
    ]


def test_a_number_changed_lately_is_dated_on_the_method_and_in_an_advisory(
    agent_client, time_machine
):
    enroll("cust-1", "m-sms")
    assert method_in(read_state(agent_client, "cust-1"), "m-sms")["phone"]["changed_at"] is None
    changed = T0 - timedelta(days=2)
    ingest(
        event_type="phone_number_changed",
        at=changed,
        customer_id="cust-1",
        method_id="m-sms",
        phone_number="+14155550188",
    )

    body = read_state(agent_client, "cust-1")

    assert parse_time(method_in(body, "m-sms")["phone"]["changed_at"]) == changed
    [advisory] = [a for a in body["advisories"] if a["code"] == "number_recently_changed"]
    assert advisory["method_id"] == "m-sms"
    assert "2026-02-28 12:00 UTC" in advisory["message"]
    assert "2 days ago" in advisory["message"]
    assert "+1415" not in advisory["message"]

    # 30 days after the change it is no longer recent; the date stays on the method.
    time_machine.move_to(changed + timedelta(days=30), tick=False)
    body = read_state(agent_client, "cust-1")
    assert "number_recently_changed" not in advisory_codes(body)
    assert parse_time(method_in(body, "m-sms")["phone"]["changed_at"]) == changed


def test_carrier_hint_not_for_a_locked_method_nor_after_delivered(agent_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=GB_NUMBER)
    assert [
        a["method_id"]
        for a in read_state(agent_client, "cust-1")["advisories"]
        if a["code"] == "carrier_hint"
    ] == ["m-sms", "m-voice"]

    delivered = add_lookup("m-sms", "succeeded", "delivered")
    # Older than the next one: the latest lookup is the newest by created_at.
    DeliveryLookup.objects.filter(pk=delivered.pk).update(created_at=T0 - timedelta(minutes=5))
    lock("m-voice", customer_id="cust-1", step=AT_ONCE, at=T0 - timedelta(hours=1))

    assert "carrier_hint" not in advisory_codes(read_state(agent_client, "cust-1"))

    # A later lookup that didn't find the code delivered brings the hint back.
    add_lookup("m-sms", "succeeded", "carrier_filtered", finished_ago=timedelta(seconds=10))
    assert advisory_codes(read_state(agent_client, "cust-1"), "m-sms") == ["carrier_hint"]


def test_resends_count_the_requests_blocked_during_the_lock(agent_client, settings, time_machine):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    enroll("cust-1", "m-sms")
    locked_at = T0 - timedelta(hours=2)
    lock("m-sms", customer_id="cust-1", step=AT_ONCE, at=locked_at)
    resends("m-sms", 4, customer_id="cust-1", start=locked_at + timedelta(minutes=5))

    sms = method_in(read_state(agent_client, "cust-1"), "m-sms")
    assert sms["status"] == "locked"
    assert sms["resends"] == {"count": 0, "threshold": 3, "blocked": 4}

    # A late request during the lock re-folds the method: still counted as blocked.
    ingest(at=locked_at + timedelta(minutes=1), customer_id="cust-1", method_id="m-sms")
    assert method_in(read_state(agent_client, "cust-1"), "m-sms")["resends"]["blocked"] == 5

    # Once the lock ends nothing is refused: the next requests count again.
    time_machine.move_to(locked_at + timedelta(hours=24), tick=False)
    sms = method_in(read_state(agent_client, "cust-1"), "m-sms")
    assert sms["status"] == "active"
    assert sms["resends"] == {"count": 0, "threshold": 3, "blocked": 0}


def test_resends_are_null_for_methods_that_receive_no_codes(agent_client):
    enroll("cust-1", "m-app", kind="authenticator_app")
    enroll("cust-1", "m-key", kind="security_key", role="backup")
    enroll("cust-1", "m-mail", kind="email", role="backup", email="ada@example.com")

    body = read_state(agent_client, "cust-1")

    assert method_in(body, "m-app")["resends"] is None
    assert method_in(body, "m-key")["resends"] is None
    assert method_in(body, "m-mail")["resends"] == {"count": 0, "threshold": 200, "blocked": 0}
