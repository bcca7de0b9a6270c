"""The article's general steps, end to end through the API, as an agent on a call walks them.

The identity system pushes its events through the producer API; the agent's panel reads the
state, opens a session, records answers, checks the number the caller says and closes.
"""

import json
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests import builders
from tests.builders import T0
from twosv.models import TroubleshootingSession

NUMBER = "+14155550123"
CUSTOMER = "cust-walk"
STATE_URL = f"/api/v1/customers/{CUSTOMER}/twosv/"
SESSIONS_URL = f"/api/v1/customers/{CUSTOMER}/twosv/sessions/"
LOOKUPS_URL = f"/api/v1/customers/{CUSTOMER}/twosv/delivery-lookups/"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


# Every event here is the walkthrough customer's.
event = partial(builders.event, customer_id=CUSTOMER)


def push(producer: APIClient, *events: dict[str, Any]) -> None:
    response = producer.post(
        "/api/v1/events/batch/",
        json.dumps({"events": list(events)}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert {r["status"] for r in response.json()["results"]} == {"accepted"}


def enrolment(method_id: str, kind: str, role: str, **data: Any) -> dict[str, Any]:
    return builders.enrolment(
        f"enrol-{method_id}",
        at=T0 - timedelta(days=30),
        customer_id=CUSTOMER,
        method_id=method_id,
        kind=kind,
        role=role,
        **data,
    )


def too_many_resends(method_id: str) -> list[dict[str, Any]]:
    """The 201 "resend code" requests after which the article says the method locks."""
    start = T0 - timedelta(hours=2)
    return [
        event(
            f"resend-{method_id}-{i:03d}",
            "code_resend_requested",
            at=start + timedelta(seconds=i),
            method_id=method_id,
        )
        for i in range(201)
    ]


class Panel:
    """What the CRM sidebar does on the agent's behalf."""

    def __init__(self, client: APIClient) -> None:
        self.client = client
        self.session_url = ""

    def state(self) -> dict[str, Any]:
        response = self.client.get(STATE_URL)
        assert response.status_code == 200, response.content
        return response.json()

    def start(self) -> dict[str, Any]:
        response = self.client.post(SESSIONS_URL, {}, format="json")
        assert response.status_code == 201, response.content
        self.session_url = f"/api/v1/twosv/sessions/{response.json()['id']}/"
        return response.json()

    def answer(self, **answers: bool | None) -> dict[str, Any]:
        response = self.client.patch(self.session_url, {"answers": answers}, format="json")
        assert response.status_code == 200, response.content
        return response.json()

    def check_number(self, spoken: str) -> dict[str, Any]:
        response = self.client.post(
            f"{self.session_url}verify-phone/", {"phone_number": spoken}, format="json"
        )
        assert response.status_code == 200, response.content
        return response.json()

    def close(self, **body: Any) -> dict[str, Any]:
        response = self.client.post(f"{self.session_url}close/", body, format="json")
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def panel(agent_client) -> Panel:
    return Panel(agent_client)


def test_device_access_then_phone_verification_then_ats(producer_client, panel, agent_client):
    push(producer_client, enrolment("m-sms", "sms", "primary", phone_number=NUMBER))

    # Before any session the panel asks the article's first question.
    assert panel.state()["next_step"]["code"] == "ask_device_access"
    step = panel.start()["next_step"]
    assert step["code"] == "ask_device_access"
    assert step["question"]["field"] == "has_device_access"

    # 1) The customer has the device: verify the phone number.
    session = panel.answer(has_device_access=True)
    step = session["next_step"]
    assert step["code"] == "verify_phone_number"
    assert step["rule"] == "R7"
    assert step["action"]["method"] == "POST"
    assert step["action"]["url"] == f"{panel.session_url}verify-phone/"

    # A number that isn't the one on file: people misread digits, so the panel asks for the
    # number again (and whether the phone's number changed) before any Cancel-2SV advice.
    checked = panel.check_number("+1 415 555 0199")
    assert checked["match"] is False
    assert checked["tries_left"] == 4
    assert checked["next_step"]["code"] == "recheck_phone_number"
    assert checked["next_step"]["rule"] == "R6a"
    assert checked["next_step"]["question"]["field"] == "phone_number_changed"
    session = panel.answer(phone_number_changed=False)
    assert session["next_step"]["code"] == "recheck_phone_number"

    # The caller corrects themselves, in the national format, then with spaces.
    checked = panel.check_number("(415) 555-0123")
    assert checked["match"] is True
    assert checked["tries_left"] == 3
    step = checked["next_step"]
    assert step["code"] == "check_ats_delivery"
    assert step["rule"] == "R8"
    assert step["action"]["method"] == "POST"
    assert step["action"]["url"] == LOOKUPS_URL
    checked = panel.check_number("415 555 0123")
    assert checked["match"] is True
    assert checked["next_step"]["code"] == "check_ats_delivery"

    # The bare state endpoint knows nothing of the session's answers.
    assert panel.state()["next_step"]["code"] == "ask_device_access"

    closed = panel.close(outcome="resolved", helpful=True, comment="Codes arrive again.")
    assert closed["closed_at"] is not None
    assert closed["outcome"] == "resolved"
    stored = TroubleshootingSession.objects.get()
    assert (stored.outcome, stored.helpful, stored.comment) == (
        "resolved",
        True,
        "Codes arrive again.",
    )
    assert stored.final_step_code == "check_ats_delivery"

    # A closed session can't be changed.
    patched = agent_client.patch(
        panel.session_url, {"answers": {"has_device_access": False}}, format="json"
    )
    verified = agent_client.post(
        f"{panel.session_url}verify-phone/", {"phone_number": NUMBER}, format="json"
    )
    for response in (patched, verified):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "session_closed"


def test_no_device_access_leads_to_the_cancel_flow(producer_client, panel):
    push(producer_client, enrolment("m-sms", "sms", "primary", phone_number=NUMBER))
    panel.start()

    step = panel.answer(has_device_access=False)["next_step"]

    assert step["code"] == "cancel_2sv_no_device_access"
    assert step["rule"] == "R6"
    assert step["article_section"].startswith("I don't have the device")
    assert step["action"] == {
        "method": "GET",
        "url": settings.TWOSV_CANCEL_2SV_URL,
        "label": step["action"]["label"],
    }
    assert "I don't have access to that device" in step["instructions"]


def test_a_wrong_number_twice_leads_to_the_cancel_flow(producer_client, panel):
    push(producer_client, enrolment("m-sms", "sms", "primary", phone_number=NUMBER))
    panel.start()
    panel.answer(has_device_access=True)

    assert panel.check_number("+1 415 555 0199")["next_step"]["code"] == "recheck_phone_number"
    step = panel.check_number("+1 415 555 0198")["next_step"]

    assert (step["code"], step["rule"]) == ("cancel_2sv_no_device_access", "R6")
    assert "I don't have access to that device" in step["instructions"]


def test_the_phones_number_changed_leads_to_the_cancel_flow(producer_client, panel):
    push(producer_client, enrolment("m-sms", "sms", "primary", phone_number=NUMBER))
    panel.start()
    panel.answer(has_device_access=True)
    assert panel.check_number("+1 415 555 0199")["next_step"]["code"] == "recheck_phone_number"

    # "Has the number of this phone changed since 2SV was set up?" Yes.
    step = panel.answer(phone_number_changed=True)["next_step"]

    assert (step["code"], step["rule"]) == ("cancel_2sv_no_device_access", "R6")


def test_changed_number_and_no_device_leads_to_the_cancel_flow(producer_client, panel):
    push(
        producer_client,
        enrolment("m-sms", "sms", "primary", phone_number=NUMBER),
        event(
            "changed-1",
            "phone_number_changed",
            at=T0 - timedelta(days=1),
            method_id="m-sms",
            phone_number="+14155550188",
        ),
    )
    panel.start()
    panel.answer(has_device_access=True)

    # The panel says the number on file changed the day before.
    advisories = {a["code"]: a for a in panel.state()["advisories"]}
    assert advisories["number_recently_changed"]["method_id"] == "m-sms"

    # The caller gives the number they remember: the old one, twice.
    checked = panel.check_number("(415) 555-0123")
    assert checked["match"] is False
    assert checked["next_step"]["code"] == "recheck_phone_number"
    checked = panel.check_number("(415) 555-0123")

    assert checked["match"] is False
    assert checked["next_step"]["code"] == "cancel_2sv_no_device_access"


def test_lock_with_a_usable_backup(producer_client, panel):
    push(
        producer_client,
        enrolment("m-sms", "sms", "primary", phone_number=NUMBER),
        enrolment("m-app", "authenticator_app", "backup"),
    )
    push(producer_client, *too_many_resends("m-sms"))

    state = panel.state()
    sms = next(m for m in state["methods"] if m["id"] == "m-sms")
    assert sms["status"] == "locked"
    assert state["no_code_link_visible"] is True
    assert "backup_hidden" in [a["code"] for a in state["advisories"]]
    assert state["next_step"]["code"] == "ask_backup_device_access"
    assert state["next_step"]["rule"] == "R3"

    step = panel.start()["next_step"]
    assert step["code"] == "ask_backup_device_access"
    assert step["question"]["field"] == "has_backup_device_access"

    step = panel.answer(has_backup_device_access=True)["next_step"]
    assert step["code"] == "use_backup_method"
    assert step["rule"] == "R2"
    assert "No code?" in step["instructions"]

    # Without the backup device, "No code?" won't help: wait, or cancel 2SV.
    step = panel.answer(has_backup_device_access=False)["next_step"]
    assert step["code"] == "wait_for_lock_expiry"
    assert step["rule"] == "R4"
    assert step["alternatives"] == ["cancel_2sv_no_device_access"]


def test_lock_without_a_backup(producer_client, panel):
    push(producer_client, enrolment("m-sms", "sms", "primary", phone_number=NUMBER))
    push(producer_client, *too_many_resends("m-sms"))
    locked_until = T0 - timedelta(hours=2) + timedelta(seconds=200) + timedelta(hours=24)
    remaining = int((locked_until - T0).total_seconds())

    step = panel.state()["next_step"]
    assert step["code"] == "wait_for_lock_expiry"
    assert step["rule"] == "R4"
    assert step["alternatives"] == ["cancel_2sv_no_device_access"]
    assert step["seconds_remaining"] == remaining
    assert step["article_section"].startswith("I got an error message")

    # Whatever the answers, the lock comes first.
    panel.start()
    step = panel.answer(has_device_access=True)["next_step"]
    assert step["code"] == "wait_for_lock_expiry"
    assert step["seconds_remaining"] == remaining

    # Blocked resends during the lock don't extend it.
    push(
        producer_client,
        event("resend-late", "code_resend_requested", at=T0, method_id="m-sms"),
    )
    assert panel.state()["next_step"]["seconds_remaining"] == remaining
