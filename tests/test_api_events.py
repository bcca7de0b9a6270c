"""POST /api/v1/events/ and /api/v1/events/batch/: what producers see (docs/SPEC.md §3, §5)."""

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import IntegrityError
from django.db.models import Q
from rest_framework.test import APIClient

from tests import builders
from tests.builders import METHOD_KEYS, T0, event, parse_time
from twosv import policy
from twosv.models import Customer, Event, EventOutcome, Method
from twosv.selectors import lock_policy, method_projection

ENROLLED_AT = T0 - timedelta(days=2)
# Not +14155550100: that one is the example in the validation message.
PHONE = "+14155550142"
EVENTS_URL = "/api/v1/events/"
BATCH_URL = "/api/v1/events/batch/"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


def enrolment(event_id: str = "enrol-1", **data: Any) -> dict[str, Any]:
    """The SMS primary m-sms with PHONE, two days before T0 (every key present, to remove)."""
    return builders.enrolment(event_id, at=ENROLLED_AT, **{"phone_number": PHONE, **data})


def post(client: APIClient, body: Any, url: str = EVENTS_URL):
    return client.post(url, json.dumps(body), content_type="application/json")


def stored() -> tuple[int, int, int]:
    """Everything a refused event could have left behind."""
    return (Event.objects.count(), Customer.objects.count(), Method.objects.count())


@pytest.fixture
def sms_method(producer_client):
    response = post(producer_client, enrolment())
    assert response.status_code == 201, response.json()
    return Method.objects.get(method_id="m-sms")


# ---------------------------------------------------------------------------------------------
# Accepted events
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "phone_masked"),
    [
        ({"kind": "sms", "role": "primary", "phone_number": PHONE}, "+1 ••••••••42"),
        ({"kind": "voice", "role": "backup", "phone_number": "+919876543210"}, "+91 ••••••••10"),
        ({"kind": "email", "role": "primary", "email": "ada@example.com"}, None),
        ({"kind": "authenticator_app", "role": "backup", "label": "Phone app"}, None),
        ({"kind": "security_key", "role": "backup"}, None),
    ],
)
def test_enrolment_of_each_kind_is_accepted_and_answers_the_new_method(
    producer_client, data, phone_masked
):
    response = post(producer_client, event("e-1", "method_enrolled", method_id="m-new", **data))

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "accepted"
    method = body["method"]
    assert set(method) == METHOD_KEYS
    assert method["id"] == "m-new"
    assert method["kind"] == data["kind"]
    assert method["status"] == "active"
    assert method["lock"] is None
    # Methods that receive no codes have no resends to count.
    receives_codes = data["kind"] in {"sms", "voice", "email"}
    expected = {"count": 0, "threshold": 200, "blocked": 0} if receives_codes else None
    assert method["resends"] == expected
    # Backup methods are hidden from the CRM unless the event says otherwise.
    assert method["hidden_from_crm"] is (data["role"] == "backup")
    assert (method["phone"] or {}).get("masked") == phone_masked
    # The full number never leaves the API.
    assert data.get("phone_number", "+") not in response.content.decode()
    assert Customer.objects.filter(customer_id="cust-1").exists()


def test_every_producer_event_type_is_accepted_with_the_state_after_it(producer_client, sms_method):
    steps = [
        ("code_sent", {}, "active", 0),
        ("code_resend_requested", {}, "active", 1),
        ("code_resend_requested", {}, "active", 2),
        ("code_rejected", {}, "active", 2),
        ("code_verified", {}, "active", 0),
        ("phone_number_changed", {"phone_number": "+14155550199"}, "active", 0),
        ("method_removed", {}, "removed", 0),
    ]
    for n, (type_, data, status, count) in enumerate(steps):
        at = T0 - timedelta(minutes=30) + timedelta(minutes=n)
        response = post(producer_client, event(f"e-{n}", type_, at=at, **data))

        assert response.status_code == 201, (type_, response.json())
        body = response.json()
        assert body["status"] == "accepted"
        assert set(body["method"]) == METHOD_KEYS
        assert body["method"]["status"] == status, type_
        assert body["method"]["resends"] == {"count": count, "threshold": 200, "blocked": 0}, type_

    assert Event.objects.filter(method=sms_method).count() == len(steps) + 1
    sms_method.refresh_from_db()
    assert sms_method.phone_number == "+14155550199"
    assert sms_method.removed_at == T0 - timedelta(minutes=24)


def test_replayed_event_id_answers_duplicate_and_changes_nothing(producer_client, sms_method):
    first = post(producer_client, event("resend-1"))
    assert first.status_code == 201
    assert first.json()["method"]["resends"]["count"] == 1
    before = stored()

    replay = post(producer_client, event("resend-1"))
    # Same id, different content: still the stored event, not a new one.
    altered = post(producer_client, event("resend-1", "code_verified", at=T0))

    for response in (replay, altered):
        assert response.status_code == 200
        assert response.json()["status"] == "duplicate"
        assert response.json()["method"]["resends"]["count"] == 1
    assert stored() == before
    assert Event.objects.get(event_id="resend-1").type == "code_resend_requested"


def test_replayed_enrolment_is_a_duplicate_not_a_conflict(producer_client, sms_method):
    response = post(producer_client, enrolment())

    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert response.json()["method"]["id"] == "m-sms"


def test_the_201st_resend_through_the_api_locks_for_exactly_24_hours(producer_client, sms_method):
    start = T0 - timedelta(hours=1)
    batch = [event(f"r-{i:03d}", at=start + timedelta(seconds=i)) for i in range(200)]
    results = post(producer_client, {"events": batch}, BATCH_URL).json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 200
    assert results[-1]["method"]["status"] == "active"
    assert results[-1]["method"]["resends"]["count"] == 200

    t201 = start + timedelta(seconds=200, microseconds=250)
    response = post(producer_client, event("r-200", at=t201))

    assert response.status_code == 201
    method = response.json()["method"]
    assert method["status"] == "locked"
    assert parse_time(method["lock"]["locked_at"]) == t201
    assert parse_time(method["lock"]["locked_until"]) == t201 + timedelta(hours=24)
    # 23 h 3 min 20.00025 s left at T0, rounded up.
    assert method["lock"]["seconds_remaining"] == 83_001
    assert method["resends"]["count"] == 0
    assert Event.objects.get(event_id="r-200").outcome == EventOutcome.LOCKED

    # A resend during the lock is blocked and doesn't extend it.
    blocked = post(producer_client, event("r-201", at=T0)).json()["method"]
    assert blocked["status"] == "locked"
    assert parse_time(blocked["lock"]["locked_until"]) == t201 + timedelta(hours=24)
    assert Event.objects.get(event_id="r-201").outcome == EventOutcome.BLOCKED


# ---------------------------------------------------------------------------------------------
# Conflicts and forbidden types: 409 / 403, nothing stored
# ---------------------------------------------------------------------------------------------


def test_event_for_an_unknown_method_is_409_and_stores_nothing(producer_client):
    response = post(producer_client, event("e-1", customer_id="brand-new", method_id="m-ghost"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "unknown_method"
    assert response.json()["error"]["field"] == "data.method_id"
    assert stored() == (0, 0, 0)
    assert not Customer.objects.filter(customer_id="brand-new").exists()


def test_event_naming_another_customers_method_is_409(producer_client, sms_method):
    before = stored()

    response = post(producer_client, event("e-1", customer_id="cust-2"))

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "method_of_other_customer",
        "message": "This method belongs to another customer.",
        "field": "data.method_id",
    }
    assert stored() == before
    assert not Customer.objects.filter(customer_id="cust-2").exists()


@pytest.mark.parametrize("customer_id", ["cust-1", "cust-2"])
def test_enrolling_an_existing_method_id_is_409(producer_client, sms_method, customer_id):
    before = stored()

    body = enrolment("enrol-2", kind="email", email="x@example.com")
    body["customer_id"] = customer_id
    del body["data"]["phone_number"]
    response = post(producer_client, body)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "method_exists"
    assert stored() == before
    sms_method.refresh_from_db()
    assert sms_method.kind == "sms"


def test_producer_cannot_post_lock_lifted(producer_client, sms_method):
    before = stored()

    response = post(producer_client, event("lift-1", "lock_lifted"))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_event_type"
    assert response.json()["error"]["field"] == "type"
    assert stored() == before


# ---------------------------------------------------------------------------------------------
# Bad input of every kind in docs/SPEC.md section 3: 4xx, the field named, nothing stored
# ---------------------------------------------------------------------------------------------


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    target = body
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return body


# (id, body, field, code): every body would be accepted but for the one thing wrong with it.
BAD_EVENTS: list[tuple[str, dict[str, Any], str, str]] = [
    ("event_id missing", _without(event("x"), "event_id"), "event_id", "required"),
    ("event_id empty", event(""), "event_id", "invalid"),
    ("event_id 129 chars", event("e" * 129), "event_id", "invalid"),
    ("event_id bell", event("abc\x07"), "event_id", "invalid"),
    ("event_id newline", event("abc\n"), "event_id", "invalid"),
    ("event_id NUL", event("abc\x00"), "event_id", "invalid"),
    ("event_id a number", event(123), "event_id", "invalid"),
    ("type unknown", _with(event("x"), "type", "code_exploded"), "type", "invalid"),
    ("type missing", _without(event("x"), "type"), "type", "required"),
    ("type a list", _with(event("x"), "type", ["code_sent"]), "type", "invalid"),
    ("customer_id missing", _without(event("x"), "customer_id"), "customer_id", "required"),
    ("customer_id empty", event("x", customer_id=""), "customer_id", "invalid"),
    ("customer_id space", event("x", customer_id="cust 1"), "customer_id", "invalid"),
    ("customer_id 65 chars", event("x", customer_id="c" * 65), "customer_id", "invalid"),
    (
        "customer_id SQL",
        event("x", customer_id="cust-1'; DROP TABLE twosv_event;--"),
        "customer_id",
        "invalid",
    ),
    ("customer_id quote", event("x", customer_id='cust-1" OR "1"="1'), "customer_id", "invalid"),
    ("customer_id accented", event("x", customer_id="cüst-1"), "customer_id", "invalid"),
    (
        "customer_id fullwidth",
        event("x", customer_id="\uff43\uff55\uff53\uff54-1"),
        "customer_id",
        "invalid",
    ),
    ("customer_id zero-width", event("x", customer_id="cust\u200b-1"), "customer_id", "invalid"),
    ("customer_id trailing newline", event("x", customer_id="cust-1\n"), "customer_id", "invalid"),
    ("customer_id a number", event("x", customer_id=12345), "customer_id", "invalid"),
    ("occurred_at missing", _without(event("x"), "occurred_at"), "occurred_at", "required"),
    (
        "occurred_at naive",
        _with(event("x"), "occurred_at", "2026-03-02T11:00:00"),
        "occurred_at",
        "invalid",
    ),
    (
        "occurred_at before 2000",
        event("x", at=datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        "occurred_at",
        "invalid",
    ),
    (
        "occurred_at 5 min 1 s ahead",
        event("x", at=T0 + timedelta(minutes=5, seconds=1)),
        "occurred_at",
        "invalid",
    ),
    ("occurred_at a year ahead", event("x", at=T0 + timedelta(days=365)), "occurred_at", "invalid"),
    (
        "occurred_at a number",
        _with(event("x"), "occurred_at", 1772452800),
        "occurred_at",
        "invalid",
    ),
    ("occurred_at words", _with(event("x"), "occurred_at", "yesterday"), "occurred_at", "invalid"),
    (
        "occurred_at 30 February",
        _with(event("x"), "occurred_at", "2026-02-30T10:00:00Z"),
        "occurred_at",
        "invalid",
    ),
    (
        "occurred_at year 9999 west of UTC",
        _with(event("x"), "occurred_at", "9999-12-31T23:59:59-01:00"),
        "occurred_at",
        "invalid",
    ),
    ("data missing", _without(event("x"), "data"), "data", "required"),
    ("data a string", _with(event("x"), "data", "m-sms"), "data", "invalid"),
    ("data a list", _with(event("x"), "data", ["m-sms"]), "data", "invalid"),
    ("data null", _with(event("x"), "data", None), "data", "invalid"),
    ("method_id missing", _with(event("x"), "data", {}), "data.method_id", "required"),
    ("method_id empty", event("x", method_id=""), "data.method_id", "invalid"),
    ("method_id 129 chars", event("x", method_id="m" * 129), "data.method_id", "invalid"),
    ("method_id a number", event("x", method_id=7), "data.method_id", "invalid"),
    ("method_id NUL", event("x", method_id="m\x00"), "data.method_id", "invalid"),
    (
        "extra top-level field",
        _with(event("x"), "resend_count", 0),
        "resend_count",
        "unknown_field",
    ),
    (
        "extra top-level locked_until",
        _with(event("x"), "locked_until", None),
        "locked_until",
        "unknown_field",
    ),
    ("code in data", event("x", code="123456"), "data.code", "unknown_field"),
    ("secret in data", event("x", secret="JBSWY3DPEHPK3PXP"), "data.secret", "unknown_field"),
    ("phone on a resend", event("x", phone_number=PHONE), "data.phone_number", "unknown_field"),
    (
        "phone 0044",
        enrolment("x", method_id="m-2", phone_number="00442079460958"),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "phone spaces",
        enrolment("x", method_id="m-2", phone_number="+1 415 555"),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "phone letters",
        enrolment("x", method_id="m-2", phone_number="+1415555CALL"),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "phone invalid number",
        enrolment("x", method_id="m-2", phone_number="+11234567890"),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "phone too long",
        enrolment("x", method_id="m-2", phone_number="+1" + "4" * 20),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "phone a number",
        enrolment("x", method_id="m-2", phone_number=14155550100),
        "data.phone_number",
        "invalid",
    ),
    (
        "phone empty",
        enrolment("x", method_id="m-2", phone_number=""),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "phone on an authenticator",
        enrolment("x", method_id="m-2", kind="authenticator_app", role="backup"),
        "data.phone_number",
        "invalid",
    ),
    (
        "sms without phone",
        _without(enrolment("x", method_id="m-2"), "data", "phone_number"),
        "data.phone_number",
        "required",
    ),
    (
        "voice without phone",
        _without(enrolment("x", method_id="m-2", kind="voice"), "data", "phone_number"),
        "data.phone_number",
        "required",
    ),
    (
        "kind unknown",
        enrolment("x", method_id="m-2", kind="carrier_pigeon"),
        "data.kind",
        "invalid",
    ),
    (
        "kind missing",
        _without(enrolment("x", method_id="m-2"), "data", "kind"),
        "data.kind",
        "required",
    ),
    ("role unknown", enrolment("x", method_id="m-2", role="tertiary"), "data.role", "invalid"),
    (
        "role missing",
        _without(enrolment("x", method_id="m-2"), "data", "role"),
        "data.role",
        "required",
    ),
    ("label 101 chars", enrolment("x", method_id="m-2", label="l" * 101), "data.label", "invalid"),
    ("label NUL", enrolment("x", method_id="m-2", label="Work\x00"), "data.label", "invalid"),
    (
        "visible_in_crm a string",
        enrolment("x", method_id="m-2", visible_in_crm="yes"),
        "data.visible_in_crm",
        "invalid",
    ),
    (
        "email on sms",
        enrolment("x", method_id="m-2", email="a@example.com"),
        "data.email",
        "invalid",
    ),
    (
        "email invalid",
        _without(
            enrolment("x", method_id="m-2", kind="email", email="not-an-address"),
            "data",
            "phone_number",
        ),
        "data.email",
        "invalid",
    ),
    (
        "email 255 chars",
        _without(
            enrolment(
                "x",
                method_id="m-2",
                kind="email",
                email="a" * 60 + "@" + ("b" * 60 + ".") * 3 + "example.com",
            ),
            "data",
            "phone_number",
        ),
        "data.email",
        "invalid",
    ),
    (
        "resend_count in enrolment",
        enrolment("x", method_id="m-2", resend_count=0),
        "data.resend_count",
        "unknown_field",
    ),
    (
        "new number invalid",
        event("x", "phone_number_changed", phone_number="+1415555"),
        "data.phone_number",
        "invalid_phone_number",
    ),
    (
        "new number missing",
        event("x", "phone_number_changed"),
        "data.phone_number",
        "required",
    ),
]


def test_the_bad_event_bodies_are_otherwise_valid(producer_client, sms_method):
    """Guard for the table: the untouched bodies are accepted."""
    assert post(producer_client, event("ok-1")).status_code == 201
    assert post(producer_client, enrolment("ok-2", method_id="m-2")).status_code == 201


@pytest.mark.parametrize(
    ("body", "field", "code"), [case[1:] for case in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS]
)
def test_bad_event_is_400_naming_the_field_and_stores_nothing(
    producer_client, sms_method, body, field, code
):
    before = stored()

    response = post(producer_client, body)

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["field"] == field
    assert error["code"] == code
    assert error["message"]
    assert stored() == before
    sms_method.refresh_from_db()
    assert sms_method.resend_times == []


def test_an_otp_in_data_is_never_stored(producer_client, sms_method):
    post(producer_client, event("e-1", code="123456"))
    post(producer_client, {"events": [event("e-2", code="123456")]}, BATCH_URL)

    assert not Event.objects.filter(Q(event_id__in=["e-1", "e-2"]) | Q(data__has_key="code"))


def test_occurred_at_up_to_5_minutes_ahead_and_any_offset_is_accepted(producer_client, sms_method):
    ahead = post(producer_client, event("e-1", at=T0 + timedelta(minutes=5)))
    body = event("e-2")
    body["occurred_at"] = "2026-03-02T13:04:00+02:00"  # 11:04Z, written in another zone
    offset = post(producer_client, body)

    assert ahead.status_code == 201
    assert offset.status_code == 201
    assert Event.objects.get(event_id="e-2").occurred_at == T0 - timedelta(minutes=56)


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        (
            "event_id=e-1&type=code_sent",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (json.dumps(event("e-1")), "text/plain", 415, "unsupported_media_type"),
        (json.dumps(event("e-1")), "application/xml", 415, "unsupported_media_type"),
        ('{"event_id": "e-1", "type": ', "application/json", 400, "parse_error"),
        ("{'event_id': 'e-1'}", "application/json", 400, "parse_error"),
        ('{"event_id": NaN}', "application/json", 400, "parse_error"),
        (b"\xff\xfe{}", "application/json", 400, "parse_error"),
        ("[" * 50_000 + "]" * 50_000, "application/json", 400, "parse_error"),
        (json.dumps([event("e-1")]), "application/json", 400, "invalid"),
        ('"e-1"', "application/json", 400, "invalid"),
        ("null", "application/json", 400, "invalid"),
        ("", "application/json", 400, "required"),
        (json.dumps(event("abc\ud800")), "application/json", 400, "parse_error"),
        (json.dumps(enrolment(label="Work\udfff")), "application/json", 400, "parse_error"),
        (json.dumps(event("e-1", **{"\ud800": 1})), "application/json", 400, "parse_error"),
        (json.dumps({**event("e-1"), "\udbff": 1}), "application/json", 400, "parse_error"),
    ],
    ids=[
        "form",
        "text/plain",
        "xml",
        "truncated JSON",
        "single quotes",
        "NaN",
        "not UTF-8",
        "nested too deep",
        "JSON array",
        "JSON string",
        "JSON null",
        "empty body",
        "lone surrogate in event_id",
        "lone surrogate in label",
        "lone surrogate as a data key",
        "lone surrogate as a field name",
    ],
)
def test_malformed_request_is_4xx_in_the_error_shape(
    producer_client, sms_method, raw, content_type, status, code
):
    before = stored()

    response = producer_client.post(EVENTS_URL, raw, content_type=content_type)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert stored() == before


def test_body_over_the_upload_limit_is_413(producer_client, sms_method, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    before = stored()

    response = post(producer_client, event("e-1", label="x" * 20_000))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert stored() == before


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def test_batch_results_are_in_order_and_each_event_stands_alone(producer_client, sms_method):
    start = T0 - timedelta(minutes=10)
    events = [
        event("b-1", at=start),
        event("b-2", "code_exploded", at=start),
        event("b-3", at=start + timedelta(seconds=1), code="123456"),
        "not an event",
        event("b-4", at=start + timedelta(seconds=2), method_id="m-ghost"),
        event("b-5", "lock_lifted", at=start),
        event("b-6", at=start + timedelta(seconds=3)),
        event("b-1", at=start),
    ]

    response = post(producer_client, {"events": events}, BATCH_URL)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["event_id"], r["status"]) for r in results] == [
        ("b-1", "accepted"),
        ("b-2", "rejected"),
        ("b-3", "rejected"),
        (None, "rejected"),
        ("b-4", "rejected"),
        ("b-5", "rejected"),
        ("b-6", "accepted"),
        ("b-1", "duplicate"),
    ]
    errors = [(r["error"]["code"], r["error"].get("field")) for r in results if "error" in r]
    assert errors == [
        ("invalid", "type"),
        ("unknown_field", "data.code"),
        ("invalid", None),
        ("unknown_method", "data.method_id"),
        ("forbidden_event_type", "type"),
    ]
    assert results[0]["method"]["resends"]["count"] == 1
    assert results[6]["method"]["resends"]["count"] == 2
    assert results[7]["method"]["resends"]["count"] == 2
    assert sorted(
        Event.objects.exclude(type="method_enrolled").values_list("event_id", flat=True)
    ) == [
        "b-1",
        "b-6",
    ]


def test_duplicate_inside_one_batch_counts_once(producer_client, sms_method):
    events = [event("d-1"), event("d-1"), event("d-1", "code_verified")]

    results = post(producer_client, {"events": events}, BATCH_URL).json()["results"]

    assert [r["status"] for r in results] == ["accepted", "duplicate", "duplicate"]
    assert results[-1]["method"]["resends"]["count"] == 1
    assert Event.objects.filter(event_id="d-1").count() == 1


def test_batch_rejects_every_bad_event_the_single_endpoint_rejects(producer_client, sms_method):
    """The whole table through one batch, each bad event between two good ones."""
    events: list[Any] = []
    for n, (_, body, _, _) in enumerate(BAD_EVENTS):
        events.append(event(f"good-{n:03d}", "code_sent", at=T0 - timedelta(hours=2, seconds=-n)))
        events.append(body)
    before = Event.objects.count()

    results = post(producer_client, {"events": events}, BATCH_URL).json()["results"]

    assert len(results) == len(events)
    assert all(r["status"] == "accepted" for r in results[0::2])
    rejected = [(r["status"], r["error"]["code"], r["error"].get("field")) for r in results[1::2]]
    assert rejected == [("rejected", code, field) for (_, _, field, code) in BAD_EVENTS]
    assert Event.objects.count() == before + len(BAD_EVENTS)


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"events": [{"event_id": "x"}] * 501}, 400, "batch_too_large", "events"),
        ({"events": "b-1"}, 400, "invalid", "events"),
        ({"events": None}, 400, "invalid", "events"),
        ({}, 400, "required", "events"),
        ([event("b-1")], 400, "invalid", None),
    ],
    ids=["501 events", "events a string", "events null", "events missing", "JSON array"],
)
def test_bad_batch_is_400_and_stores_nothing(
    producer_client, sms_method, body, status, code, field
):
    before = stored()

    response = post(producer_client, body, BATCH_URL)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"].get("field") == field
    assert stored() == before


def test_batch_of_exactly_500_is_taken(producer_client, sms_method):
    # Invalid types keep this fast: the point is that 500 is read, one by one, and 501 is not.
    events = [event(f"s-{i:03d}", "code_exploded") for i in range(499)] + [event("s-499")]

    response = post(producer_client, {"events": events}, BATCH_URL)

    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 500
    assert results[-1]["status"] == "accepted"
    assert results[-1]["event_id"] == "s-499"


# ---------------------------------------------------------------------------------------------
# Credentials and roles
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [EVENTS_URL, BATCH_URL])
def test_without_credentials_is_401_offering_token_auth(url, db):
    response = post(APIClient(), {"events": [event("e-1")]}, url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert response.json()["error"]["code"] == "not_authenticated"


def test_unknown_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")

    response = post(client, event("e-1"))

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.parametrize("client_fixture", ["agent_client", "staff_client"])
@pytest.mark.parametrize("url", [EVENTS_URL, BATCH_URL])
def test_other_roles_may_not_post_events(request, producer_client, client_fixture, url):
    post(producer_client, enrolment())
    before = stored()
    client = request.getfixturevalue(client_fixture)

    body = event("e-1") if url == EVENTS_URL else {"events": [event("e-1")]}
    response = post(client, body, url)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert stored() == before


# ---------------------------------------------------------------------------------------------
# Batches: one transaction, set-based, the single path's answers
# ---------------------------------------------------------------------------------------------


def test_a_batch_of_201_resends_locks_exactly_at_the_201st(producer_client, sms_method):
    start = T0 - timedelta(hours=1)
    batch = [event(f"l-{i:03d}", at=start + timedelta(seconds=i)) for i in range(201)]

    results = post(producer_client, {"events": batch}, BATCH_URL).json()["results"]

    assert [r["status"] for r in results] == ["accepted"] * 201
    # Each result shows the method as it stood after that event.
    assert [r["method"]["resends"]["count"] for r in results[:200]] == list(range(1, 201))
    assert results[199]["method"]["status"] == "active"
    locked = results[200]["method"]
    t201 = start + timedelta(seconds=200)
    assert locked["status"] == "locked"
    assert parse_time(locked["lock"]["locked_at"]) == t201
    assert parse_time(locked["lock"]["locked_until"]) == t201 + timedelta(hours=24)
    assert locked["resends"]["count"] == 0
    outcomes = dict(
        Event.objects.filter(event_id__startswith="l-").values_list("event_id", "outcome")
    )
    assert outcomes.pop("l-200") == EventOutcome.LOCKED
    assert set(outcomes.values()) == {EventOutcome.COUNTED}
    method = Method.objects.get(method_id="m-sms")
    assert method.locked_at == t201
    assert method.resend_times == []
    assert (method.last_event_at, method.last_event_id) == (t201, "l-200")


def _new_method_enrolment(event_id: str, customer_id: str = "cust-2") -> dict[str, Any]:
    return event(
        event_id,
        "method_enrolled",
        at=ENROLLED_AT,
        customer_id=customer_id,
        method_id="m-new",
        kind="sms",
        role="primary",
        phone_number=PHONE,
    )


def test_a_batch_enrolling_a_method_then_using_it_answers_each_event(producer_client):
    start = T0 - timedelta(minutes=10)
    events = [
        event("n-0", at=start, customer_id="cust-2", method_id="m-new"),
        _new_method_enrolment("e-new"),
        event("n-1", at=start + timedelta(seconds=1), customer_id="cust-2", method_id="m-new"),
        event("n-x", at=start + timedelta(seconds=2), customer_id="cust-1", method_id="m-new"),
        event("n-2", at=start + timedelta(seconds=3), customer_id="cust-2", method_id="m-new"),
        event("n-1", at=start + timedelta(seconds=1), customer_id="cust-2", method_id="m-new"),
        _new_method_enrolment("e-again"),
        _new_method_enrolment("e-new"),
    ]

    results = post(producer_client, {"events": events}, BATCH_URL).json()["results"]

    assert [(r["event_id"], r["status"]) for r in results] == [
        ("n-0", "rejected"),
        ("e-new", "accepted"),
        ("n-1", "accepted"),
        ("n-x", "rejected"),
        ("n-2", "accepted"),
        ("n-1", "duplicate"),
        ("e-again", "rejected"),
        ("e-new", "duplicate"),
    ]
    assert [r["error"]["code"] for r in results if "error" in r] == [
        "unknown_method",
        "method_of_other_customer",
        "method_exists",
    ]
    assert [r["method"]["resends"]["count"] for r in results if "method" in r] == [0, 1, 2, 2, 2]
    assert all(set(r["method"]) == METHOD_KEYS for r in results if "method" in r)
    method = Method.objects.select_related("customer").get(method_id="m-new")
    assert method.customer.customer_id == "cust-2"
    assert len(method.resend_times) == 2
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["e-new", "n-1", "n-2"]


def test_a_batch_out_of_order_gives_the_projection_of_the_fold(
    producer_client, sms_method, settings
):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 5
    start = T0 - timedelta(hours=2)
    events = [event(f"o-{i:02d}", at=start + timedelta(minutes=i)) for i in range(16)]
    events.append(event("o-verify", "code_verified", at=start + timedelta(minutes=2, seconds=30)))
    random.Random(7).shuffle(events)

    results = post(producer_client, {"events": events}, BATCH_URL).json()["results"]

    assert {r["status"] for r in results} == {"accepted"}
    stored_events = list(Event.objects.filter(method=sms_method))
    expected, outcomes = policy.fold(
        (policy.FoldEvent(e.event_id, e.type, e.occurred_at) for e in stored_events), lock_policy()
    )
    assert method_projection(Method.objects.get(pk=sms_method.pk)) == expected
    assert expected.lock is not None
    by_id = {e.event_id: e.outcome for e in stored_events}
    assert {fe.event_id: outcome.value for fe, outcome in outcomes} == by_id


def test_a_batch_of_500_runs_a_fixed_number_of_queries(
    producer_client, sms_method, django_assert_max_num_queries
):
    start = T0 - timedelta(hours=3)
    events = [
        event(
            "q-enrol-a",
            "method_enrolled",
            at=ENROLLED_AT,
            method_id="m-a",
            kind="email",
            role="backup",
            email="ada@example.com",
        ),
        event(
            "q-enrol-b",
            "method_enrolled",
            at=ENROLLED_AT,
            customer_id="cust-3",
            method_id="m-b",
            kind="voice",
            role="backup",
            phone_number=PHONE,
        ),
    ]
    owners = [("m-sms", "cust-1"), ("m-a", "cust-1"), ("m-b", "cust-3")]
    for i in range(498):
        method_id, customer_id = owners[i % 3]
        at = start + timedelta(seconds=i if i % 50 else 1000 - i)  # some arrive late
        events.append(event(f"q-{i:03d}", at=at, customer_id=customer_id, method_id=method_id))

    with django_assert_max_num_queries(50):
        response = post(producer_client, {"events": events}, BATCH_URL)

    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 500
    assert Event.objects.filter(event_id__startswith="q-").count() == 500
    assert Method.objects.get(method_id="m-b").customer.customer_id == "cust-3"


def test_a_batch_that_loses_a_race_replays_event_by_event(producer_client, sms_method, monkeypatch):
    from twosv.services import ingestion

    real = ingestion._ingest_batch_locked

    def lose_the_race(*args: Any) -> None:
        real(*args)
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(ingestion, "_ingest_batch_locked", lose_the_race)
    events = [event("w-1"), event("w-1"), event("w-2", method_id="m-ghost"), event("w-3")]

    results = post(producer_client, {"events": events}, BATCH_URL).json()["results"]

    assert [r["status"] for r in results] == ["accepted", "duplicate", "rejected", "accepted"]
    assert results[2]["error"]["code"] == "unknown_method"
    assert results[-1]["method"]["resends"]["count"] == 2
    assert Event.objects.filter(event_id__startswith="w-").count() == 2


def test_a_batch_stores_each_event_as_the_single_endpoint_does(producer_client):
    """The batch writes its rows by hand: the same history sent both ways must be stored alike,
    row for row, and leave the two methods alike (an enrolment, resends up to a lock, a late
    event, a number change, a removal)."""

    def history(tag: str) -> list[dict[str, Any]]:
        ids = {"method_id": f"m-{tag}", "customer_id": f"cust-{tag}"}
        start = T0 - timedelta(hours=1)
        events = [enrolment(f"{tag}-enrol", **ids)]
        events += [
            event(f"{tag}-r{i:03d}", at=start + timedelta(seconds=i), **ids) for i in range(202)
        ]
        events += [
            event(f"{tag}-late", "code_sent", at=start - timedelta(minutes=5), **ids),
            event(
                f"{tag}-phone",
                "phone_number_changed",
                at=start + timedelta(minutes=10),
                phone_number="+14155550199",
                **ids,
            ),
            event(f"{tag}-gone", "method_removed", at=start + timedelta(minutes=20), **ids),
        ]
        return events

    for item in history("single"):
        assert post(producer_client, item).status_code in (200, 201)
    response = post(producer_client, {"events": history("batch")}, BATCH_URL)
    assert {r["status"] for r in response.json()["results"]} == {"accepted"}

    def rows(tag: str) -> list[dict[str, Any]]:
        found = Event.objects.filter(method__method_id=f"m-{tag}").order_by("event_id")
        return [
            {
                "event_id": e.event_id.removeprefix(f"{tag}-"),
                "type": e.type,
                "customer": e.customer.customer_id,
                "occurred_at": e.occurred_at,
                "received_at": e.received_at,
                "data": {**e.data, "method_id": "m"},
                "outcome": e.outcome,
            }
            for e in found.select_related("customer")
        ]

    def method(tag: str) -> dict[str, Any]:
        m = Method.objects.get(method_id=f"m-{tag}")
        return {f.attname: getattr(m, f.attname) for f in Method._meta.concrete_fields} | {
            "id": None,
            "customer_id": None,
            "method_id": None,
            "last_event_id": m.last_event_id.removeprefix(f"{tag}-"),
        }

    single, batch = rows("single"), rows("batch")
    assert len(batch) == 206
    assert [r | {"customer": None} for r in batch] == [r | {"customer": None} for r in single]
    assert {r["customer"] for r in batch} == {"cust-batch"}
    assert {r["outcome"] for r in batch} >= {"recorded", "locked"}
    assert method("batch") == method("single")


def test_the_batch_insert_writes_every_column_of_the_event_model():
    """A column added to Event must be added to the batch's hand-written insert too."""
    from twosv.services import EVENT_COLUMNS

    columns = {f.attname for f in Event._meta.concrete_fields if not f.primary_key}

    assert sorted(EVENT_COLUMNS) == sorted(columns)
