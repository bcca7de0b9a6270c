"""Findings of the security review of the running product (issue 16), one test per finding.

Finding 1: the phone check could rebuild the number on file by opening new sessions; the limit
is now per customer, counted in the database across sessions and agents (docs/SPEC.md §5).
Finding 4: a backdated producer event could silently end a lock; a late event that ends, moves
or creates the active lock is now audited with the producer's name.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from tests import factories
from tests.builders import (
    ENROLLED_AT,
    T0,
    enroll,
    enter_panel,
    event,
    parse_time,
    token_client,
)
from twosv import services
from twosv.errors import DomainError
from twosv.models import AuditEntry, Customer, TroubleshootingSession

NUMBER = "+14155550123"
WRONG = ["+14155550124", "415 555 0125", "(415) 555-0126", "+1 415 555 0127", "4155550128"]
PER_CUSTOMER = 10


def phone_check_model() -> type[Model]:
    """The PhoneCheck model, looked up when used (so this file imports on an older main too)."""
    return apps.get_model("twosv", "PhoneCheck")


def start(client: APIClient, customer_id: str = "cust-1") -> dict[str, Any]:
    response = client.post(
        f"/api/v1/customers/{customer_id}/twosv/sessions/",
        {"answers": {"has_device_access": True}},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def verify(client: APIClient, session: dict[str, Any], number: str) -> Any:
    return client.post(
        f"/api/v1/twosv/sessions/{session['id']}/verify-phone/",
        {"phone_number": number},
        format="json",
    )


def read(client: APIClient, session: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"/api/v1/twosv/sessions/{session['id']}/")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def wrong_tries(client: APIClient, session: dict[str, Any], count: int) -> None:
    for number in WRONG[:count]:
        response = verify(client, session, number)
        assert response.status_code == 200, response.content
        assert response.json()["match"] is False


@pytest.fixture
def customer(db: None) -> str:
    """cust-1 with a primary SMS method."""
    enroll("cust-1", "m-sms", phone_number=NUMBER)
    return "cust-1"


@pytest.fixture
def other_agent(db: None) -> Any:
    return factories.UserFactory(username="agent-2", groups=["support_agent"])


# ---------------------------------------------------------------------------------------------
# Finding 1: the phone check is limited per customer, across sessions and agents
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_phone_checks_are_limited_per_customer_across_sessions_and_agents(
    agent_client, other_agent, customer, time_machine
):
    second_agent = token_client(other_agent)
    # Two agents, two sessions each: 4 + 4 + 1 + 1 = 10 tries, none of them refused.
    for client, tries in (
        (agent_client, 4),
        (second_agent, 4),
        (agent_client, 1),
        (second_agent, 1),
    ):
        wrong_tries(client, start(client), tries)

    # The 11th, in a brand-new session (5 tries left in it) and with the right number: refused.
    for client in (agent_client, second_agent):
        fresh = start(client)
        assert fresh["phone_verification_tries_left"] == 5
        refused = verify(client, fresh, NUMBER)
        assert refused.status_code == 429, refused.content
        assert error_code(refused) == "too_many_phone_checks"
        assert "match" not in refused.json()

    # Counted in the database: ten rows, whatever process or cache served them.
    assert phone_check_model().objects.filter(customer__customer_id=customer).count() == 10

    # Another customer is not affected.
    enroll("cust-2", "m-sms-2", phone_number="+14155550199")
    assert verify(agent_client, start(agent_client, "cust-2"), "+14155550199").json()["match"]

    # The window is 24 hours: a day later the customer's number can be checked again.
    time_machine.move_to(T0 + timedelta(hours=24, seconds=1), tick=False)
    assert verify(agent_client, start(agent_client), NUMBER).json()["match"] is True
    assert django_settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER == PER_CUSTOMER
    window = django_settings.TWOSV_PHONE_VERIFY_CUSTOMER_WINDOW
    assert window == timedelta(hours=24)


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_a_refused_try_stores_nothing(agent_client, customer, settings):
    settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER = 2
    wrong_tries(agent_client, start(agent_client), 2)
    session = start(agent_client)
    before = TroubleshootingSession.objects.get(pk=session["id"])

    refused = verify(agent_client, session, NUMBER)

    assert refused.status_code == 429
    assert error_code(refused) == "too_many_phone_checks"
    after = TroubleshootingSession.objects.get(pk=session["id"])
    assert after.phone_verify_tries == before.phone_verify_tries == 0
    assert after.phone_number_matches is None
    assert after.updated_at == before.updated_at
    assert read(agent_client, session)["phone_verification_tries_left"] == 5
    assert phone_check_model().objects.count() == 2
    # Only the audit entry of the refusal is written.
    refusal = AuditEntry.objects.filter(action="phone_verify").order_by("id").last()
    assert refusal is not None
    assert refusal.result == "too_many_phone_checks"


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_an_unparseable_number_counts_toward_the_customer_limit(
    agent_client, customer, settings
):
    settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER = 3
    for _ in range(3):
        response = verify(agent_client, start(agent_client), "not a number")
        assert response.status_code == 400
        assert error_code(response) == "invalid_phone_number"

    refused = verify(agent_client, start(agent_client), NUMBER)

    assert refused.status_code == 429
    assert error_code(refused) == "too_many_phone_checks"
    checks = phone_check_model().objects.all()
    assert [c.matched for c in checks] == [None, None, None]


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_every_failed_check_is_audited_with_its_result(
    agent_client, agent, customer, settings
):
    settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER = 3
    first, second = start(agent_client), start(agent_client)
    assert verify(agent_client, first, WRONG[0]).status_code == 200
    assert verify(agent_client, first, "garbage").status_code == 400
    assert verify(agent_client, second, NUMBER).status_code == 200
    assert verify(agent_client, second, WRONG[1]).status_code == 429

    entries = list(AuditEntry.objects.filter(action="phone_verify").order_by("id"))
    assert [e.result for e in entries] == ["mismatch", "invalid", "match", "too_many_phone_checks"]
    assert [e.details["customer_tries"] for e in entries] == [1, 2, 3, 3]
    for entry in entries:
        assert entry.actor == agent
        assert entry.customer_ref == customer
        assert entry.details["method_id"] == "m-sms"
        assert "4155550124" not in str(entry.details)
        assert "phone_number" not in entry.details
    assert [c.matched for c in phone_check_model().objects.order_by("id")] == [False, None, True]


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_the_panel_check_hits_the_same_limit(
    agent, agent_client, customer, client: Client
):
    # Eight tries through the API, in two sessions.
    wrong_tries(agent_client, start(agent_client), 4)
    wrong_tries(agent_client, start(agent_client), 4)
    enter_panel(client, agent)
    verify_url = reverse("panel:verify-phone", args=[customer])
    page_url = reverse("panel:customer", args=[customer])
    for number in WRONG[:2]:  # the ninth and tenth, in the panel's own session
        assert client.post(verify_url, {"phone_number": number}).status_code == 302
        assert "No match" in client.get(page_url).content.decode()

    assert client.post(verify_url, {"phone_number": NUMBER}).status_code == 302
    html = client.get(page_url).content.decode()

    assert "Match: the number is the one on file." not in html
    assert "across all sessions and agents" in html
    assert phone_check_model().objects.count() == 10
    panel_session = TroubleshootingSession.objects.filter(phone_verify_tries=2).get()
    assert panel_session.phone_number_matches is False
    # And the API refuses the customer too, in yet another session.
    refused = verify(agent_client, start(agent_client), NUMBER)
    assert refused.status_code == 429
    assert error_code(refused) == "too_many_phone_checks"


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_session_creation_is_throttled_per_agent(
    agent_client, other_agent, customer, monkeypatch
):
    from crm_plugin.api.sessions import SessionCreateApi

    assert SessionCreateApi.throttle_scope == "session_start"
    rates = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates["session_start"] == "30/min"
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {**ScopedRateThrottle.THROTTLE_RATES, "session_start": "2/min"},
    )
    url = f"/api/v1/customers/{customer}/twosv/sessions/"

    answers = [agent_client.post(url, {}, format="json") for _ in range(3)]

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert error_code(answers[2]) == "throttled"
    assert TroubleshootingSession.objects.count() == 2
    # Keyed on the agent: another agent still starts one.
    assert token_client(other_agent).post(url, {}, format="json").status_code == 201


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_01_the_admin_lists_customers_with_many_failed_checks(
    agent, customer, root, time_machine
):
    enroll("cust-few", "m-few", phone_number="+14155550177")
    enroll("cust-old", "m-old", phone_number="+14155550166")

    def checks(customer_id: str, numbers: list[str]) -> None:
        session = services.session_start(
            customer=Customer.objects.get(customer_id=customer_id), agent=agent
        )
        for number in numbers:
            with contextlib.suppress(DomainError):
                services.session_verify_phone(session=session, actor=agent, phone_number=number)

    time_machine.move_to(T0 - timedelta(days=2), tick=False)
    checks("cust-old", WRONG)  # five failures, but two days ago
    time_machine.move_to(T0, tick=False)
    checks(customer, WRONG[:4])
    checks(customer, ["nonsense", WRONG[4]])  # six failures in 24 h, one of them not a number
    checks("cust-few", [WRONG[0], "+14155550177"])  # one failure, one match

    admin = Client()
    admin.force_login(root)
    url = reverse("admin:twosv_phonecheck_changelist")

    listed = admin.get(url, {"failed_at_least": "5"})

    assert listed.status_code == 200
    rows = list(listed.context["cl"].result_list)
    assert [(r.customer.customer_id, r.customer_failed) for r in rows] == [(customer, 6)]
    # Unfiltered, every check is listed, the customer most guessed at first.
    everything = list(admin.get(url).context["cl"].result_list)
    assert len(everything) == 5 + 6 + 2
    assert everything[0].customer.customer_id == customer
    assert {r.customer_failed for r in everything if r.customer.customer_id == "cust-old"} == {0}
    # Read-only, as the audit trail is.
    assert admin.get(reverse("admin:twosv_phonecheck_add")).status_code == 403
    check = everything[0]
    assert (
        admin.post(
            reverse("admin:twosv_phonecheck_delete", args=[check.pk]), {"post": "yes"}
        ).status_code
        == 403
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_finding_01_concurrent_checks_never_pass_the_customer_limit():
    enroll("cust-1", "m-sms", at=timezone.now() - timedelta(days=2), phone_number=NUMBER)
    customer = Customer.objects.get(customer_id="cust-1")
    agents = [
        factories.UserFactory(username=f"agent-{n}", groups=["support_agent"]) for n in range(6)
    ]
    sessions = [services.session_start(customer=customer, agent=agent) for agent in agents]
    # 6 sessions x 4 tries: 24 concurrent checks, each session under its own limit of 5.
    jobs = [(session, session.agent) for session in sessions for _ in range(4)]
    results: list[Any] = [None] * len(jobs)
    barrier = threading.Barrier(8)
    pending = list(enumerate(jobs))
    take = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            while True:
                with take:
                    if not pending:
                        return
                    index, (session, actor) = pending.pop()
                try:
                    results[index] = services.session_verify_phone(
                        session=TroubleshootingSession.objects.get(pk=session.pk),
                        actor=actor,
                        phone_number=WRONG[index % len(WRONG)],
                    )
                except DomainError as exc:
                    results[index] = exc.code
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)

    assert results.count(False) == PER_CUSTOMER
    assert results.count("too_many_phone_checks") == len(jobs) - PER_CUSTOMER
    assert phone_check_model().objects.filter(customer=customer).count() == PER_CUSTOMER
    tries = sum(
        TroubleshootingSession.objects.filter(customer=customer).values_list(
            "phone_verify_tries", flat=True
        )
    )
    assert tries == PER_CUSTOMER


# ---------------------------------------------------------------------------------------------
# Finding 4: a late event that changes the active lock is audited with the producer
# ---------------------------------------------------------------------------------------------

MINUTE = timedelta(minutes=1)


def post(client: APIClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/events/", body, format="json")
    assert response.status_code in (200, 201), response.content
    return dict(response.json())


def resend(event_id: str, at: Any) -> dict[str, Any]:
    return event(event_id, "code_resend_requested", at=at)


def lock_audits() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="late_event_changed_lock").order_by("id"))


@pytest.fixture
def locked_at_t0_minus_7(producer_client, small_threshold) -> dict[str, Any]:
    """cust-1's m-sms, locked in order by its 4th resend at T0 - 7 min (threshold 3)."""
    post(
        producer_client,
        event(
            "enrol",
            "method_enrolled",
            at=ENROLLED_AT,
            kind="sms",
            role="primary",
            phone_number=NUMBER,
        ),
    )
    for n, minutes in enumerate((10, 9, 8, 7)):
        answer = post(producer_client, resend(f"r{n}", T0 - minutes * MINUTE))
    lock = answer["method"]["lock"]
    assert lock is not None
    assert parse_time(lock["locked_at"]) == T0 - 7 * MINUTE
    return dict(lock)


def iso(value: Any) -> str:
    return str(value.isoformat())


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_04_a_late_event_that_ends_a_lock_is_audited_with_the_producer(
    producer_client, producer, locked_at_t0_minus_7
):
    # A code_verified backdated between the 3rd and 4th resend: the 4th no longer locks.
    late = post(producer_client, event("late-verify", "code_verified", at=T0 - 7.5 * MINUTE))

    assert late["method"]["lock"] is None  # the fold is right...
    [entry] = lock_audits()  # ...and it left a trace
    assert entry.actor == producer
    assert entry.actor_username == "producer"
    assert entry.result == "ended"
    assert entry.customer_ref == "cust-1"
    assert entry.details == {
        "event_id": "late-verify",
        "event_type": "code_verified",
        "method_id": "m-sms",
        "lock_before": {
            "locked_at": iso(T0 - 7 * MINUTE),
            "locked_until": iso(T0 - 7 * MINUTE + timedelta(hours=24)),
        },
        "lock_after": None,
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_04_a_late_event_that_moves_a_lock_is_audited(
    producer_client, producer, locked_at_t0_minus_7
):
    # One more resend, backdated: the lock now starts at the 4th by time, T0 - 8 min.
    post(producer_client, resend("late-resend", T0 - 9.5 * MINUTE))

    [entry] = lock_audits()
    assert entry.actor == producer
    assert entry.result == "moved"
    assert entry.details["event_id"] == "late-resend"
    assert entry.details["event_type"] == "code_resend_requested"
    assert entry.details["lock_before"]["locked_at"] == iso(T0 - 7 * MINUTE)
    assert entry.details["lock_after"] == {
        "locked_at": iso(T0 - 8 * MINUTE),
        "locked_until": iso(T0 - 8 * MINUTE + timedelta(hours=24)),
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock", "small_threshold")
def test_finding_04_a_late_event_in_a_batch_that_creates_a_lock_is_audited(
    producer_client, producer
):
    post(
        producer_client,
        event(
            "enrol",
            "method_enrolled",
            at=ENROLLED_AT,
            kind="sms",
            role="primary",
            phone_number=NUMBER,
        ),
    )
    for n, minutes in enumerate((10, 9, 8)):
        assert (
            post(producer_client, resend(f"r{n}", T0 - minutes * MINUTE))["method"]["lock"] is None
        )
    assert lock_audits() == []

    response = producer_client.post(
        "/api/v1/events/batch/", {"events": [resend("late-batch", T0 - 11 * MINUTE)]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["results"][0]["status"] == "accepted"
    [entry] = lock_audits()
    assert entry.actor == producer
    assert entry.result == "created"
    assert entry.details["event_id"] == "late-batch"
    assert entry.details["lock_before"] is None
    assert entry.details["lock_after"]["locked_at"] == iso(T0 - 8 * MINUTE)


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_finding_04_only_late_events_that_change_the_lock_are_audited(
    producer_client, locked_at_t0_minus_7
):
    # The in-order resend that locked the method is the fold itself: no entry.
    assert lock_audits() == []
    # A late event that leaves the lock as it is: no entry either.
    post(producer_client, event("late-rejected", "code_rejected", at=T0 - 8.5 * MINUTE))
    post(producer_client, event("late-sent", "code_sent", at=T0 - 30 * MINUTE))
    assert lock_audits() == []
    # A late one that ends it: exactly one entry, naming that event.
    post(producer_client, event("late-verify", "code_verified", at=T0 - 7.5 * MINUTE))
    assert [(e.result, e.details["event_id"]) for e in lock_audits()] == [("ended", "late-verify")]
