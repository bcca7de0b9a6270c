"""The `twilio` ATS backend against a fake Twilio Messages API on 127.0.0.1 (tests/twilio_server).

The client alone first (parsing, paging by next_page_uri, errors, the deadline), then whole
lookups through the API with TWOSV_ATS_BACKEND=twilio: every verdict of docs/SPEC.md §3,
retries of 5xx, 429 and timeouts, and the `source` each lookup reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests.ats_server import ScriptedResponse
from tests.twilio_server import TwilioTestServer, rfc2822
from twosv.ats import AtsPermanentError, AtsTransientError, ats_client_from_settings
from twosv.ats_twilio import TwilioAtsClient, ats_status
from twosv.models import RegionalAdvisory

PHONE = "+14155550123"
INDIA = "+919876543210"


def client_for(server: TwilioTestServer, **kwargs: Any) -> TwilioAtsClient:
    options = {
        "account_sid": server.account_sid,
        "auth_token": server.auth_token,
        "base_url": server.url,
        **kwargs,
    }
    return TwilioAtsClient(**options)


def since() -> datetime:
    return datetime.now(UTC) - timedelta(hours=24)


# --- The client ---------------------------------------------------------------------------------


def test_a_delivered_message_is_read_from_twilios_json_and_dates(twilio_server) -> None:
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    twilio_server.add_message(to=PHONE, status="delivered", created_at=created)

    (message,) = client_for(twilio_server).messages(to=PHONE, since=since())

    assert message.status == "delivered"
    assert message.error_code is None
    assert message.created_at == created
    assert message.updated_at == created + timedelta(seconds=5)
    assert message.sender == "+14803605516"
    assert message.provider == "twilio"
    assert message.id.startswith("SM")


def test_basic_auth_and_the_filters_are_sent(twilio_server) -> None:
    client_for(twilio_server).messages(to=PHONE, since=since())

    (request,) = twilio_server.requests
    assert request.path == f"/2010-04-01/Accounts/{twilio_server.account_sid}/Messages.json"
    assert request.query["To"] == PHONE
    assert request.query["DateSent>"].endswith("Z")
    assert request.headers["authorization"].startswith("Basic ")


def test_paging_follows_next_page_uri_on_the_configured_base_url(twilio_server) -> None:
    for minutes in range(5):
        twilio_server.add_message(
            to=PHONE, created_at=datetime.now(UTC) - timedelta(minutes=minutes)
        )

    messages = client_for(twilio_server, page_size=2).messages(to=PHONE, since=since())

    assert len(messages) == 5
    assert [r.query.get("PageToken") for r in twilio_server.requests] == [None, "PA2", "PA4"]


def test_only_the_recipient_the_period_and_outbound_messages_count(twilio_server) -> None:
    twilio_server.add_message(to=PHONE, created_at=datetime.now(UTC) - timedelta(hours=30))
    twilio_server.add_message(to="+14155550199")
    twilio_server.add_message(to=PHONE, direction="inbound", status="received")
    twilio_server.add_message(to=PHONE, status="canceled")
    kept = twilio_server.add_message(to=PHONE, status="sent")

    messages = client_for(twilio_server).messages(to=PHONE, since=since())

    assert [m.id for m in messages] == [kept["sid"]]


@pytest.mark.parametrize(
    ("twilio", "ats"),
    [
        ("accepted", "queued"),
        ("scheduled", "queued"),
        ("queued", "queued"),
        ("sending", "sent"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("some_new_status", "sent"),
    ],
)
def test_twilio_statuses_map_to_the_ats_vocabulary(twilio: str, ats: str) -> None:
    assert ats_status(twilio) == ats


def test_error_codes_are_ints(twilio_server) -> None:
    twilio_server.add_message(to=PHONE, status="undelivered", error_code=30003)

    (message,) = client_for(twilio_server).messages(to=PHONE, since=since())

    assert message.error_code == 30003


def test_one_message_is_fetched_by_sid(twilio_server) -> None:
    stored = twilio_server.add_message(to=PHONE, status="failed", error_code=30008)

    message = client_for(twilio_server).message(stored["sid"])

    assert message is not None
    assert (message.status, message.error_code) == ("failed", 30008)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_is_transient(twilio_server, status: int) -> None:
    twilio_server.script([ScriptedResponse(status, {"code": 20500, "message": "boom"})])

    with pytest.raises(AtsTransientError, match=f"Twilio is unavailable \\({status}"):
        client_for(twilio_server).messages(to=PHONE, since=since())


def test_a_429_is_transient_and_carries_retry_after(twilio_server) -> None:
    twilio_server.script([ScriptedResponse(429, {"code": 20429}, headers={"Retry-After": "9"})])

    with pytest.raises(AtsTransientError) as caught:
        client_for(twilio_server).messages(to=PHONE, since=since())

    assert caught.value.retry_after == 9


def test_a_failure_on_a_later_page_fails_the_try(twilio_server) -> None:
    base = f"/2010-04-01/Accounts/{twilio_server.account_sid}/Messages.json"
    twilio_server.script(
        [
            ScriptedResponse(200, {"messages": [], "next_page_uri": f"{base}?Page=1"}),
            ScriptedResponse(503, {"code": 20503}),
        ]
    )

    with pytest.raises(AtsTransientError, match="503"):
        client_for(twilio_server).messages(to=PHONE, since=since())
    assert len(twilio_server.requests) == 2


def test_a_slow_answer_is_a_transient_read_timeout(twilio_server) -> None:
    twilio_server.script([ScriptedResponse(200, {"messages": []}, delay=2)])

    with pytest.raises(AtsTransientError, match="read timeout"):
        client_for(twilio_server, read_timeout=0.2).messages(to=PHONE, since=since())


def test_the_deadline_covers_every_page(twilio_server) -> None:
    base = f"/2010-04-01/Accounts/{twilio_server.account_sid}/Messages.json"
    pages = [
        ScriptedResponse(
            200,
            {"messages": [], "next_page_uri": f"{base}?Page={i + 1}&PageToken=PA{i + 1}"},
            delay=0.4,
        )
        for i in range(10)
    ]
    twilio_server.script(pages)
    started = time.monotonic()

    with pytest.raises(AtsTransientError, match="within the 1 s deadline"):
        client_for(twilio_server, read_timeout=5, deadline=1.0).messages(to=PHONE, since=since())

    assert time.monotonic() - started < 1.6


def test_a_refused_connection_is_transient(ats_refused_url: str) -> None:
    client = TwilioAtsClient(account_sid="AC1", auth_token="t", base_url=ats_refused_url)

    with pytest.raises(AtsTransientError, match="could not connect to Twilio"):
        client.messages(to=PHONE, since=since())


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_client_errors_are_permanent(twilio_server, status: int) -> None:
    twilio_server.script([ScriptedResponse(status, {"code": 20000 + status, "message": "no"})])

    with pytest.raises(AtsPermanentError):
        client_for(twilio_server).messages(to=PHONE, since=since())


def test_a_wrong_auth_token_is_permanent_and_never_echoed(twilio_server) -> None:
    with pytest.raises(AtsPermanentError, match="check TWILIO_ACCOUNT_SID") as caught:
        client_for(twilio_server, auth_token="wrong-secret").messages(to=PHONE, since=since())

    assert "wrong-secret" not in str(caught.value)
    assert "wrong-secret" not in repr(client_for(twilio_server, auth_token="wrong-secret"))


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"messages": [{"sid": "SM1"}]}', b'{"a": [], "b": []}'],
    ids=["not json", "a list", "no status", "no records key"],
)
def test_a_broken_answer_is_permanent(twilio_server, raw: bytes) -> None:
    twilio_server.script([ScriptedResponse(200, raw=raw)])

    with pytest.raises(AtsPermanentError):
        client_for(twilio_server).messages(to=PHONE, since=since())


def test_a_message_without_a_readable_date_is_permanent(twilio_server) -> None:
    body = {"messages": [{"sid": "SM1", "status": "sent", "date_created": "yesterday"}]}
    twilio_server.script([ScriptedResponse(200, body)])

    with pytest.raises(AtsPermanentError, match="date_created"):
        client_for(twilio_server).messages(to=PHONE, since=since())


def test_endless_paging_stops_at_max_pages(twilio_server) -> None:
    base = f"/2010-04-01/Accounts/{twilio_server.account_sid}/Messages.json"
    twilio_server.script(
        [ScriptedResponse(200, {"messages": [], "next_page_uri": f"{base}?Page=1"})] * 5
    )

    with pytest.raises(AtsPermanentError, match="after 3 pages"):
        client_for(twilio_server, max_pages=3).messages(to=PHONE, since=since())


def test_the_environment_cannot_move_the_host(twilio_server, monkeypatch) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    twilio_server.add_message(to=PHONE)

    assert len(client_for(twilio_server).messages(to=PHONE, since=since())) == 1


def test_settings_build_the_twilio_client(twilio_ats) -> None:
    client = ats_client_from_settings()

    assert isinstance(client, TwilioAtsClient)
    assert client.source == "api"


def test_settings_refuse_twilio_without_credentials(settings) -> None:
    settings.TWOSV_ATS_BACKEND = "twilio"
    settings.TWILIO_ACCOUNT_SID = ""
    settings.TWILIO_AUTH_TOKEN = ""

    with pytest.raises(AtsPermanentError, match="Twilio is not configured"):
        ats_client_from_settings()


# --- Whole lookups through the API -------------------------------------------------------------


@pytest.fixture
def method(db: None) -> Any:
    return factories.MethodFactory(phone_number=PHONE)


@pytest.fixture
def lookup(
    agent_client: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> Callable[..., dict[str, Any]]:
    def _lookup(method: Any, **body: Any) -> dict[str, Any]:
        with django_capture_on_commit_callbacks(execute=True):
            response = agent_client.post(
                f"/api/v1/customers/{method.customer.customer_id}/twosv/delivery-lookups/",
                {"method_id": method.method_id, **body},
                format="json",
            )
        assert response.status_code == 202, response.content
        detail = agent_client.get(f"/api/v1/twosv/delivery-lookups/{response.json()['id']}/")
        assert detail.status_code == 200
        return detail.json()

    return _lookup


@pytest.mark.parametrize(
    ("messages", "verdict"),
    [
        ([], "not_sent"),
        ([("delivered", None)], "delivered"),
        ([("read", None)], "delivered"),
        ([("undelivered", 21610)], "recipient_blocked"),
        ([("undelivered", 30007)], "carrier_filtered"),
        ([("failed", 30004)], "carrier_filtered"),
        ([("undelivered", 30003)], "unreachable"),
        ([("undelivered", 30005)], "unreachable"),
        ([("undelivered", 30006)], "unreachable"),
        ([("failed", 21211)], "unreachable"),
        ([("failed", 21614)], "unreachable"),
        ([("undelivered", 30008)], "provider_error"),
        ([("failed", None)], "provider_error"),
        ([("sent", None), ("queued", None)], "provider_error"),
        ([("undelivered", 30003), ("delivered", None)], "delivered"),
        ([("delivered", None), ("undelivered", 30007)], "carrier_filtered"),
    ],
)
@pytest.mark.django_db
def test_every_verdict_from_twilio(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any, messages: list, verdict: str
) -> None:
    now = datetime.now(UTC)
    for i, (status, code) in enumerate(messages):
        twilio_ats.add_message(
            to=PHONE,
            status=status,
            error_code=code,
            created_at=now - timedelta(minutes=30 - i),
        )

    result = lookup(method)

    assert (result["status"], result["verdict"], result["source"]) == ("succeeded", verdict, "api")
    assert len(result["attempts"]) == len(messages)


@pytest.mark.django_db
def test_a_failure_to_india_under_an_advisory_is_a_regional_provider_issue(
    twilio_ats: TwilioTestServer, lookup: Any
) -> None:
    RegionalAdvisory.objects.get_or_create(region="IN", defaults={"message": "India"})
    method = factories.MethodFactory(phone_number=INDIA)
    twilio_ats.add_message(to=INDIA, status="undelivered", error_code=30003)

    assert lookup(method)["verdict"] == "regional_provider_issue"


@pytest.mark.django_db
def test_a_500_then_success_succeeds_on_the_second_try(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    twilio_ats.script([ScriptedResponse(500, {"code": 20500})])
    twilio_ats.add_message(to=PHONE, status="delivered")

    result = lookup(method)

    assert (result["status"], result["verdict"], result["tries"]) == ("succeeded", "delivered", 2)


@pytest.mark.django_db
def test_a_429_then_success_succeeds(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    twilio_ats.script([ScriptedResponse(429, {"code": 20429}, headers={"Retry-After": "1"})])
    twilio_ats.add_message(to=PHONE, status="delivered")

    assert lookup(method)["tries"] == 2


@pytest.mark.django_db
def test_a_twilio_that_keeps_timing_out_fails_with_a_readable_reason(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any, settings: Any
) -> None:
    settings.ATS_READ_TIMEOUT = 0.1
    twilio_ats.script([ScriptedResponse(200, {"messages": []}, delay=1)] * 5)

    result = lookup(method)

    assert (result["status"], result["tries"]) == ("failed", 5)
    assert "Twilio did not answer in time (read timeout)" in result["failure_reason"]


@pytest.mark.django_db
def test_a_refused_auth_token_fails_at_once(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any, settings: Any
) -> None:
    settings.TWILIO_AUTH_TOKEN = "not-the-token"

    result = lookup(method)

    assert (result["status"], result["tries"]) == ("failed", 1)
    assert "Twilio refused our credentials (401" in result["failure_reason"]
    assert "not-the-token" not in result["failure_reason"]


@pytest.mark.django_db
def test_the_dates_twilio_writes_are_the_attempts_sent_at(
    twilio_ats: TwilioTestServer, lookup: Any, method: Any
) -> None:
    created = timezone.now().replace(microsecond=0) - timedelta(minutes=7)
    stored = twilio_ats.add_message(to=PHONE, created_at=created)
    assert stored["date_created"] == rfc2822(created)

    (attempt,) = lookup(method)["attempts"]

    assert attempt["sent_at"] == created.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert attempt["provider"] == "twilio"
