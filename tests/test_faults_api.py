"""Failures no view handles: the API answers in its JSON envelope, the panel with a plain page.

An API client must be able to read every answer under /api/, a 500 or a database outage
included; a 503 says when to try again, so the identity system retries instead of dropping
an event.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token

from tests import factories
from tests.builders import enter_panel, event
from twosv.models import AuditEntry, Event, TroubleshootingSession

STATE_URL = "/api/v1/customers/{}/twosv/"


def assert_envelope(response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    # No traceback, no exception text: nothing an attacker could learn from.
    assert "Traceback" not in response.content.decode()


@pytest.fixture
def broken_state_read(monkeypatch):
    """A bug in the state read: the kind of failure no view catches."""

    def fail(**kwargs):
        raise RuntimeError("boom: an unexpected bug")

    monkeypatch.setattr("crm_plugin.api.state.access_customer_state", fail)


@pytest.mark.django_db
@pytest.mark.usefixtures("broken_state_read")
def test_an_unhandled_error_answers_500_in_the_json_envelope(agent_client):
    customer = factories.CustomerFactory()

    response = agent_client.get(STATE_URL.format(customer.customer_id))

    assert_envelope(response, 500, "server_error")
    assert "boom" not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.usefixtures("broken_state_read")
def test_the_500_is_json_with_debug_off_too(agent_client, settings):
    settings.DEBUG = False
    customer = factories.CustomerFactory()

    response = agent_client.get(STATE_URL.format(customer.customer_id))

    assert_envelope(response, 500, "server_error")


@pytest.mark.django_db
@pytest.mark.usefixtures("broken_state_read")
def test_the_500_is_logged_with_its_traceback(agent_client, caplog):
    customer = factories.CustomerFactory()

    agent_client.get(STATE_URL.format(customer.customer_id))

    errors = [r for r in caplog.records if r.name == "crm_plugin.faults"]
    assert errors
    assert "RuntimeError" in caplog.text  # the traceback, for whoever fixes the bug


@contextmanager
def database_gone() -> Iterator[None]:
    """Point the connection at a PostgreSQL that can't be reached, then put it back.

    (An in-memory SQLite test database can't be taken away: Django never closes it.)
    """
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = "1"  # nothing listens: refused at once
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", STATE_URL, None),
        ("post", "/api/v1/customers/{}/twosv/sessions/", {}),
        ("post", "/api/v1/customers/{}/twosv/delivery-lookups/", {}),
    ],
)
def test_without_the_database_the_api_answers_503_with_retry_after(agent, method, path, body):
    token = Token.objects.create(user=agent).key
    customer = factories.CustomerFactory()
    client = Client(raise_request_exception=False)
    audits_before = AuditEntry.objects.count()

    with database_gone():
        response = getattr(client, method)(
            path.format(customer.customer_id),
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )

    assert_envelope(response, 503, "service_unavailable")
    assert int(response["Retry-After"]) > 0
    assert AuditEntry.objects.count() == audits_before
    assert not TroubleshootingSession.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_event_post_without_the_database_answers_503_and_stores_nothing(producer):
    token = Token.objects.create(user=producer).key
    client = Client(raise_request_exception=False)
    body = event(event_id="ev-outage", customer_id="c-outage")

    with database_gone():
        response = client.post(
            "/api/v1/events/",
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )

    assert_envelope(response, 503, "service_unavailable")
    assert not Event.objects.filter(event_id="ev-outage").exists()


@pytest.mark.django_db
def test_the_panel_shows_a_plain_error_page(client, settings, monkeypatch, agent):
    settings.DEBUG = False
    client.raise_request_exception = False
    enter_panel(client, agent)
    customer = factories.CustomerFactory()

    def fail(*args, **kwargs):
        raise RuntimeError("boom: an unexpected bug")

    monkeypatch.setattr("crm_plugin.panel.views.access_customer", fail)

    response = client.get(f"/panel/customers/{customer.customer_id}/")

    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page
    assert "Nothing was changed" in page
    assert "boom" not in page
    assert "Traceback" not in page
