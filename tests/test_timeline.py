"""A method's timeline (docs/SPEC.md §10): events, lookup attempts and receipts, newest first.

The clock is frozen at builders.T0. The suite-wide scan (tests/conftest.py) checks that no
response carries a full number, and that every answer matches the OpenAPI schema.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests import factories
from tests.builders import PHONE, T0, enroll, ingest, resends
from tests.twilio_server import message_sid
from twosv.models import AuditEntry, DeliveryAttempt, DeliveryLookup, EventType, LookupStatus
from twosv.services.receipts import receipt_record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]

NEW_PHONE = "+14155550188"


def url(customer_id: str = "c-1", method_id: str = "m-1", **query: Any) -> str:
    path = f"/api/v1/customers/{customer_id}/twosv/methods/{method_id}/timeline/"
    if query:
        from urllib.parse import urlencode

        path += "?" + urlencode(query)
    return path


def receipt(sid: int, status: str, at, code: int | None = None, to: str = PHONE) -> None:
    receipt_record(
        message_sid=message_sid(sid),
        status=status,
        error_code=code,
        to=to,
        sender="+14803605516",
        now=at,
    )


def attempt(method, sid: int, status: str, at, code: int | None = None, lookup=None):
    lookup = lookup or DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        status=LookupStatus.SUCCEEDED,
        period_start=at - timedelta(hours=24),
    )
    DeliveryAttempt.objects.create(
        lookup=lookup,
        external_id=message_sid(sid),
        sent_at=at,
        status=status,
        error_code=code,
        provider="twilio",
        sender="+14803605516",
    )
    return lookup


@pytest.fixture
def method(small_threshold: int):
    return enroll()


def test_events_attempts_and_receipts_in_one_list_newest_first(agent_client, method) -> None:
    ingest("sent", EventType.CODE_SENT, at=T0 - timedelta(minutes=50))
    attempt(method, 1, "undelivered", T0 - timedelta(minutes=49), code=30003)
    ingest("again", at=T0 - timedelta(minutes=40))
    receipt(2, "sent", T0 - timedelta(minutes=39))
    receipt(2, "delivered", T0 - timedelta(minutes=38))
    ingest("ok", EventType.CODE_VERIFIED, at=T0 - timedelta(minutes=30))
    ingest("typo", EventType.CODE_REJECTED, at=T0 - timedelta(minutes=31))

    response = agent_client.get(url())

    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    assert [item["type"] for item in body["items"]] == [
        "verified",
        "rejected",
        "delivery_receipt",
        "delivery_receipt",
        "resend_requested",
        "delivery_attempt",
        "code_sent",
    ]
    ats = [item["at"] for item in body["items"]]
    assert ats == sorted(ats, reverse=True)
    undelivered = body["items"][5]
    assert (undelivered["status"], undelivered["error_code"]) == ("undelivered", 30003)
    assert "Unreachable handset" in undelivered["detail"]
    assert "+1 ••••••••23" in undelivered["detail"]
    delivered = body["items"][2]
    assert (delivered["status"], delivered["error_code"]) == ("delivered", None)
    assert message_sid(2) in delivered["detail"]
    assert body["items"][0]["status"] is None


def test_locks_blocks_lifts_number_changes_and_removal_are_named(agent_client, method) -> None:
    resends(method, 4, start=T0 - timedelta(hours=2), step=timedelta(minutes=1))
    ingest("blocked", at=T0 - timedelta(hours=1))
    ingest(
        "changed",
        EventType.PHONE_NUMBER_CHANGED,
        at=T0 - timedelta(minutes=20),
        phone_number=NEW_PHONE,
    )
    ingest("gone", EventType.METHOD_REMOVED, at=T0 - timedelta(minutes=10))

    body = agent_client.get(url()).json()

    types = [item["type"] for item in body["items"]]
    assert types[:3] == ["removed", "number_changed", "resend_blocked"]
    assert types[3] == "locked"
    assert types.count("resend_requested") == 3
    changed = body["items"][1]["detail"]
    assert "+1 ••••••••88" in changed


def test_the_default_is_the_last_24_hours_and_since_reaches_further(agent_client, method) -> None:
    ingest("old", EventType.CODE_SENT, at=T0 - timedelta(hours=30))
    ingest("new", EventType.CODE_SENT, at=T0 - timedelta(hours=1))

    default = agent_client.get(url()).json()["items"]
    longer = agent_client.get(url(since=(T0 - timedelta(days=30)).isoformat())).json()["items"]

    assert len(default) == 1
    assert [i["type"] for i in longer] == ["code_sent", "code_sent", "enrolled"]


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "2026-03-01T12:00:00"},  # no time zone
        {"cursor": "not-a-cursor"},
        {"limit": "0"},
        {"limit": "501"},
        {"page": "2"},
    ],
    ids=["not a date", "naive", "forged cursor", "limit 0", "limit 501", "unknown parameter"],
)
def test_bad_parameters_are_400(agent_client, method, query) -> None:
    response = agent_client.get(url(**query))

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid", "unknown_field"}


def test_the_cursor_pages_through_everything_once(agent_client, method) -> None:
    for minute in range(7):
        ingest(f"r{minute}", at=T0 - timedelta(minutes=60 - minute))
    # Same instant in two sources: the key (time, source, row) still orders them.
    at = T0 - timedelta(minutes=30)
    ingest("same", EventType.CODE_SENT, at=at)
    receipt(5, "delivered", at)
    attempt(method, 6, "delivered", at)
    everything = agent_client.get(url()).json()["items"]

    pages, cursor = [], None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = agent_client.get(url(**query)).json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [item for page in pages for item in page] == everything


def test_a_cursor_of_another_methods_timeline_is_refused(agent_client, method) -> None:
    enroll(method_id="m-2", phone_number="+14155550177")
    for n in range(3):
        ingest(f"a{n}", EventType.CODE_SENT, at=T0 - timedelta(minutes=n + 1))
    cursor = agent_client.get(url(limit=1)).json()["next_cursor"]

    response = agent_client.get(url(method_id="m-2", cursor=cursor))

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"


def test_at_most_500_items_a_page(agent_client, method, settings) -> None:
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 10_000
    resends(method, 501, start=T0 - timedelta(hours=10), step=timedelta(seconds=10))

    body = agent_client.get(url()).json()

    assert len(body["items"]) == 500
    assert body["next_cursor"] is not None
    rest = agent_client.get(url(cursor=body["next_cursor"])).json()
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None


def test_each_message_appears_once_and_receipts_speak_for_their_message(
    agent_client, method
) -> None:
    first = attempt(method, 1, "sent", T0 - timedelta(minutes=20))
    attempt(method, 2, "sent", T0 - timedelta(minutes=10), lookup=first)
    second = attempt(method, 1, "delivered", T0 - timedelta(minutes=20))
    attempt(method, 2, "sent", T0 - timedelta(minutes=10), lookup=second)
    receipt(2, "delivered", T0 - timedelta(minutes=5))

    items = agent_client.get(url()).json()["items"]

    assert [(i["type"], i["status"]) for i in items] == [
        ("delivery_receipt", "delivered"),
        ("delivery_attempt", "delivered"),
    ]


def test_a_removed_method_keeps_its_timeline(agent_client, method) -> None:
    ingest("gone", EventType.METHOD_REMOVED, at=T0 - timedelta(minutes=10))

    assert agent_client.get(url()).status_code == 200


def test_reading_is_audited(agent_client, method) -> None:
    agent_client.get(url(), REMOTE_ADDR="203.0.113.4")

    entry = AuditEntry.objects.get(action="timeline_read")
    assert (entry.actor_username, entry.customer_ref, entry.result) == ("agent", "c-1", "ok")
    assert entry.details["method_id"] == "m-1"
    assert PHONE.lstrip("+") not in str(entry.details)


def test_unknown_customer_and_other_customers_method_are_404(agent_client, method) -> None:
    other = factories.MethodFactory(method_id="m-other", phone_number="+14155550166")

    unknown_customer = agent_client.get(url(customer_id="nobody"))
    others = agent_client.get(url(method_id=other.method_id))
    unknown = agent_client.get(url(method_id="m-nope"))

    assert unknown_customer.status_code == others.status_code == unknown.status_code == 404
    assert unknown_customer.json()["error"]["code"] == "unknown_customer"
    assert others.json() == unknown.json()
    assert not AuditEntry.objects.filter(action="timeline_read").exists()


def test_credentials_and_roles(producer_client, method) -> None:
    assert APIClient().get(url()).status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert bad.get(url()).status_code == 401
    assert producer_client.get(url()).status_code == 403
