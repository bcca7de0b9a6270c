"""Delivery lookups through the API, against a real ATS HTTP server on 127.0.0.1.

Celery is eager here (tests/conftest.py), so the task runs when the request's transaction
commits; `committed` runs those on-commit callbacks, as a real commit would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
import pytest
import time_machine
from django.utils import timezone

from tests import factories
from tests.ats_server import AtsTestServer, ScriptedResponse, iso
from twosv.models import AuditEntry, DeliveryLookup, MethodRole, RegionalAdvisory

pytestmark = pytest.mark.django_db

INDIA = "+919876543210"


def request_url(customer_id: str) -> str:
    return f"/api/v1/customers/{customer_id}/twosv/delivery-lookups/"


def detail_url(lookup_id: object) -> str:
    return f"/api/v1/twosv/delivery-lookups/{lookup_id}/"


@pytest.fixture
def http_ats(http_ats: AtsTestServer, settings: Any) -> AtsTestServer:
    """The test server of conftest's `http_ats`, with a short read timeout."""
    settings.ATS_READ_TIMEOUT = 1.0
    return http_ats


@pytest.fixture
def method(db: None) -> Any:
    return factories.MethodFactory(phone_number="+14155550123")


@pytest.fixture
def post(
    agent_client: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> Callable[..., Any]:
    """POST a lookup request and run what its commit would run (the eager task)."""

    def _post(customer_id: str, body: dict[str, Any] | None = None, client: Any = None) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return (client or agent_client).post(
                request_url(customer_id), body or {}, format="json"
            )

    return _post


def run_lookup(post: Callable[..., Any], agent_client: Any, method: Any, **body: Any) -> Any:
    """Request a lookup for `method` and return its final representation."""
    response = post(method.customer.customer_id, {"method_id": method.method_id, **body})
    assert response.status_code == 202, response.content
    detail = agent_client.get(detail_url(response.json()["id"]))
    assert detail.status_code == 200
    return detail.json()


@pytest.fixture
def retry_countdowns(caplog: pytest.LogCaptureFixture) -> Callable[[], list[float]]:
    """Return a reader of the countdown of every task retry so far, as the task logs it.

    (Eager tasks run their retries at once; the countdown is what a worker would wait.)
    """
    caplog.set_level(logging.INFO, logger="twosv.tasks")

    def read() -> list[float]:
        return [r.retry_countdown for r in caplog.records if hasattr(r, "retry_countdown")]

    return read


# --- The happy path and the representation -------------------------------------------------


def test_delivered_code_gives_a_delivered_verdict(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any
) -> None:
    sent_at = timezone.now() - timedelta(minutes=3)
    http_ats.add_message(to=method.phone_number, status="delivered", created_at=sent_at)

    response = post(method.customer.customer_id)

    assert response.status_code == 202
    body = response.json()
    assert response["Location"] == detail_url(body["id"])
    lookup = agent_client.get(detail_url(body["id"])).json()
    assert set(lookup) == {
        "id",
        "customer_id",
        "method_id",
        "status",
        "verdict",
        "period_start",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "tries",
        "failure_reason",
        "source",
    }
    assert lookup["source"] == "http"
    assert lookup["customer_id"] == method.customer.customer_id
    assert lookup["method_id"] == method.method_id
    assert (lookup["status"], lookup["verdict"], lookup["tries"]) == ("succeeded", "delivered", 1)
    assert lookup["failure_reason"] is None
    assert lookup["started_at"] is not None
    assert lookup["finished_at"] is not None
    assert lookup["attempts"] == [
        {
            "sent_at": iso(sent_at),
            "status": "delivered",
            "error_code": None,
            "provider": "twilio",
            "sender": "+14803605516",
        }
    ]


def test_the_ats_is_asked_for_the_number_over_the_last_24_hours(
    http_ats: AtsTestServer, post: Any, method: Any
) -> None:
    before = timezone.now()
    post(method.customer.customer_id)

    (request,) = http_ats.requests
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {http_ats.token}"
    assert request.query["to"] == method.phone_number
    assert request.query["since"].endswith("Z")
    since = datetime.fromisoformat(request.query["since"])
    assert abs(since - (before - timedelta(hours=24))) < timedelta(seconds=5)


def test_the_recipient_number_never_leaves_the_api(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any
) -> None:
    http_ats.add_message(to=method.phone_number, status="failed", error_code=30007)

    response = post(method.customer.customer_id)
    detail = agent_client.get(detail_url(response.json()["id"]))

    for content in (response.content, detail.content):
        assert method.phone_number.encode() not in content
        assert method.phone_number[1:].encode() not in content


# --- Verdicts, one per failure family --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_code", "verdict"),
    [
        ("failed", 21610, "recipient_blocked"),
        ("undelivered", 30007, "carrier_filtered"),
        ("failed", 30004, "carrier_filtered"),
        ("undelivered", 30003, "unreachable"),
        ("failed", 30005, "unreachable"),
        ("failed", 30006, "unreachable"),
        ("failed", 21211, "unreachable"),
        ("failed", 21614, "unreachable"),
        ("failed", 30008, "provider_error"),
        ("undelivered", 30001, "provider_error"),
        ("failed", None, "provider_error"),
    ],
)
def test_each_failure_family_gets_its_verdict(
    http_ats: AtsTestServer,
    post: Any,
    agent_client: Any,
    method: Any,
    status: str,
    error_code: int | None,
    verdict: str,
) -> None:
    http_ats.add_message(
        to=method.phone_number,
        status="delivered",
        created_at=timezone.now() - timedelta(minutes=30),
    )
    http_ats.add_message(
        to=method.phone_number,
        status=status,
        error_code=error_code,
        created_at=timezone.now() - timedelta(minutes=5),
    )

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["verdict"]) == ("succeeded", verdict)
    assert [a["error_code"] for a in lookup["attempts"]] == [error_code, None]


def test_attempts_without_a_delivery_receipt_are_a_provider_error(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any
) -> None:
    http_ats.add_message(to=method.phone_number, status="sent")
    http_ats.add_message(to=method.phone_number, status="queued")

    lookup = run_lookup(post, agent_client, method)

    assert lookup["verdict"] == "provider_error"
    assert sorted(a["status"] for a in lookup["attempts"]) == ["queued", "sent"]


def test_no_attempts_in_the_period_is_not_sent(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any
) -> None:
    # Outside the period, and to another number: neither counts.
    http_ats.add_message(to=method.phone_number, created_at=timezone.now() - timedelta(hours=25))
    http_ats.add_message(to="+14155550999")

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["verdict"], lookup["attempts"]) == (
        "succeeded",
        "not_sent",
        [],
    )


def test_a_failure_to_an_indian_number_under_an_advisory_is_a_regional_provider_issue(
    http_ats: AtsTestServer, post: Any, agent_client: Any
) -> None:
    assert phonenumbers.region_code_for_number(phonenumbers.parse(INDIA)) == "IN"
    assert RegionalAdvisory.objects.filter(region="IN", active=True).exists()  # the default
    method = factories.MethodFactory(phone_number=INDIA)
    http_ats.add_message(to=INDIA, status="failed", error_code=30007)

    lookup = run_lookup(post, agent_client, method)

    assert lookup["verdict"] == "regional_provider_issue"


def test_without_an_active_advisory_the_indian_failure_keeps_its_own_verdict(
    http_ats: AtsTestServer, post: Any, agent_client: Any
) -> None:
    RegionalAdvisory.objects.filter(region="IN").update(active=False)
    method = factories.MethodFactory(phone_number=INDIA)
    http_ats.add_message(to=INDIA, status="failed", error_code=30007)

    assert run_lookup(post, agent_client, method)["verdict"] == "carrier_filtered"


def test_a_delivered_indian_number_is_delivered(
    http_ats: AtsTestServer, post: Any, agent_client: Any
) -> None:
    method = factories.MethodFactory(phone_number=INDIA)
    http_ats.add_message(to=INDIA, status="delivered")

    assert run_lookup(post, agent_client, method)["verdict"] == "delivered"


# --- The ATS contract: paging, transient and permanent errors ---------------------------------


def test_paging_follows_two_cursors(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any
) -> None:
    http_ats.page_size = 2
    start = timezone.now() - timedelta(hours=1)
    for minute in range(5):
        http_ats.add_message(
            to=method.phone_number,
            status="failed" if minute < 4 else "delivered",
            error_code=30003 if minute < 4 else None,
            created_at=start + timedelta(minutes=minute),
        )

    lookup = run_lookup(post, agent_client, method)

    assert [r.query.get("cursor") for r in http_ats.requests] == [None, "c2", "c4"]
    assert len(lookup["attempts"]) == 5
    assert lookup["verdict"] == "delivered"  # the latest, on the last page


def test_a_500_then_success_succeeds_on_the_second_try(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any
) -> None:
    http_ats.script([ScriptedResponse(500, {"error": "boom"})])
    http_ats.add_message(to=method.phone_number, status="delivered")

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["verdict"], lookup["tries"]) == ("succeeded", "delivered", 2)
    assert lookup["failure_reason"] is None
    assert len(http_ats.requests) == 2


def test_an_ats_that_always_answers_500_fails_the_lookup_after_five_tries(
    http_ats: AtsTestServer,
    post: Any,
    agent_client: Any,
    method: Any,
    retry_countdowns: Callable[[], list[float]],
) -> None:
    http_ats.script([ScriptedResponse(500, {"error": "boom"})] * 10)

    lookup = run_lookup(post, agent_client, method)
    countdowns = retry_countdowns()

    assert (lookup["status"], lookup["verdict"], lookup["tries"]) == ("failed", None, 5)
    assert lookup["failure_reason"] == (
        "The ATS still failed after 5 tries: ATS is unavailable (500 Internal Server Error)."
    )
    assert lookup["finished_at"] is not None
    assert len(http_ats.requests) == 5
    assert len(countdowns) == 4
    assert all(0 <= c <= 60 for c in countdowns)


def test_a_429_is_retried_no_sooner_than_its_retry_after(
    http_ats: AtsTestServer,
    post: Any,
    agent_client: Any,
    method: Any,
    retry_countdowns: Callable[[], list[float]],
) -> None:
    http_ats.script([ScriptedResponse(429, {"error": "slow down"}, headers={"Retry-After": "7"})])
    http_ats.add_message(to=method.phone_number, status="delivered")

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["tries"]) == ("succeeded", 2)
    (countdown,) = retry_countdowns()
    assert 7 <= countdown <= 60


def test_a_retry_after_of_a_day_is_capped_below_the_visibility_timeout(
    http_ats: AtsTestServer,
    post: Any,
    agent_client: Any,
    method: Any,
    retry_countdowns: Callable[[], list[float]],
    settings: Any,
) -> None:
    http_ats.script([ScriptedResponse(503, {}, headers={"Retry-After": "86400"})])

    run_lookup(post, agent_client, method)

    assert retry_countdowns() == [60.0]
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > 60.0


def test_a_timeout_is_retried(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any, settings: Any
) -> None:
    settings.ATS_READ_TIMEOUT = 0.2
    http_ats.script([ScriptedResponse(200, {"messages": [], "next_cursor": None}, delay=3)])
    http_ats.add_message(to=method.phone_number, status="delivered")

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["verdict"], lookup["tries"]) == ("succeeded", "delivered", 2)


def test_an_ats_that_keeps_timing_out_fails_with_a_readable_reason(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any, settings: Any
) -> None:
    settings.ATS_READ_TIMEOUT = 0.1
    http_ats.script([ScriptedResponse(200, {}, delay=2)] * 5)

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["tries"]) == ("failed", 5)
    assert lookup["failure_reason"] == (
        "The ATS still failed after 5 tries: ATS did not answer in time (read timeout)."
    )


def test_a_401_fails_at_once(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any, settings: Any
) -> None:
    settings.ATS_TOKEN = "not-the-token"

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["verdict"], lookup["tries"]) == ("failed", None, 1)
    assert lookup["failure_reason"] == (
        "ATS refused our credentials (401 Unauthorized); check ATS_TOKEN."
    )
    assert len(http_ats.requests) == 1


def test_an_unreachable_ats_fails_after_the_retries(
    ats_refused_url: str, post: Any, agent_client: Any, method: Any, settings: Any
) -> None:
    settings.TWOSV_ATS_BACKEND = "http"
    settings.ATS_BASE_URL = ats_refused_url
    settings.ATS_TOKEN = "token"

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["tries"]) == ("failed", 5)
    assert (
        lookup["failure_reason"] == "The ATS still failed after 5 tries: could not connect to ATS."
    )


# --- The local backend ---------------------------------------------------------------------------


def test_the_local_backend_reads_delivery_records(
    post: Any, agent_client: Any, method: Any, settings: Any
) -> None:
    settings.TWOSV_ATS_BACKEND = "local"
    now = timezone.now()
    factories.LocalDeliveryRecordFactory(
        to=method.phone_number, status="delivered", created_at=now - timedelta(hours=2)
    )
    factories.LocalDeliveryRecordFactory(
        to=method.phone_number,
        status="undelivered",
        error_code=21610,
        created_at=now - timedelta(minutes=10),
        sender="+14803605516",
    )
    factories.LocalDeliveryRecordFactory(
        to=method.phone_number, status="delivered", created_at=now - timedelta(hours=30)
    )
    factories.LocalDeliveryRecordFactory(to="+14155550999", status="delivered")

    lookup = run_lookup(post, agent_client, method)

    assert (lookup["status"], lookup["verdict"]) == ("succeeded", "recipient_blocked")
    assert [a["status"] for a in lookup["attempts"]] == ["undelivered", "delivered"]


def test_the_local_backend_looks_up_an_email_method_by_address(
    post: Any, agent_client: Any, settings: Any
) -> None:
    settings.TWOSV_ATS_BACKEND = "local"
    method = factories.MethodFactory(kind="email", phone_number="", email="ada@example.com")
    factories.LocalDeliveryRecordFactory(to="ada@example.com", status="delivered")

    lookup = run_lookup(post, agent_client, method)

    assert lookup["verdict"] == "delivered"


# --- Which method, and which lookups are refused -----------------------------------------------


def test_the_method_defaults_to_the_active_primary(
    http_ats: AtsTestServer, post: Any, agent_client: Any
) -> None:
    customer = factories.CustomerFactory()
    factories.MethodFactory(
        customer=customer,
        role=MethodRole.BACKUP,
        enrolled_at=timezone.now() - timedelta(days=90),
    )
    primary = factories.MethodFactory(customer=customer)

    response = post(customer.customer_id)

    assert response.status_code == 202
    assert response.json()["method_id"] == primary.method_id


def test_without_a_primary_the_oldest_active_method_is_used(
    http_ats: AtsTestServer, post: Any
) -> None:
    customer = factories.CustomerFactory()
    factories.MethodFactory(customer=customer, removed_at=timezone.now() - timedelta(days=1))
    older = factories.MethodFactory(
        customer=customer, role=MethodRole.BACKUP, enrolled_at=timezone.now() - timedelta(days=9)
    )
    factories.MethodFactory(
        customer=customer, role=MethodRole.BACKUP, enrolled_at=timezone.now() - timedelta(days=2)
    )

    response = post(customer.customer_id)

    assert response.json()["method_id"] == older.method_id


def test_an_authenticator_app_is_refused_with_409(post: Any) -> None:
    method = factories.AuthenticatorMethodFactory()

    response = post(method.customer.customer_id, {"method_id": method.method_id})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "method_receives_no_codes"
    assert response.json()["error"]["field"] == "method_id"
    assert not DeliveryLookup.objects.exists()


def test_a_security_key_as_p_is_refused_with_409(post: Any) -> None:
    method = factories.AuthenticatorMethodFactory(kind="security_key", role=MethodRole.PRIMARY)

    response = post(method.customer.customer_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "method_receives_no_codes"


def test_a_removed_method_is_refused_with_409(post: Any) -> None:
    method = factories.MethodFactory(removed_at=timezone.now() - timedelta(hours=1))

    response = post(method.customer.customer_id, {"method_id": method.method_id})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "method_removed"


def test_a_customer_without_active_methods_is_refused_with_409(post: Any) -> None:
    customer = factories.CustomerFactory()

    response = post(customer.customer_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "unknown_method"


# --- Reuse, freshness and force ----------------------------------------------------------------


def test_a_fresh_lookup_is_reused_and_force_makes_a_new_one(
    http_ats: AtsTestServer, post: Any, method: Any
) -> None:
    customer_id = method.customer.customer_id
    first = post(customer_id)
    again = post(customer_id)
    forced = post(customer_id, {"force": True})

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert forced.status_code == 202
    assert forced.json()["id"] != first.json()["id"]
    assert len(http_ats.requests) == 2


def test_a_lookup_older_than_the_freshness_window_is_not_reused(
    http_ats: AtsTestServer, post: Any, method: Any
) -> None:
    customer_id = method.customer.customer_id
    first = post(customer_id)

    with time_machine.travel(timezone.now() + timedelta(minutes=9, seconds=50)):
        assert post(customer_id).json()["id"] == first.json()["id"]
    with time_machine.travel(timezone.now() + timedelta(minutes=10, seconds=10)):
        later = post(customer_id)

    assert later.status_code == 202
    assert later.json()["id"] != first.json()["id"]


def test_a_failed_lookup_is_not_reused(
    http_ats: AtsTestServer, post: Any, agent_client: Any, method: Any, settings: Any
) -> None:
    settings.ATS_TOKEN = "wrong"
    failed = run_lookup(post, agent_client, method)
    settings.ATS_TOKEN = http_ats.token

    retried = run_lookup(post, agent_client, method)

    assert failed["status"] == "failed"
    assert retried["id"] != failed["id"]
    assert retried["status"] == "succeeded"


def test_a_pending_lookup_is_returned_even_with_force(post: Any, method: Any) -> None:
    pending = DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        period_start=timezone.now() - timedelta(hours=24),
    )

    plain = post(method.customer.customer_id)
    forced = post(method.customer.customer_id, {"force": True})

    assert (plain.status_code, plain.json()["id"]) == (200, str(pending.id))
    assert (forced.status_code, forced.json()["id"]) == (200, str(pending.id))
    assert plain.json()["status"] == "pending"
    assert plain.json()["verdict"] is None
    assert DeliveryLookup.objects.count() == 1


def test_each_request_is_audited(http_ats: AtsTestServer, post: Any, method: Any) -> None:
    post(method.customer.customer_id)
    post(method.customer.customer_id)
    post(method.customer.customer_id, {"method_id": "nope"})

    entries = AuditEntry.objects.filter(action="lookup_request").order_by("created_at", "id")
    assert [e.result for e in entries] == ["created", "reused", "refused"]
    assert {e.customer_ref for e in entries} == {method.customer.customer_id}
    assert all(e.actor_username == "agent" for e in entries)
    assert entries[2].details["code"] == "unknown_method"
    for entry in entries:
        assert method.phone_number not in str(entry.details)


def test_reading_a_lookup_is_audited(
    http_ats: AtsTestServer, post: Any, method: Any, agent_client: Any
) -> None:
    lookup_id = post(method.customer.customer_id).json()["id"]

    agent_client.get(detail_url(lookup_id))

    entry = AuditEntry.objects.get(action="lookup_read")
    assert (entry.object_id, entry.customer_ref) == (lookup_id, method.customer.customer_id)


# --- Not found, bad input, who may call --------------------------------------------------------


@pytest.mark.parametrize("customer_id", ["nobody", "bad id!", "x" * 65, "' OR 1=1 --"])
def test_an_unknown_or_malformed_customer_is_404(post: Any, customer_id: str) -> None:
    response = post(customer_id)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_customer"


def test_a_method_of_another_customer_is_404(post: Any, method: Any) -> None:
    other = factories.CustomerFactory()

    response = post(other.customer_id, {"method_id": method.method_id})

    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "unknown_method",
        "message": "This customer has no method with this id.",
        "field": "method_id",
    }


@pytest.mark.parametrize(
    "lookup_id", ["2f1b6f7e-8d4c-4b0a-9a51-3c1f5e2d7a90", "not-a-uuid", "1", "%27%20OR%201"]
)
def test_an_unknown_lookup_is_404(agent_client: Any, lookup_id: str) -> None:
    response = agent_client.get(detail_url(lookup_id))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"force": "maybe"}, "force"),
        ({"method_id": ["m"]}, "method_id"),
        ({"method_id": "m" * 129}, "method_id"),
        ({"verdict": "delivered"}, "verdict"),
        ({"status": "succeeded"}, "status"),
    ],
)
def test_bad_input_is_400_and_creates_nothing(
    post: Any, method: Any, body: dict[str, Any], field: str
) -> None:
    response = post(method.customer.customer_id, body)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not DeliveryLookup.objects.exists()


def test_a_body_that_is_not_an_object_is_400(post: Any, method: Any) -> None:
    response = post(method.customer.customer_id, ["force"])  # type: ignore[arg-type]

    assert response.status_code == 400


def test_credentials_and_roles(
    method: Any, producer_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from rest_framework.test import APIClient

    anonymous = APIClient().post(request_url(method.customer.customer_id), {}, format="json")
    producer = producer_client.post(request_url(method.customer.customer_id), {}, format="json")
    lookup = DeliveryLookup.objects.create(
        customer=method.customer, method=method, period_start=timezone.now()
    )
    producer_read = producer_client.get(detail_url(lookup.id))

    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Token")
    assert producer.status_code == 403
    assert producer_read.status_code == 403
    assert DeliveryLookup.objects.count() == 1


def test_lookup_requests_are_throttled_per_agent(
    http_ats: AtsTestServer, post: Any, method: Any
) -> None:
    statuses = [post(method.customer.customer_id).status_code for _ in range(61)]

    assert statuses[0] == 202
    assert set(statuses[1:60]) == {200}
    assert statuses[60] == 429
    assert len(http_ats.requests) == 1


def test_the_openapi_schema_documents_both_operations(agent_client: Any) -> None:
    schema = agent_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")

    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/v1/customers/{customer_id}/twosv/delivery-lookups/" in text
    assert "/api/v1/twosv/delivery-lookups/{lookup_id}/" in text
