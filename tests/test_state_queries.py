"""The state endpoint and the session read run a constant few queries, whatever the history."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.builders import T0, ingest
from twosv import policy
from twosv.models import Customer, DeliveryLookup, Event, EventType, Method
from twosv.selectors import advisory_settings_forget_local, lock_policy, method_projection

MAX_QUERIES = 8
HISTORY_TYPES = (
    EventType.CODE_SENT,
    EventType.CODE_RESEND_REQUESTED,
    EventType.CODE_REJECTED,
    EventType.CODE_RESEND_REQUESTED,
    EventType.CODE_VERIFIED,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


def small_customer() -> str:
    """One SMS method and its enrolment: 1 method, 1 event."""
    ingest(
        "enrol-small",
        EventType.METHOD_ENROLLED,
        at=T0 - timedelta(days=1),
        customer_id="cust-small",
        method_id="m-small",
        kind="sms",
        role="primary",
        phone_number="+14155550123",
    )
    assert Event.objects.filter(customer__customer_id="cust-small").count() == 1
    return "cust-small"


def large_customer() -> str:
    """Five methods and 5,000 events, of which all but the last few are a bulk-loaded history.

    The history lies before the projection's resend window and never locks, so a real ingest
    of the newest events through the service leaves the stored projection exact.
    """
    enrolled_at = T0 - timedelta(days=90)
    methods = [
        ("m-sms", "sms", "primary", {"phone_number": "+14155550123"}),
        ("m-voice", "voice", "backup", {"phone_number": "+919876543210"}),
        ("m-mail", "email", "backup", {"email": "ada@example.com"}),
        ("m-app", "authenticator_app", "backup", {}),
        ("m-key", "security_key", "backup", {}),
    ]
    for method_id, kind, role, extra in methods:
        ingest(
            f"enrol-{method_id}",
            EventType.METHOD_ENROLLED,
            at=enrolled_at,
            customer_id="cust-large",
            method_id=method_id,
            kind=kind,
            role=role,
            **extra,
        )
    customer = Customer.objects.get(customer_id="cust-large")
    rows = list(Method.objects.filter(customer=customer))
    history = 5_000 - len(rows) - 3
    start = enrolled_at + timedelta(hours=1)
    # About 14 events a day per method: far below the lock, and all older than the window.
    spacing = (T0 - timedelta(days=2) - start) / history
    Event.objects.bulk_create(
        (
            Event(
                event_id=f"hist-{i:05d}",
                type=HISTORY_TYPES[i % len(HISTORY_TYPES)],
                customer=customer,
                method=rows[i % len(rows)],
                occurred_at=start + spacing * i,
                data={"method_id": rows[i % len(rows)].method_id},
            )
            for i in range(history)
        ),
        batch_size=1_000,
    )
    for i in range(3):
        ingest(
            f"recent-{i}",
            EventType.CODE_RESEND_REQUESTED,
            at=T0 - timedelta(minutes=10 - i),
            customer_id="cust-large",
            method_id="m-sms",
        )
    assert Event.objects.filter(customer=customer).count() == 5_000

    # The stored projection is what folding the whole history gives.
    for method in Method.objects.filter(customer=customer):
        folded, _ = policy.fold(
            (
                policy.FoldEvent(event_id=e.event_id, type=e.type, occurred_at=e.occurred_at)
                for e in method.events.all()
            ),
            lock_policy(),
        )
        stored = method_projection(method)
        assert stored.resend_count(T0, lock_policy()) == folded.resend_count(T0, lock_policy())
        assert stored.is_locked(T0) is folded.is_locked(T0) is False

    sms = Method.objects.get(method_id="m-sms")
    DeliveryLookup.objects.create(
        customer=customer,
        method=sms,
        status="succeeded",
        verdict="delivered",
        period_start=T0 - timedelta(hours=24),
        finished_at=T0 - timedelta(minutes=2),
    )
    return "cust-large"


CUSTOMERS = [
    pytest.param(small_customer, 1, id="1 method, 1 event"),
    pytest.param(large_customer, 5, id="5 methods, 5000 events"),
]


@pytest.mark.parametrize(("build", "methods"), CUSTOMERS)
def test_state_endpoint_runs_at_most_8_queries(
    agent_client, django_assert_max_num_queries, build, methods
):
    customer_id = build()
    url = f"/api/v1/customers/{customer_id}/twosv/"

    with django_assert_max_num_queries(MAX_QUERIES):
        response = agent_client.get(url)

    assert response.status_code == 200
    body = response.json()
    assert len(body["methods"]) == methods
    assert body["methods"][0]["resends"]["count"] == (0 if methods == 1 else 3)
    if methods == 5:
        assert body["latest_lookup"]["verdict"] == "delivered"


@pytest.mark.parametrize(("build", "methods"), CUSTOMERS)
def test_session_read_runs_at_most_8_queries(
    agent_client, django_assert_max_num_queries, build, methods
):
    customer_id = build()
    created = agent_client.post(
        f"/api/v1/customers/{customer_id}/twosv/sessions/",
        {"answers": {"has_device_access": True}},
        format="json",
    )
    assert created.status_code == 201
    url = f"/api/v1/twosv/sessions/{created.json()['id']}/"

    with django_assert_max_num_queries(MAX_QUERIES):
        response = agent_client.get(url)

    assert response.status_code == 200
    assert response.json()["next_step"]["code"] == "verify_phone_number"


@pytest.mark.parametrize(("build", "methods"), CUSTOMERS)
def test_state_endpoint_runs_at_most_8_queries_for_a_signed_in_agent(
    client, agent, django_assert_max_num_queries, build, methods
):
    """A browser session costs two queries (session and user) where a token costs one."""
    customer_id = build()
    client.force_login(agent)

    with django_assert_max_num_queries(MAX_QUERIES):
        response = client.get(f"/api/v1/customers/{customer_id}/twosv/")

    assert response.status_code == 200
    assert len(response.json()["methods"]) == methods


def test_the_query_count_does_not_grow_with_the_history(agent_client):
    counts = []
    for build in (small_customer, large_customer):
        customer_id = build()
        # Both reads start from a cold cache of the advisory settings, shared and local.
        cache.clear()
        advisory_settings_forget_local()
        with CaptureQueriesContext(connection) as captured:
            assert agent_client.get(f"/api/v1/customers/{customer_id}/twosv/").status_code == 200
        counts.append(len(captured))

    assert counts[0] == counts[1]
