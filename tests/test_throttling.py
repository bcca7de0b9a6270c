"""Throttles cap what one agent can do per minute, keyed on the user, never on a header.

DRF reads DEFAULT_THROTTLE_RATES once, at import, into ``SimpleRateThrottle.THROTTLE_RATES``;
the tests patch that class attribute to small limits. These throttles cap agent tools (and an
agent's stolen token); they are not the 2SV resend lock, which lives in the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from crm_plugin.api import events, lookups, panel_links, sessions, state
from crm_plugin.api.crm_token import CrmTokenApi
from crm_plugin.api.throttling import FailOpenScopedRateThrottle
from crm_plugin.webhooks import TwilioMessageStatusWebhook
from tests import factories
from tests.builders import token_client
from twosv import dependencies, services
from twosv.models import AuditEntry, TroubleshootingSession

pytestmark = pytest.mark.django_db

PHONE = "+14155550123"
RATES = {
    "agent_read": "3/min",
    "lookup_request": "2/min",
    "verify_phone": "2/min",
    "session_start": "2/min",
    "producer": "2/min",
    "twilio_webhook": "2/min",
    "crm_token": "2/min",
}


@pytest.fixture(autouse=True)
def small_rates(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", dict(RATES))
    return RATES


@pytest.fixture
def customer(db: None) -> Any:
    customer = factories.CustomerFactory(customer_id="cust-throttle")
    factories.MethodFactory(customer=customer, method_id="m-throttle", phone_number=PHONE)
    return customer


def _client(user: Any, remote_addr: str = "203.0.113.7", **headers: str) -> APIClient:
    return token_client(user, REMOTE_ADDR=remote_addr, **headers)


def _assert_throttled(response: Any, *, within: int = 60) -> None:
    assert response.status_code == 429, response.content
    assert response.json()["error"]["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= within


def test_rates_come_from_settings_and_every_agent_tool_has_a_scope():
    configured = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert set(configured) == set(RATES)
    assert django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] == [
        "crm_plugin.api.throttling.FailOpenScopedRateThrottle"
    ]
    assert issubclass(FailOpenScopedRateThrottle, ScopedRateThrottle)
    assert state.CustomerTwosvStateApi.throttle_scope == "agent_read"
    assert sessions.SessionDetailApi.throttle_scope == "agent_read"
    assert lookups.LookupDetailApi.throttle_scope == "agent_read"
    assert panel_links.PanelLinkCreateApi.throttle_scope == "agent_read"
    assert lookups.LookupRequestApi.throttle_scope == "lookup_request"
    assert sessions.SessionVerifyPhoneApi.throttle_scope == "verify_phone"
    assert sessions.SessionCreateApi.throttle_scope == "session_start"
    assert events.EventCreateApi.throttle_scope == "producer"
    assert events.EventBatchApi.throttle_scope == "producer"
    assert TwilioMessageStatusWebhook.throttle_scope == "twilio_webhook"
    assert CrmTokenApi.throttle_scope == "crm_token"  # per address: tests/test_crm_token_api.py


def test_agent_reads_are_keyed_on_the_user_not_on_the_address_or_forwarded_for(agent, customer):
    url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    addresses = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]

    answers = [
        _client(agent, remote_addr=address, HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").get(url)
        for i, address in enumerate(addresses)
    ]

    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    _assert_throttled(answers[3])
    # The throttled read wrote no audit row: only the three reads that were served did.
    assert AuditEntry.objects.filter(action="state_read").count() == 3


def test_another_agent_has_a_budget_of_their_own(agent, customer):
    url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    first = _client(agent)
    for _ in range(3):
        assert first.get(url).status_code == 200
    _assert_throttled(first.get(url))

    other = factories.UserFactory(username="agent-2", groups=["support_agent"])

    assert _client(other).get(url).status_code == 200


def test_a_throttled_agent_reads_again_once_the_window_has_passed(agent, customer, time_machine):
    url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    client = _client(agent)
    time_machine.move_to("2026-03-02T12:00:00Z", tick=False)
    for _ in range(3):
        client.get(url)
    throttled = client.get(url)
    _assert_throttled(throttled)

    time_machine.shift(timedelta(seconds=int(throttled["Retry-After"]) + 1))

    assert client.get(url).status_code == 200


def test_scopes_are_separate_budgets(agent, customer, django_capture_on_commit_callbacks):
    client = _client(agent)
    for _ in range(3):
        client.get(f"/api/v1/customers/{customer.customer_id}/twosv/")
    _assert_throttled(client.get(f"/api/v1/customers/{customer.customer_id}/twosv/"))

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            f"/api/v1/customers/{customer.customer_id}/twosv/delivery-lookups/", {}, format="json"
        )

    assert response.status_code == 202


def test_lookup_requests_are_capped_per_agent(agent, customer, django_capture_on_commit_callbacks):
    url = f"/api/v1/customers/{customer.customer_id}/twosv/delivery-lookups/"
    client = _client(agent)

    with django_capture_on_commit_callbacks(execute=False):
        answers = [
            client.post(url, {"force": True}, format="json", HTTP_X_FORWARDED_FOR=f"10.1.1.{i}")
            for i in range(3)
        ]

    assert [r.status_code for r in answers[:2]] == [202, 200]
    _assert_throttled(answers[2])
    assert AuditEntry.objects.filter(action="lookup_request").count() == 2


def test_verify_phone_is_throttled_before_it_uses_a_try(agent, customer, settings):
    settings.TWOSV_PHONE_VERIFY_MAX_TRIES = 10
    session = services.session_start(customer=customer, agent=agent)
    url = f"/api/v1/twosv/sessions/{session.id}/verify-phone/"
    client = _client(agent)

    answers = [client.post(url, {"phone_number": "+14155550100"}, format="json") for _ in range(3)]

    assert [r.status_code for r in answers[:2]] == [200, 200]
    _assert_throttled(answers[2])
    assert TroubleshootingSession.objects.get(pk=session.pk).phone_verify_tries == 2


def test_producers_are_throttled_on_their_own_account(producer):
    def event(event_id: str, type_: str, **data: str) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "type": type_,
            "customer_id": "cust-p",
            "occurred_at": "2026-01-01T00:00:00Z",
            "data": {"method_id": "m-p", **data},
        }

    client = _client(producer)
    bodies = [
        event("ev-1", "method_enrolled", kind="security_key", role="backup"),
        event("ev-2", "code_rejected"),
        event("ev-3", "code_rejected"),
    ]

    answers = [client.post("/api/v1/events/", body, format="json") for body in bodies]

    assert [r.status_code for r in answers[:2]] == [201, 201]
    _assert_throttled(answers[2])


# --- The cache down: throttles fail open, logged and counted ---------------------------------

# Nothing listens on port 1: every cache call is refused at once.
CACHE_DOWN = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}


@pytest.fixture
def cache_down(settings: Any) -> Iterator[None]:
    settings.CACHES = CACHE_DOWN
    dependencies.reset()
    yield
    dependencies.reset()


def _outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "twosv.dependencies" and record.levelname == "WARNING"
    ]


def test_with_the_cache_down_reads_go_through_past_the_limit_logged_once_and_counted(
    agent, customer, cache_down, caplog
):
    url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    client = _client(agent)

    answers = [client.get(url) for _ in range(5)]

    # The limit is 3 a minute: with nothing to count in, all five are served.
    assert [r.status_code for r in answers] == [200] * 5
    assert AuditEntry.objects.filter(action="state_read").count() == 5
    # Each read: the throttle and the advisory settings (read from the database instead).
    assert dependencies.outage_counts()["cache"] >= 5
    warnings = _outage_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Cache unavailable (ConnectionError")


def test_with_the_cache_down_producers_and_lookups_are_not_throttled(
    producer, agent, customer, cache_down, django_capture_on_commit_callbacks
):
    events_client = _client(producer)
    bodies = [
        {
            "event_id": f"ev-down-{i}",
            "type": "code_rejected",
            "customer_id": customer.customer_id,
            "occurred_at": "2026-01-01T00:00:00Z",
            "data": {"method_id": "m-throttle"},
        }
        for i in range(3)
    ]
    assert [
        events_client.post("/api/v1/events/", b, format="json").status_code for b in bodies
    ] == [
        201,
        201,
        201,
    ]
    url = f"/api/v1/customers/{customer.customer_id}/twosv/delivery-lookups/"
    with django_capture_on_commit_callbacks(execute=False):
        answers = [_client(agent).post(url, {}, format="json") for _ in range(3)]
    assert [r.status_code for r in answers] == [202, 200, 200]


def test_the_throttle_counts_again_once_the_cache_is_back(agent, customer, settings):
    url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    client = _client(agent)
    settings.CACHES = CACHE_DOWN
    assert [client.get(url).status_code for _ in range(4)] == [200] * 4

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    dependencies.reset()  # as if the few seconds the cache is skipped after a failure had passed

    answers = [client.get(url) for _ in range(4)]
    assert [r.status_code for r in answers[:3]] == [200] * 3
    _assert_throttled(answers[3])


def test_only_cache_errors_fail_open_a_bug_still_fails(monkeypatch, agent):
    """Not a blanket except: an error that isn't the cache being away is not swallowed."""
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    request = Request(APIRequestFactory().get("/"))
    request.user = agent
    view = state.CustomerTwosvStateApi()
    throttle = FailOpenScopedRateThrottle()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(throttle, "cache", type("C", (), {"get": broken})())
    with pytest.raises(KeyError):
        throttle.allow_request(request, view)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(throttle, "cache", type("C", (), {"get": refused})())
    dependencies.reset()
    assert throttle.allow_request(request, view) is True
    assert dependencies.outage_counts() == {"cache": 1}

    # For a few seconds after a failure the cache isn't tried at all (nor is the bug reached).
    monkeypatch.setattr(throttle, "cache", type("C", (), {"get": broken})())
    assert throttle.allow_request(request, view) is True
    assert dependencies.outage_counts() == {"cache": 2}
