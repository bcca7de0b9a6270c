"""Redis down (the README's layout: one Redis is both the cache and the broker).

Agent reads, session writes, event posts and lookup requests keep answering, each within 2 s:
throttles fail open, the advisory settings come from the database, lookups wait in their own
table (the outbox) and run once the broker is back. Panel links keep their single use in the
database. A request that answers an error leaves nothing behind.

The first tests point the cache at a closed port and run anywhere (SQLite included). The last
one is the acceptance test against the real thing: a redis-server of its own, stopped
mid-test, a real worker subprocess once it is back (PostgreSQL and a broker, REQUIRE_SERVICES=1
in CI). Its figures are printed (`-s` shows them):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/twosv_h7 \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 REQUIRE_SERVICES=1 DEBUG=1 \\
    .venv/bin/python -m pytest -q -s tests/test_faults_redis.py
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests import factories
from tests.infra import CeleryWorkerProcess, RedisServer, django_database_url
from tests.test_celery_worker import publishing_to
from twosv import dependencies, services
from twosv.models import (
    AuditEntry,
    Customer,
    DeliveryLookup,
    Event,
    Method,
    SenderNumber,
    SpentNonce,
    TroubleshootingSession,
)
from twosv.selectors import _advisory_settings_query, advisory_settings, advisory_settings_forget

pytest_plugins = ["tests.infra.fixtures"]

SLO_SECONDS = 2.0
# settings.py gives a Redis cache these timeouts: a cache that is away must answer fast.
CACHE_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "retry_on_timeout": False}


def redis_cache(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": dict(CACHE_OPTIONS),
        }
    }


@pytest.fixture(autouse=True)
def _fresh_outage_counts() -> Iterator[None]:
    dependencies.reset()
    yield
    dependencies.reset()


@pytest.fixture
def cache_down(settings: Any) -> None:
    # Nothing listens on port 1: every cache call is refused at once.
    settings.CACHES = redis_cache("redis://127.0.0.1:1/0")


def event_body(event_id: str, event_type: str, customer_id: str, **data: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": event_type,
        "customer_id": customer_id,
        "occurred_at": timezone.now().isoformat(),
        "data": data,
    }


def row_counts() -> dict[str, int]:
    """Rows of every table a request of these tests could write."""
    models = (
        Customer,
        Method,
        Event,
        AuditEntry,
        DeliveryLookup,
        TroubleshootingSession,
        SpentNonce,
    )
    return {model.__name__: model.objects.count() for model in models}


# --- The cache at a closed port (no services needed) --------------------------------------------


@pytest.mark.django_db
def test_the_advisory_settings_come_from_the_database_when_the_cache_is_down(cache_down: None):
    SenderNumber.objects.create(phone_number="+14155550999")

    assert advisory_settings() == _advisory_settings_query()
    assert "+1 415-555-0999" in advisory_settings()[0]
    # An admin's change invalidates a cache that is down without failing the save.
    advisory_settings_forget()
    SenderNumber.objects.filter(phone_number="+14155550999").delete()
    assert "+1 415-555-0999" not in advisory_settings()[0]
    assert dependencies.outage_counts()["cache"] >= 4


@pytest.mark.django_db
def test_a_session_is_created_once_and_answered_201_with_the_cache_down(
    cache_down: None, agent_client: APIClient
):
    """Before: the session committed, then rendering it read the cache and answered 500."""
    method = factories.MethodFactory()
    url = f"/api/v1/customers/{method.customer.customer_id}/twosv/sessions/"

    response = agent_client.post(url, {}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["method_id"] == method.method_id
    assert TroubleshootingSession.objects.count() == 1


def open_link(url: str) -> Any:
    """Enter the panel with a link in a fresh browser: POST its token, as its entry page does."""
    token = parse_qs(urlsplit(url).fragment)["token"][0]
    return Client().post("/panel/enter/", {"token": token})


@pytest.mark.django_db
def test_a_panel_link_opens_once_with_the_cache_down(cache_down: None, agent_client: APIClient):
    factories.CustomerFactory(customer_id="crm-42")
    response = agent_client.post("/api/v1/panel-links/", {"customer_id": "crm-42"}, format="json")
    assert response.status_code == 201
    url = response.json()["url"]

    assert open_link(url).status_code == 302
    assert open_link(url).status_code == 403
    assert SpentNonce.objects.count() == 1


@pytest.mark.django_db
def test_used_link_nonces_are_purged_once_their_links_expired(
    agent_client: APIClient, time_machine
):
    factories.CustomerFactory(customer_id="crm-42")
    time_machine.move_to("2026-03-02T12:00:00Z", tick=False)
    for _ in range(2):
        url = agent_client.post(
            "/api/v1/panel-links/", {"customer_id": "crm-42"}, format="json"
        ).json()["url"]
        assert open_link(url).status_code == 302
    assert SpentNonce.objects.count() == 2

    time_machine.shift(timedelta(minutes=7))
    url = agent_client.post(
        "/api/v1/panel-links/", {"customer_id": "crm-42"}, format="json"
    ).json()["url"]
    assert open_link(url).status_code == 302

    assert SpentNonce.objects.count() == 1


@pytest.fixture
def frozen_cache(settings: Any) -> Iterator[None]:
    """A cache server that accepts connections and never answers (a frozen or stopped process)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        settings.CACHES = redis_cache(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        yield


@pytest.mark.django_db
def test_a_cache_that_hangs_costs_one_timeout_then_is_skipped_for_a_while(
    frozen_cache: None, agent_client: APIClient
):
    url = f"/api/v1/customers/{factories.MethodFactory().customer.customer_id}/twosv/"
    durations = []
    for _ in range(3):
        started = time.monotonic()
        assert agent_client.get(url).status_code == 200
        durations.append(time.monotonic() - started)

    # The throttle waits out one 0.5 s socket timeout; the advisory settings then skip the
    # cache, and so do the next requests' throttles (their advisory settings are the process's
    # copy of the first one's).
    assert 0.5 <= durations[0] < SLO_SECONDS, durations
    assert max(durations[1:]) < 0.3, durations
    assert dependencies.outage_counts()["cache"] == 1 + 1 + 2 * 1


# --- The real thing: a redis-server stopped mid-test, a worker once it is back ------------------


def _is_envelope(response: Any) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and {"code", "message"} <= set(error)


@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_with_redis_down_the_api_answers_and_the_lookup_runs_once_it_is_back(
    settings: Any,
    redis_server: RedisServer,
    celery_worker_factory: Callable[..., CeleryWorkerProcess],
    agent: User,
    producer: User,
) -> None:
    from tests.builders import token_client

    broker_url, cache_url = redis_server.url_for(0), redis_server.url_for(1)
    settings.CACHES = redis_cache(cache_url)
    # /readyz probes settings.CELERY_BROKER_URL; tasks go through publishing_to() below.
    settings.CELERY_BROKER_URL = broker_url
    customer = factories.CustomerFactory(customer_id="cust-redis")
    method_up = factories.MethodFactory(customer=customer, phone_number="+14155550101")
    method_down = factories.MethodFactory(
        customer=customer, role="backup", phone_number="+14155550102"
    )
    for method in (method_up, method_down):
        factories.LocalDeliveryRecordFactory(to=method.phone_number, status="delivered")
    agent_api, producer_api = token_client(agent), token_client(producer)
    state_url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    lookups_url = f"{state_url}delivery-lookups/"
    answers: list[Any] = []

    def call(client: APIClient, verb: str, url: str, body: Any = None) -> tuple[Any, float]:
        started = time.monotonic()
        response = client.get(url) if verb == "get" else client.post(url, body, format="json")
        elapsed = time.monotonic() - started
        answers.append(response)
        return response, elapsed

    with publishing_to(broker_url):
        # Redis up: the cache and broker pools connect, the throttle counts in Redis.
        assert call(agent_api, "get", state_url)[0].status_code == 200
        up, _ = call(agent_api, "post", lookups_url, {"method_id": method_up.method_id})
        assert up.status_code == 202
        assert DeliveryLookup.objects.get(pk=up.json()["id"]).enqueued_at is not None
        assert redis_server.client(1).dbsize() > 0  # the throttle's counter and the advisories

        redis_server.stop()

        timings: dict[str, float] = {}
        state, timings["state read"] = call(agent_api, "get", state_url)
        assert state.status_code == 200, state.content
        event, timings["event post"] = call(
            producer_api,
            "post",
            "/api/v1/events/",
            event_body(
                "ev-redis-down",
                "code_resend_requested",
                customer.customer_id,
                method_id=method_up.method_id,
            ),
        )
        assert event.status_code == 201, event.content
        session, timings["session create"] = call(agent_api, "post", f"{state_url}sessions/", {})
        assert session.status_code == 201, session.content
        down, timings["lookup request"] = call(
            agent_api, "post", lookups_url, {"method_id": method_down.method_id}
        )
        assert down.status_code == 202, down.content
        lookup_down = DeliveryLookup.objects.get(pk=down.json()["id"])
        assert (lookup_down.status, lookup_down.enqueued_at) == ("pending", None)
        assert all(seconds < SLO_SECONDS for seconds in timings.values()), timings
        assert dependencies.outage_counts()["cache"] >= 4

        # Requests that fail on purpose leave no row behind, Redis down or not.
        before = row_counts()
        bad, _ = call(
            producer_api,
            "post",
            "/api/v1/events/",
            {**event_body("ev-bad", "code_sent", customer.customer_id), "occurred_at": "1999"},
        )
        unknown, _ = call(
            producer_api,
            "post",
            "/api/v1/events/",
            event_body("ev-unknown", "code_sent", "cust-new", method_id="m-nowhere"),
        )
        assert (bad.status_code, unknown.status_code) == (400, 409)
        assert row_counts() == before

        # Readiness names both parts that are down; the API above answered regardless.
        ready = Client().get("/readyz")
        assert ready.status_code == 503
        assert {"cache", "broker"} <= set(ready.json()["failing"])
        assert ready.json()["fallbacks"]["cache"] >= 4

        # Redis is back (empty: no persistence, the first lookup's message is gone too).
        back_at = time.monotonic()
        redis_server.start()
        worker = celery_worker_factory(
            broker_url=broker_url,
            queues=["celery"],
            env={
                "DATABASE_URL": django_database_url(connection.settings_dict),
                "CACHE_URL": cache_url,
                "TWOSV_ATS_BACKEND": "local",
            },
        )
        worker_ready = time.monotonic() - back_at
        # What beat's sweep does once the lookups are stale (TWOSV_LOOKUP_STALE_AFTER).
        later = timezone.now() + settings.TWOSV_LOOKUP_STALE_AFTER + timedelta(seconds=1)
        assert services.lookups_sweep(now=later) == 2
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = set(
                DeliveryLookup.objects.filter(pk__in=[up.json()["id"], lookup_down.pk]).values_list(
                    "status", flat=True
                )
            )
            if statuses <= {"succeeded", "failed"}:
                break
            time.sleep(0.05)
        completed = time.monotonic() - back_at

    for lookup in DeliveryLookup.objects.filter(pk__in=[up.json()["id"], lookup_down.pk]):
        assert (lookup.status, lookup.verdict) == ("succeeded", "delivered"), worker.log
    assert call(agent_api, "get", state_url)[0].status_code == 200
    # Every error answered (5xx included, had there been any) is the JSON envelope.
    assert [r.status_code for r in answers if r.status_code >= 500] == []
    assert all(_is_envelope(r) for r in answers if r.status_code >= 400)
    print(
        "\nRedis down: "
        + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items())
        + f"; after Redis returned: worker ready {worker_ready:.1f} s,"
        f" both lookups succeeded {completed:.1f} s"
    )
