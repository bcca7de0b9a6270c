"""Troubleshooting sessions: answers, phone verification and closing (docs/SPEC.md §4, §5)."""

import json
from datetime import datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests import factories
from tests.builders import T0, enroll, ingest, token_client
from twosv.models import AuditEntry, TroubleshootingSession

NUMBER = "+14155550123"
OTHER_NUMBER = "+14155550124"
SESSION_KEYS = {"id", "customer_id", "method_id", "answers", "phone_number_matches", "next_step"}

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


@pytest.fixture
def customer():
    """cust-1 with a primary SMS method and a hidden authenticator backup."""
    enroll("cust-1", "m-sms")
    enroll("cust-1", "m-app", kind="authenticator_app", role="backup")
    return "cust-1"


def change_number(phone_number: str, *, at: datetime | None = None) -> None:
    """The identity system changes the number of cust-1's SMS method."""
    ingest(
        event_type="phone_number_changed",
        customer_id="cust-1",
        method_id="m-sms",
        at=at,
        phone_number=phone_number,
    )


def start(client: APIClient, customer_id: str = "cust-1", **body: Any) -> dict[str, Any]:
    response = client.post(f"/api/v1/customers/{customer_id}/twosv/sessions/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def url(session: dict[str, Any], action: str = "") -> str:
    return f"/api/v1/twosv/sessions/{session['id']}/{action}"


def patch(client: APIClient, session: dict[str, Any], body: Any):
    return client.patch(url(session), json.dumps(body), content_type="application/json")


def verify(client: APIClient, session: dict[str, Any], number: str):
    return client.post(url(session, "verify-phone/"), {"phone_number": number}, format="json")


def error_code(response) -> str:
    return response.json()["error"]["code"]


# ---------------------------------------------------------------------------------------------
# Start and read
# ---------------------------------------------------------------------------------------------


def test_start_answers_the_session_with_its_next_step(agent_client, customer):
    session = start(agent_client)

    assert set(session) >= SESSION_KEYS | {"closed_at"}
    assert session["customer_id"] == "cust-1"
    assert session["method_id"] == "m-sms"
    assert session["answers"] == {
        "has_device_access": None,
        "has_backup_device_access": None,
        "phone_number_changed": None,
    }
    assert session["phone_number_matches"] is None
    assert session["closed_at"] is None
    assert session["next_step"]["code"] == "ask_device_access"

    read = agent_client.get(url(session))
    assert read.status_code == 200
    assert read.json()["id"] == session["id"]
    assert read.json()["next_step"]["code"] == "ask_device_access"


def test_start_takes_answers_and_a_method(agent_client, customer):
    session = start(
        agent_client,
        method_id="m-app",
        answers={"has_device_access": True},
    )

    assert session["method_id"] == "m-app"
    assert session["answers"]["has_device_access"] is True
    # An authenticator app receives no codes: nothing to verify, nothing to check with ATS.
    assert session["next_step"]["code"] == "problem_lies_elsewhere"


def test_start_refuses_a_method_of_another_customer(agent_client, customer):
    enroll("cust-2", "m-other", phone_number=OTHER_NUMBER)

    response = agent_client.post(
        "/api/v1/customers/cust-1/twosv/sessions/", {"method_id": "m-other"}, format="json"
    )

    assert response.status_code == 404
    assert error_code(response) == "unknown_method"
    assert not TroubleshootingSession.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "m-sms"}, "method"),
        ({"answers": {"has_device": True}}, "answers.has_device"),
        ({"answers": {"phone_number_matches": True}}, "answers.phone_number_matches"),
    ],
)
def test_start_refuses_unknown_fields(agent_client, customer, body, field):
    response = agent_client.post("/api/v1/customers/cust-1/twosv/sessions/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_field"
    assert response.json()["error"]["field"] == field
    assert not TroubleshootingSession.objects.exists()


@pytest.mark.parametrize("customer_id", ["nobody", "x' OR '1'='1", "a" * 65])
def test_start_for_an_unknown_customer_is_404(agent_client, customer, customer_id):
    response = agent_client.post(
        f"/api/v1/customers/{customer_id}/twosv/sessions/", {}, format="json"
    )

    assert response.status_code == 404
    assert error_code(response) == "unknown_customer"


def test_unknown_session_is_404(agent_client, customer):
    response = agent_client.get("/api/v1/twosv/sessions/00000000-0000-4000-8000-000000000000/")

    assert response.status_code == 404
    assert error_code(response) == "unknown_session"


# ---------------------------------------------------------------------------------------------
# PATCH: answers merge, null resets, method switch
# ---------------------------------------------------------------------------------------------


def test_patch_merges_answers(agent_client, customer):
    session = start(agent_client)

    first = patch(agent_client, session, {"answers": {"has_device_access": False}})
    assert first.status_code == 200
    assert first.json()["next_step"]["code"] == "ask_backup_device_access"

    second = patch(agent_client, session, {"answers": {"has_backup_device_access": True}})

    assert second.status_code == 200
    assert second.json()["answers"] == {
        "has_device_access": False,
        "has_backup_device_access": True,
        "phone_number_changed": None,
    }
    assert second.json()["next_step"]["code"] == "use_backup_method"
    assert agent_client.get(url(session)).json()["answers"] == second.json()["answers"]


def test_patch_with_null_resets_an_answer(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": False})

    response = patch(agent_client, session, {"answers": {"has_device_access": None}})

    assert response.status_code == 200
    assert response.json()["answers"]["has_device_access"] is None
    assert response.json()["next_step"]["code"] == "ask_device_access"


def test_patch_without_answers_keeps_them(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})

    response = patch(agent_client, session, {})

    assert response.status_code == 200
    assert response.json()["answers"]["has_device_access"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "cust-2"}, "customer_id"),
        ({"phone_number_matches": True}, "phone_number_matches"),
        ({"answers": {"has_device_access": True, "typo": True}}, "answers.typo"),
    ],
)
def test_patch_refuses_unknown_fields_and_changes_nothing(agent_client, customer, body, field):
    session = start(agent_client)

    response = patch(agent_client, session, body)

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "unknown_field",
        "message": response.json()["error"]["message"],
        "field": field,
    }
    assert agent_client.get(url(session)).json()["answers"]["has_device_access"] is None


def test_patch_refuses_a_method_of_another_customer(agent_client, customer):
    enroll("cust-2", "m-other", phone_number=OTHER_NUMBER)
    session = start(agent_client)

    response = patch(agent_client, session, {"method_id": "m-other"})

    assert response.status_code == 404
    assert error_code(response) == "unknown_method"
    assert agent_client.get(url(session)).json()["method_id"] == "m-sms"


def test_patch_refuses_a_removed_method(agent_client, customer):
    ingest(event_type="method_removed", customer_id="cust-1", method_id="m-app")
    session = start(agent_client)

    response = patch(agent_client, session, {"method_id": "m-app"})

    assert response.status_code == 409
    assert error_code(response) == "method_removed"


def test_patch_switches_the_method_and_forgets_the_other_numbers_verification(
    agent_client, customer
):
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=OTHER_NUMBER)
    session = start(agent_client, answers={"has_device_access": True})
    assert verify(agent_client, session, NUMBER).json()["match"] is True

    switched = patch(agent_client, session, {"method_id": "m-voice"})

    assert switched.status_code == 200
    assert switched.json()["method_id"] == "m-voice"
    assert switched.json()["phone_number_matches"] is None
    assert switched.json()["next_step"]["code"] == "verify_phone_number"

    back = patch(agent_client, session, {"method_id": None})
    assert back.json()["method_id"] == "m-sms"


def test_patch_naming_the_method_already_in_question_keeps_its_verification(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})
    assert verify(agent_client, session, NUMBER).json()["match"] is True

    response = patch(agent_client, session, {"method_id": "m-sms"})

    assert response.status_code == 200
    assert response.json()["phone_number_matches"] is True
    assert response.json()["next_step"]["code"] == "check_ats_delivery"


# ---------------------------------------------------------------------------------------------
# verify-phone
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spoken", "match"),
    [
        ("+14155550123", True),
        ("+1 (415) 555-0123", True),
        ("(415) 555-0123", True),
        ("415 555 0123", True),
        ("415.555.0123", True),
        ("1-415-555-0123", True),
        ("+1 415 555 0124", False),
        ("(415) 555-0124", False),
        ("+44 20 7946 0958", False),
    ],
)
def test_verify_phone_compares_in_any_format_and_never_echoes(
    agent_client, customer, spoken, match
):
    session = start(agent_client, answers={"has_device_access": True})

    response = verify(agent_client, session, spoken)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"match", "tries_left", "next_step"}
    assert body["match"] is match
    assert body["tries_left"] == 4
    # One wrong number may be a misread digit: check it again before anything else.
    assert body["next_step"]["code"] == ("check_ats_delivery" if match else "recheck_phone_number")
    for form in ("4155550123", "415-555-0123", "415) 555-0123", "555-0123", "5550123"):
        assert form not in response.content.decode()
    assert agent_client.get(url(session)).json()["phone_number_matches"] is match


@pytest.mark.parametrize(
    ("stored", "spoken"),
    [
        ("+919876543210", "098765 43210"),
        ("+919876543210", "98765-43210"),
        ("+919876543210", "+91 98765 43210"),
        ("+442079460958", "020 7946 0958"),
        ("+442079460958", "+44 (0)20 7946 0958"),
    ],
)
def test_verify_phone_takes_the_national_format_of_the_numbers_country(
    agent_client, stored, spoken
):
    enroll("cust-1", "m-sms", phone_number=stored)
    session = start(agent_client, answers={"has_device_access": True})

    response = verify(agent_client, session, spoken)

    assert response.status_code == 200
    assert response.json()["match"] is True


@pytest.mark.parametrize("spoken", ["not a number", "12", "+", "☎☎☎☎☎☎☎☎", "x" * 40])
def test_unparseable_number_is_400_and_uses_a_try(agent_client, customer, spoken):
    session = start(agent_client, answers={"has_device_access": True})

    response = verify(agent_client, session, spoken)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_phone_number"
    assert response.json()["error"]["field"] == "phone_number"
    read = agent_client.get(url(session)).json()
    assert read["phone_verification_tries_left"] == 4
    assert read["phone_number_matches"] is None
    assert read["next_step"]["code"] == "verify_phone_number"


def test_sixth_try_is_429_even_with_the_right_number(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})
    for tries_left, spoken in zip(
        (4, 3, 2, 1), ("+14155550124", "415 555 0125", "415 555 0126", "415 555 0127"), strict=True
    ):
        assert verify(agent_client, session, spoken).json()["tries_left"] == tries_left
    fifth = verify(agent_client, session, "garbage")
    assert fifth.status_code == 400

    sixth = verify(agent_client, session, NUMBER)

    assert sixth.status_code == 429
    assert error_code(sixth) == "too_many_tries"
    read = agent_client.get(url(session)).json()
    assert read["phone_verification_tries_left"] == 0
    assert read["phone_number_matches"] is False
    # The refused try is on the audit trail too.
    results = list(
        AuditEntry.objects.filter(action="phone_verify")
        .order_by("created_at", "id")
        .values_list("result", flat=True)
    )
    assert results == ["mismatch"] * 4 + ["invalid", "too_many_tries"]


def test_tries_are_per_session(agent_client, customer):
    first = start(agent_client, answers={"has_device_access": True})
    for _ in range(5):
        verify(agent_client, first, OTHER_NUMBER)
    assert verify(agent_client, first, NUMBER).status_code == 429

    second = start(agent_client, answers={"has_device_access": True})

    assert verify(agent_client, second, NUMBER).json()["match"] is True


@pytest.mark.parametrize("kind", ["authenticator_app", "email", "security_key"])
def test_verify_phone_is_409_when_the_method_has_no_phone_number(agent_client, kind):
    extra = {"email": "ada@example.com"} if kind == "email" else {}
    enroll("cust-1", "m-1", kind=kind, role="primary", **extra)
    session = start(agent_client, answers={"has_device_access": True})

    response = verify(agent_client, session, NUMBER)

    assert response.status_code == 409
    assert error_code(response) == "no_phone_number"
    assert agent_client.get(url(session)).json()["phone_verification_tries_left"] == 5


def test_verify_phone_checks_the_sessions_method(agent_client, customer):
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=OTHER_NUMBER)
    session = start(agent_client, method_id="m-voice", answers={"has_device_access": True})

    assert verify(agent_client, session, NUMBER).json()["match"] is False
    assert verify(agent_client, session, OTHER_NUMBER).json()["match"] is True


def test_verify_phone_compares_with_the_changed_number(agent_client, customer):
    change_number(OTHER_NUMBER)
    session = start(agent_client, answers={"has_device_access": True})

    assert verify(agent_client, session, NUMBER).json()["match"] is False
    assert verify(agent_client, session, OTHER_NUMBER).json()["match"] is True


def test_a_changed_number_forgets_the_callers_verification(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})
    assert verify(agent_client, session, NUMBER).json()["match"] is True

    change_number(OTHER_NUMBER, at=T0)

    body = agent_client.get(url(session)).json()
    assert body["phone_number_matches"] is None
    assert body["next_step"]["code"] == "verify_phone_number"
    assert verify(agent_client, session, NUMBER).json()["match"] is False


def test_a_changed_number_in_a_batch_forgets_the_verification(
    agent_client, producer_client, customer
):
    session = start(agent_client, answers={"has_device_access": True})
    assert verify(agent_client, session, NUMBER).json()["match"] is True
    event = {
        "event_id": "ev-batch-phone",
        "type": "phone_number_changed",
        "customer_id": "cust-1",
        "occurred_at": T0.isoformat(),
        "data": {"method_id": "m-sms", "phone_number": OTHER_NUMBER},
    }

    response = producer_client.post("/api/v1/events/batch/", {"events": [event]}, format="json")

    assert response.json()["results"][0]["status"] == "accepted"
    assert agent_client.get(url(session)).json()["phone_number_matches"] is None


def test_the_same_number_sent_again_keeps_the_verification(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})
    assert verify(agent_client, session, NUMBER).json()["match"] is True

    change_number(NUMBER, at=T0)

    assert agent_client.get(url(session)).json()["phone_number_matches"] is True


def test_verify_phone_audit_holds_the_result_never_the_digits(agent_client, agent, customer):
    session = start(agent_client, answers={"has_device_access": True})
    typed = ["+1 415 555 0199", "(415) 555-0123", "55501999999999999"]

    for spoken in typed:
        verify(agent_client, session, spoken)

    entries = AuditEntry.objects.filter(action="phone_verify").order_by("created_at", "id")
    assert [e.result for e in entries] == ["mismatch", "match", "invalid"]
    for entry in entries:
        assert entry.actor == agent
        assert entry.customer_ref == "cust-1"
        row = json.dumps(
            {f.name: str(getattr(entry, f.attname)) for f in AuditEntry._meta.concrete_fields}
        )
        for digits in ("4155550199", "4155550123", "555-0123", "5550199", "55501999"):
            assert digits not in row
        assert "phone_number" not in entry.details


def test_verify_phone_refuses_unknown_fields(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})

    response = agent_client.post(
        url(session, "verify-phone/"),
        {"phone_number": NUMBER, "method_id": "m-sms"},
        format="json",
    )

    assert response.status_code == 400
    assert error_code(response) == "unknown_field"


# ---------------------------------------------------------------------------------------------
# Close
# ---------------------------------------------------------------------------------------------


def test_close_records_outcome_feedback_and_the_final_step(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": False})

    response = agent_client.post(
        url(session, "close/"),
        {"outcome": "escalated", "helpful": False, "comment": "Sent to identity proofing."},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["closed_at"] is not None
    assert body["outcome"] == "escalated"
    stored = TroubleshootingSession.objects.get(pk=session["id"])
    assert stored.outcome == "escalated"
    assert stored.helpful is False
    assert stored.comment == "Sent to identity proofing."
    assert stored.final_step_code == "ask_backup_device_access"
    assert AuditEntry.objects.filter(action="session_close", result="escalated").count() == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "required"),
        ({"outcome": "fixed"}, "invalid_choice"),
        ({"outcome": "resolved", "rating": 5}, "unknown_field"),
        ({"outcome": "resolved", "comment": "x" * 2001}, "max_length"),
    ],
)
def test_close_refuses_bad_input(agent_client, customer, body, code):
    session = start(agent_client)

    response = agent_client.post(url(session, "close/"), body, format="json")

    assert response.status_code == 400
    assert error_code(response) in {code, "invalid"}
    assert agent_client.get(url(session)).json()["closed_at"] is None


def test_closed_session_refuses_changes_with_409(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})
    closed = agent_client.post(url(session, "close/"), {"outcome": "resolved"}, format="json")
    assert closed.status_code == 200

    responses = [
        patch(agent_client, session, {"answers": {"has_device_access": False}}),
        verify(agent_client, session, NUMBER),
        agent_client.post(url(session, "close/"), {"outcome": "not_resolved"}, format="json"),
    ]

    assert [(r.status_code, error_code(r)) for r in responses] == [(409, "session_closed")] * 3
    read = agent_client.get(url(session)).json()
    assert read["answers"]["has_device_access"] is True
    assert read["phone_verification_tries_left"] == 5
    assert read["outcome"] == "resolved"


# ---------------------------------------------------------------------------------------------
# Who may use a session
# ---------------------------------------------------------------------------------------------


def _as_agent(username: str) -> APIClient:
    return token_client(factories.UserFactory(username=username, groups=["support_agent"]))


def test_another_agents_session_is_404(agent_client, customer):
    session = start(agent_client)
    other = _as_agent("agent-2")

    responses = [
        other.get(url(session)),
        other.patch(url(session), {"answers": {"has_device_access": False}}, format="json"),
        other.post(url(session, "verify-phone/"), {"phone_number": NUMBER}, format="json"),
        other.post(url(session, "close/"), {"outcome": "resolved"}, format="json"),
    ]

    assert [(r.status_code, error_code(r)) for r in responses] == [(404, "unknown_session")] * 4
    read = agent_client.get(url(session)).json()
    assert read["answers"]["has_device_access"] is None
    assert read["phone_verification_tries_left"] == 5
    assert read["closed_at"] is None


def test_producer_token_is_403_and_no_token_is_401(agent_client, producer_client, client, customer):
    session = start(agent_client)
    requests = [
        ("post", "/api/v1/customers/cust-1/twosv/sessions/", {}),
        ("get", url(session), None),
        ("patch", url(session), {"answers": {"has_device_access": False}}),
        ("post", url(session, "verify-phone/"), {"phone_number": NUMBER}),
        ("post", url(session, "close/"), {"outcome": "resolved"}),
    ]

    for method, path, body in requests:
        kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body else {}
        by_producer = getattr(producer_client, method)(path, **kwargs)
        assert by_producer.status_code == 403, path
        assert error_code(by_producer) == "permission_denied"
        anonymous = getattr(client, method)(path, **kwargs)
        assert anonymous.status_code == 401, path
        assert anonymous["WWW-Authenticate"].startswith("Token")

    assert TroubleshootingSession.objects.count() == 1
    assert agent_client.get(url(session)).json()["phone_verification_tries_left"] == 5


# ---------------------------------------------------------------------------------------------
# One wrong number is not proof (issue 17, R6a)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sms_only():
    """cust-1 with a primary SMS method and no backup: R6 is the Cancel-2SV flow."""
    enroll("cust-1", "m-sms")
    return "cust-1"


def test_one_wrong_number_asks_to_check_it_again(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})

    body = verify(agent_client, session, OTHER_NUMBER).json()

    assert body["match"] is False
    step = body["next_step"]
    assert (step["code"], step["rule"]) == ("recheck_phone_number", "R6a")
    assert step["question"]["field"] == "phone_number_changed"
    assert step["question"]["prompt"] == (
        "Has the number of this phone changed since 2SV was set up?"
    )
    assert step["action"]["url"] == url(session, "verify-phone/")
    assert "14155550123" not in json.dumps(body)


def test_the_right_number_after_a_wrong_one_goes_on_to_ats(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)

    body = verify(agent_client, session, "(415) 555-0123").json()

    assert body["match"] is True
    assert (body["next_step"]["code"], body["next_step"]["rule"]) == ("check_ats_delivery", "R8")
    # The match cleared the miss: one more miss is a recheck again, not R6.
    again = verify(agent_client, session, OTHER_NUMBER).json()["next_step"]
    assert again["code"] == "recheck_phone_number"
    assert TroubleshootingSession.objects.get().phone_check_misses == 1


def test_two_wrong_numbers_in_a_row_lead_to_r6(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)

    body = verify(agent_client, session, "+1 415 555 0125").json()

    step = body["next_step"]
    assert (step["code"], step["rule"]) == ("cancel_2sv_no_device_access", "R6")
    assert "2 times in a row" in step["reason"]
    assert body["tries_left"] == 3


def test_two_wrong_numbers_with_a_backup_ask_about_the_backup(agent_client, customer):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)
    step = verify(agent_client, session, OTHER_NUMBER).json()["next_step"]

    assert (step["code"], step["rule"]) == ("ask_backup_device_access", "R6")


def test_an_unparseable_number_is_no_miss(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)

    assert verify(agent_client, session, "12").status_code == 400

    assert agent_client.get(url(session)).json()["next_step"]["code"] == "recheck_phone_number"
    assert TroubleshootingSession.objects.get().phone_check_misses == 1


def test_phone_number_changed_yes_leads_to_r6(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)

    response = patch(agent_client, session, {"answers": {"phone_number_changed": True}})

    assert response.status_code == 200
    body = response.json()
    assert body["answers"] == {
        "has_device_access": True,
        "has_backup_device_access": None,
        "phone_number_changed": True,
    }
    step = body["next_step"]
    assert (step["code"], step["rule"]) == ("cancel_2sv_no_device_access", "R6")
    assert "changed since 2SV was set up" in step["reason"]


def test_phone_number_changed_no_keeps_the_recheck(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)

    body = patch(agent_client, session, {"answers": {"phone_number_changed": False}}).json()

    assert body["answers"]["phone_number_changed"] is False
    assert body["next_step"]["code"] == "recheck_phone_number"


def test_phone_number_changed_can_be_given_at_start_and_must_be_a_boolean(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True, "phone_number_changed": True})
    assert session["next_step"]["code"] == "cancel_2sv_no_device_access"

    response = patch(agent_client, session, {"answers": {"phone_number_changed": "yes"}})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "answers.phone_number_changed"
    assert TroubleshootingSession.objects.get().phone_number_changed is True


def test_switching_the_method_forgets_the_misses(agent_client, customer):
    enroll("cust-1", "m-voice", kind="voice", role="backup", phone_number=OTHER_NUMBER)
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, "+1 415 555 0125")

    patch(agent_client, session, {"method_id": "m-voice"})

    stored = TroubleshootingSession.objects.get()
    assert (stored.phone_number_matches, stored.phone_check_misses) == (None, 0)


def test_a_changed_number_on_file_forgets_the_misses(agent_client, sms_only):
    session = start(agent_client, answers={"has_device_access": True})
    verify(agent_client, session, OTHER_NUMBER)

    change_number("+14155550188")

    stored = TroubleshootingSession.objects.get()
    assert (stored.phone_number_matches, stored.phone_check_misses) == (None, 0)
    assert agent_client.get(url(session)).json()["next_step"]["code"] == "verify_phone_number"
