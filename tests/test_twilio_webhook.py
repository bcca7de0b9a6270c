"""Twilio's status callbacks (`POST /webhooks/twilio/message-status/`) and what receipts feed.

Signatures are computed by the twilio library itself (`RequestValidator.compute_signature`), over
the public callback URL, as Twilio computes them. Then: lookups answering from receipts when
they cover the period, and the reconciliation of messages whose final callback never came.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from twilio.request_validator import RequestValidator

from tests import factories
from tests.ats_server import ScriptedResponse
from tests.twilio_server import AUTH_TOKEN, CALLBACK_URL, TwilioTestServer, message_sid
from twosv.receipt_models import DeliveryReceipt, ReceiptVia, TwilioMessage
from twosv.services import receipts
from twosv.services.receipts import receipts_reconcile

pytestmark = pytest.mark.django_db

WEBHOOK = "/webhooks/twilio/message-status/"
PHONE = "+14155550123"
SID = message_sid(1)


def params(**overrides: Any) -> dict[str, str]:
    base = {
        "AccountSid": "AC" + "a1" * 16,
        "ApiVersion": "2010-04-01",
        "From": "+14803605516",
        "MessageSid": SID,
        "MessageStatus": "delivered",
        "SmsSid": SID,
        "SmsStatus": "delivered",
        "To": PHONE,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(fields: dict[str, str], *, url: str = CALLBACK_URL, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, fields)


@pytest.fixture
def post(twilio_ats: TwilioTestServer) -> Callable[..., Any]:
    """POST a callback form-encoded as Twilio does; signed over `fields` unless told otherwise."""
    client = Client(enforce_csrf_checks=True)

    def _post(
        fields: dict[str, str], *, signature: str | None = "", signed: dict[str, str] | None = None
    ) -> Any:
        headers = {}
        if signature == "":
            signature = sign(signed if signed is not None else fields)
        if signature is not None:
            headers["HTTP_X_TWILIO_SIGNATURE"] = signature
        return client.post(
            WEBHOOK,
            urlencode(fields),
            content_type="application/x-www-form-urlencoded",
            REMOTE_ADDR="203.0.113.9",
            **headers,
        )

    return _post


@pytest.fixture
def method(db: None) -> Any:
    return factories.MethodFactory(phone_number=PHONE)


# --- Signatures ---------------------------------------------------------------------------------


def test_a_signed_receipt_is_stored(post: Any, method: Any) -> None:
    response = post(params(MessageStatus="undelivered", ErrorCode="30003"))

    assert response.status_code == 200
    assert response.json() == {"status": "stored"}
    receipt = DeliveryReceipt.objects.get()
    assert (receipt.status, receipt.error_code, receipt.method, receipt.via) == (
        "undelivered",
        30003,
        method,
        "callback",
    )
    message = TwilioMessage.objects.get()
    assert (message.message_sid, message.status, message.sender) == (
        SID,
        "undelivered",
        "+14803605516",
    )


def test_no_phone_number_is_stored_with_a_receipt(post: Any, method: Any) -> None:
    post(params())

    for model in (DeliveryReceipt, TwilioMessage):
        for row in model.objects.values():
            assert PHONE not in str(row)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="missing"),
        pytest.param("bm90IGEgc2lnbmF0dXJl", id="invalid"),
        pytest.param(sign(params(), token="another-token"), id="another token"),
        pytest.param(sign(params(), url="https://evil.example.com/x/"), id="another url"),
        pytest.param(sign(params(MessageStatus="sent")), id="other values"),
    ],
)
def test_without_a_valid_signature_nothing_is_stored(
    post: Any, method: Any, signature: str | None
) -> None:
    response = post(params(), signature=signature)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not DeliveryReceipt.objects.exists()
    assert not TwilioMessage.objects.exists()


def test_a_field_added_after_signing_breaks_the_signature(post: Any, method: Any) -> None:
    fields = params()
    response = post({**fields, "ErrorCode": "30007"}, signed=fields)

    assert response.status_code == 403
    assert not DeliveryReceipt.objects.exists()


def test_fields_twilio_adds_without_notice_are_signed_and_accepted(post: Any, method: Any) -> None:
    response = post(params(RawDlrDoneDate="2612011230", ChannelStatusMessage="ok"))

    assert response.status_code == 200
    assert DeliveryReceipt.objects.count() == 1


def test_a_port_in_the_callback_url_does_not_break_the_signature(
    post: Any, method: Any, settings: Any
) -> None:
    settings.TWILIO_STATUS_CALLBACK_URL = (
        "https://twosv.example.com:443/webhooks/twilio/message-status/"
    )

    assert post(params()).status_code == 200


@pytest.mark.parametrize("setting", ["TWILIO_AUTH_TOKEN", "TWILIO_STATUS_CALLBACK_URL"])
def test_without_the_settings_every_callback_is_refused(
    post: Any, method: Any, settings: Any, setting: str
) -> None:
    setattr(settings, setting, "")

    assert post(params()).status_code == 403
    assert not DeliveryReceipt.objects.exists()


def test_a_body_that_is_not_a_form_is_refused(twilio_ats: Any, method: Any) -> None:
    response = Client().post(
        WEBHOOK,
        {"MessageSid": SID},
        content_type="application/json",
        HTTP_X_TWILIO_SIGNATURE=sign(params()),
    )

    assert response.status_code == 403
    assert not DeliveryReceipt.objects.exists()


def test_only_post_is_allowed(twilio_ats: Any) -> None:
    assert Client().get(WEBHOOK).status_code == 405


def test_it_is_csrf_exempt_and_needs_no_api_token(post: Any, method: Any) -> None:
    # `post` uses a client that enforces CSRF checks and sends no credentials.
    assert post(params()).status_code == 200


# --- Malformed bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (params(MessageSid=None), "MessageSid"),
        (params(MessageStatus=None), "MessageStatus"),
        (params(MessageSid="SM123"), "MessageSid"),
        (params(MessageStatus="exploded"), "MessageStatus"),
        (params(ErrorCode="30x03"), "ErrorCode"),
        (params(ErrorCode="12345678"), "ErrorCode"),
        (params(To=None), "To"),
        (params(To="+1" + "5" * 80), "To"),
    ],
    ids=[
        "no sid",
        "no status",
        "short sid",
        "unknown status",
        "letters in the code",
        "huge code",
        "no to",
        "long to",
    ],
)
def test_a_malformed_body_is_400_and_stores_nothing(
    post: Any, method: Any, fields: dict[str, str], field: str
) -> None:
    response = post(fields)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not DeliveryReceipt.objects.exists()


def test_a_field_given_twice_is_400(twilio_ats: Any, method: Any) -> None:
    body = urlencode(params()) + "&MessageStatus=sent"
    signed = RequestValidator(AUTH_TOKEN)
    from django.http import QueryDict

    signature = signed.compute_signature(CALLBACK_URL, QueryDict(body))

    response = Client().post(
        WEBHOOK,
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "MessageStatus"


# --- Idempotent and order-safe ------------------------------------------------------------------


def test_a_duplicate_is_stored_once(post: Any, method: Any) -> None:
    first = post(params())
    again = post(params())

    assert first.json() == {"status": "stored"}
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert DeliveryReceipt.objects.count() == 1


def test_a_late_sent_never_overwrites_delivered(post: Any, method: Any) -> None:
    for status in ("queued", "delivered", "sent", "sending"):
        assert post(params(MessageStatus=status)).status_code == 200

    message = TwilioMessage.objects.get()
    assert message.status == "delivered"
    assert DeliveryReceipt.objects.count() == 4


def test_a_final_status_never_changes(post: Any, method: Any) -> None:
    post(params(MessageStatus="undelivered", ErrorCode="30003"))
    post(params(MessageStatus="delivered"))

    message = TwilioMessage.objects.get()
    assert (message.status, message.error_code) == ("undelivered", 30003)


def test_statuses_move_forward_in_order(post: Any, method: Any) -> None:
    post(params(MessageStatus="sent"))
    post(params(MessageStatus="failed", ErrorCode="30008"))

    message = TwilioMessage.objects.get()
    assert (message.status, message.error_code) == ("failed", 30008)


def test_a_receipt_for_a_number_on_no_method_is_dropped(post: Any, method: Any) -> None:
    response = post(params(To="+14155550999"))

    assert (response.status_code, response.json()) == (200, {"status": "dropped"})
    assert not DeliveryReceipt.objects.exists()
    assert not TwilioMessage.objects.exists()


def test_a_receipt_for_a_removed_methods_number_is_dropped(post: Any) -> None:
    factories.MethodFactory(phone_number=PHONE, removed_at=timezone.now() - timedelta(days=1))

    assert post(params()).json() == {"status": "dropped"}


def test_a_non_phone_recipient_is_dropped(post: Any, method: Any) -> None:
    assert post(params(To="whatsapp:" + PHONE)).json() == {"status": "dropped"}


def test_later_receipts_follow_the_message_not_the_number(post: Any, method: Any) -> None:
    post(params(MessageStatus="sent"))
    method.phone_number = "+14155550124"
    method.save()

    assert post(params(MessageStatus="delivered")).json() == {"status": "stored"}
    assert TwilioMessage.objects.get().status == "delivered"


def test_callbacks_are_throttled_per_source_address(
    post: Any, method: Any, settings: Any, monkeypatch: Any
) -> None:
    from rest_framework.throttling import ScopedRateThrottle

    from twosv import dependencies

    dependencies.reset()  # an earlier test's cache outage would skip the throttle a few seconds
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {**ScopedRateThrottle.THROTTLE_RATES, "twilio_webhook": "2/min"},
    )
    statuses = [post(params(MessageStatus=s)).status_code for s in ("queued", "sent", "delivered")]

    assert statuses == [200, 200, 429]
    assert DeliveryReceipt.objects.count() == 2


def test_a_database_outage_is_a_503_not_a_500(post: Any, method: Any, monkeypatch: Any) -> None:
    from crm_plugin import webhooks

    def down(**kwargs: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(webhooks, "receipt_record", down)

    response = post(params())

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"


# --- Lookups answered from receipts -------------------------------------------------------------


def _receipt(
    method: Any, sid: str, status: str, *, ago: timedelta, code: int | None = None
) -> None:
    receipts.receipt_record(
        message_sid=sid,
        status=status,
        error_code=code,
        to=method.phone_number,
        sender="+14803605516",
        now=timezone.now() - ago,
    )


@pytest.fixture
def lookup(
    agent_client: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> Callable[..., dict[str, Any]]:
    def _lookup(method: Any) -> dict[str, Any]:
        with django_capture_on_commit_callbacks(execute=True):
            response = agent_client.post(
                f"/api/v1/customers/{method.customer.customer_id}/twosv/delivery-lookups/",
                {"method_id": method.method_id, "force": True},
                format="json",
            )
        assert response.status_code == 202, response.content
        return agent_client.get(f"/api/v1/twosv/delivery-lookups/{response.json()['id']}/").json()

    return _lookup


@pytest.fixture
def feed_started(method: Any) -> None:
    """The callbacks have been arriving for two days (an older receipt for another message)."""
    other = factories.MethodFactory(phone_number="+14155550177")
    _receipt(other, message_sid(900), "delivered", ago=timedelta(days=2))


@pytest.mark.usefixtures("feed_started")
def test_covered_receipts_answer_without_asking_the_api(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    _receipt(method, message_sid(2), "sent", ago=timedelta(minutes=10))
    _receipt(method, message_sid(2), "undelivered", ago=timedelta(minutes=9), code=30003)

    result = lookup(method)

    assert (result["status"], result["verdict"], result["source"]) == (
        "succeeded",
        "unreachable",
        "receipts",
    )
    assert [a["error_code"] for a in result["attempts"]] == [30003]
    assert twilio_ats.requests == []


def test_receipts_that_started_inside_the_period_do_not_cover_it(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    _receipt(method, message_sid(2), "delivered", ago=timedelta(minutes=10))
    twilio_ats.add_message(to=PHONE, status="delivered")

    result = lookup(method)

    assert result["source"] == "api"
    assert len(twilio_ats.requests) == 1


@pytest.mark.usefixtures("feed_started")
def test_no_receipt_for_the_number_asks_the_api(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    result = lookup(method)

    assert (result["source"], result["verdict"]) == ("api", "not_sent")


@pytest.mark.usefixtures("feed_started")
def test_a_message_open_too_long_without_reconciliation_asks_the_api(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    _receipt(method, message_sid(2), "sent", ago=timedelta(minutes=30))
    twilio_ats.add_message(to=PHONE, status="delivered", sid=message_sid(2))

    result = lookup(method)

    assert (result["source"], result["verdict"]) == ("api", "delivered")


@pytest.mark.usefixtures("feed_started")
def test_a_changed_number_inside_the_period_asks_the_api(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    _receipt(method, message_sid(2), "delivered", ago=timedelta(minutes=10))
    method.phone_changed_at = timezone.now() - timedelta(hours=1)
    method.save()

    assert lookup(method)["source"] == "api"


@pytest.mark.usefixtures("feed_started")
def test_receipts_can_be_switched_off(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any, settings: Any
) -> None:
    settings.TWILIO_RECEIPTS_ANSWER_LOOKUPS = False
    _receipt(method, message_sid(2), "delivered", ago=timedelta(minutes=10))

    assert lookup(method)["source"] == "api"


def test_other_backends_report_their_source(lookup: Any, method: Any, settings: Any) -> None:
    settings.TWOSV_ATS_BACKEND = "local"

    assert lookup(method)["source"] == "local"


# --- Reconciliation -----------------------------------------------------------------------------


def test_open_messages_are_reconciled_against_the_messages_api(
    twilio_ats: TwilioTestServer, method: Any
) -> None:
    _receipt(method, message_sid(2), "sent", ago=timedelta(minutes=20))
    _receipt(method, message_sid(3), "sent", ago=timedelta(minutes=1))  # too young
    _receipt(method, message_sid(4), "delivered", ago=timedelta(minutes=20))  # final
    twilio_ats.add_message(to=PHONE, status="undelivered", error_code=30005, sid=message_sid(2))

    assert receipts_reconcile() == 1

    message = TwilioMessage.objects.get(message_sid=message_sid(2))
    assert (message.status, message.error_code) == ("undelivered", 30005)
    assert message.reconciled_at is not None
    receipt = DeliveryReceipt.objects.get(message=message, status="undelivered")
    assert receipt.via == ReceiptVia.API
    assert [r.path.rsplit("/", 1)[-1] for r in twilio_ats.requests] == [f"{message_sid(2)}.json"]
    # Asked once per TWILIO_RECONCILE_AFTER, not every run.
    assert receipts_reconcile() == 0
    assert len(twilio_ats.requests) == 1


def test_reconciliation_pauses_on_a_transient_error(
    twilio_ats: TwilioTestServer, method: Any
) -> None:
    _receipt(method, message_sid(2), "sent", ago=timedelta(minutes=20))
    _receipt(method, message_sid(3), "sent", ago=timedelta(minutes=20))
    twilio_ats.script([ScriptedResponse(503, {"code": 20503})])

    assert receipts_reconcile() == 0

    assert len(twilio_ats.requests) == 1
    assert not TwilioMessage.objects.filter(reconciled_at__isnull=False).exists()


def test_reconciliation_does_nothing_without_the_twilio_backend(method: Any, settings: Any) -> None:
    settings.TWOSV_ATS_BACKEND = "local"
    _receipt(method, message_sid(2), "sent", ago=timedelta(minutes=20))

    assert receipts_reconcile() == 0


def test_the_reconciliation_runs_on_beat(settings: Any) -> None:
    from crm_plugin.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["twilio-receipts-reconcile"]
    assert entry["task"] in app.tasks
    assert entry["schedule"] <= 300
