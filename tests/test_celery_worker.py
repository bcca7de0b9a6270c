"""Delivery lookups with a real broker and a real worker (`celery.contrib.testing.worker`).

The worker runs in a thread of this process, against Redis (CELERY_BROKER_URL) and the test
database, which must be PostgreSQL: requests, worker and test then really commit, in
separate connections. The broker-down request check needs neither and runs everywhere.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun, task_retry
from django.db import connection
from django.db.models import F
from rest_framework.test import APIClient

from crm_plugin.celery import app
from tests import factories
from tests.ats_server import AtsTestServer, ScriptedResponse
from tests.builders import token_client
from twosv import tasks
from twosv.models import DeliveryLookup

# Nothing listens there: connections are refused at once.
BROKER_DOWN = "redis://127.0.0.1:1/0"
SLO_SECONDS = 2.0


def request_url(customer_id: str) -> str:
    return f"/api/v1/customers/{customer_id}/twosv/delivery-lookups/"


def request_lookup(client: APIClient, method: Any) -> Any:
    return client.post(request_url(method.customer.customer_id), {}, format="json")


def _reset_publisher() -> None:
    """Make the app look its broker pools up again, by the broker URL in force."""
    # Only forget them: kombu keeps one pool per broker URL and hands the same one back.
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Publish tasks to `url` meanwhile (Celery reads CELERY_BROKER_WRITE_URL first)."""
    previous = os.environ.get("CELERY_BROKER_WRITE_URL")
    _reset_publisher()
    os.environ["CELERY_BROKER_WRITE_URL"] = url
    try:
        yield
    finally:
        if previous is None:
            del os.environ["CELERY_BROKER_WRITE_URL"]
        else:
            os.environ["CELERY_BROKER_WRITE_URL"] = previous
        _reset_publisher()


def _close_db_connection(**kwargs: Any) -> None:
    # The worker thread's connection must not outlive the test (the test database is
    # flushed, then dropped, at the end).
    connection.close()


@contextmanager
def running_worker() -> Iterator[None]:
    """Run a solo worker in a thread, on a queue emptied of earlier runs' messages."""
    app.control.purge()
    task_postrun.connect(_close_db_connection, weak=False)
    try:
        with start_worker(app, perform_ping_check=False, pool="solo", shutdown_timeout=30):
            yield
    finally:
        task_postrun.disconnect(_close_db_connection)


def wait_until_finished(lookup_id: object, *, timeout: float = 15.0) -> DeliveryLookup:
    deadline = time.monotonic() + timeout
    while True:
        lookup = DeliveryLookup.objects.get(pk=lookup_id)
        if lookup.status in ("succeeded", "failed") or time.monotonic() > deadline:
            return lookup
        time.sleep(0.05)


@pytest.fixture
def method(db: None) -> Any:
    return factories.MethodFactory(phone_number="+14155550177")


@pytest.fixture
def not_eager() -> None:
    """Publish to the broker instead of running tasks inline (conftest restores it)."""
    app.conf.task_always_eager = False


# --- Broker down: the request still answers, and quickly ------------------------------------------


def test_the_request_answers_202_within_2_s_while_the_broker_is_down(
    not_eager: None,
    agent_client: APIClient,
    method: Any,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with publishing_to(BROKER_DOWN):
        started = time.monotonic()
        # The publish happens on commit: time the request and its commit together.
        with django_capture_on_commit_callbacks(execute=True):
            response = request_lookup(agent_client, method)
        elapsed = time.monotonic() - started

    assert response.status_code == 202
    assert elapsed < SLO_SECONDS
    lookup = DeliveryLookup.objects.get()
    assert (lookup.status, lookup.enqueued_at, lookup.tries) == ("pending", None, 0)
    assert "the sweeper will publish it again" in caplog.text


# --- A real worker --------------------------------------------------------------------------------
#
# The worker and the request threads commit for real, so the test database is flushed after
# each test; serialized_rollback restores what the migrations put there (roles, advisories).


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_lookup_requested_through_the_api_completes_within_seconds(
    http_ats: AtsTestServer, agent_client: APIClient, method: Any
) -> None:
    http_ats.add_message(to=method.phone_number, status="failed", error_code=30007)

    with running_worker():
        started = time.monotonic()
        response = request_lookup(agent_client, method)
        lookup = wait_until_finished(response.json()["id"])
        elapsed = time.monotonic() - started

    assert response.status_code == 202
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "carrier_filtered", 1)
    assert lookup.enqueued_at is not None
    assert elapsed < 10
    detail = agent_client.get(f"/api/v1/twosv/delivery-lookups/{lookup.pk}/").json()
    assert detail["verdict"] == "carrier_filtered"


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_transient_error_is_retried_by_the_worker_after_retry_after(
    http_ats: AtsTestServer, agent_client: APIClient, method: Any
) -> None:
    http_ats.script([ScriptedResponse(503, {}, headers={"Retry-After": "1"})])
    http_ats.add_message(to=method.phone_number, status="delivered")
    countdowns: list[float] = []

    def on_retry(sender: Any = None, reason: Any = None, **kwargs: Any) -> None:
        countdowns.append(float(reason.when))

    task_retry.connect(on_retry, weak=False)
    try:
        with running_worker():
            started = time.monotonic()
            response = request_lookup(agent_client, method)
            lookup = wait_until_finished(response.json()["id"])
            elapsed = time.monotonic() - started
    finally:
        task_retry.disconnect(on_retry)

    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 2)
    assert len(countdowns) == 1
    assert 1 <= countdowns[0] <= tasks.RETRY_BACKOFF_MAX
    assert elapsed >= 1
    assert len(http_ats.requests) == 2


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_fifty_concurrent_requests_for_one_method_make_one_ats_call(
    http_ats: AtsTestServer, agent: Any, method: Any
) -> None:
    http_ats.add_message(to=method.phone_number, status="delivered")
    clients = [token_client(agent) for _ in range(50)]
    start = threading.Barrier(len(clients))

    def request(client: APIClient) -> tuple[int, str]:
        try:
            start.wait(timeout=30)
            response = request_lookup(client, method)
            return response.status_code, response.json().get("id", "")
        finally:
            connection.close()

    with running_worker():
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            results = list(pool.map(request, clients))
        statuses = sorted(status for status, _ in results)
        lookup_ids = {lookup_id for _, lookup_id in results}
        assert len(lookup_ids) == 1, results
        lookup = wait_until_finished(lookup_ids.pop())

    assert statuses == [200] * 49 + [202]
    assert (lookup.status, lookup.verdict) == ("succeeded", "delivered")
    assert DeliveryLookup.objects.count() == 1
    assert len(http_ats.requests) == 1


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_lookup_requested_while_the_broker_was_down_completes_once_it_is_back(
    http_ats: AtsTestServer, agent_client: APIClient, method: Any, settings: Any
) -> None:
    http_ats.add_message(to=method.phone_number, status="delivered")

    with publishing_to(BROKER_DOWN):
        started = time.monotonic()
        response = request_lookup(agent_client, method)
        elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert elapsed < SLO_SECONDS
    lookup_id = response.json()["id"]
    assert DeliveryLookup.objects.get(pk=lookup_id).status == "pending"
    assert http_ats.requests == []

    # The stale period passes; the broker is back; beat fires the sweeper.
    DeliveryLookup.objects.filter(pk=lookup_id).update(
        created_at=F("created_at") - settings.TWOSV_LOOKUP_STALE_AFTER - timedelta(seconds=1)
    )
    with running_worker():
        tasks.delivery_lookup_sweep.delay()
        lookup = wait_until_finished(lookup_id)

    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 1)
    assert lookup.enqueued_at is not None
    assert len(http_ats.requests) == 1
