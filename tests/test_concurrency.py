"""Concurrent writers on one method, on real PostgreSQL: row locks serialize them (docs/SPEC.md §3).

Each thread has its own database connection, as separate web workers would; every test here
commits for real (transactional_db), so the rows written by one thread are seen by the others.
"""

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.builders import enroll, ingest, token_client
from twosv import policy, services
from twosv.models import Customer, Event, EventOutcome, EventType, Method
from twosv.selectors import lock_policy, method_projection, method_state

T = TypeVar("T")

pytestmark = [
    pytest.mark.postgres,
    # serialized_rollback: start from the migrated data (the roles), which a flush removes.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def in_threads(jobs: list[Callable[[], T]], threads: int) -> list[T | BaseException]:
    """Run the jobs from `threads` threads released together; return each job's result or error.

    Every thread closes its own database connection when it is done.
    """
    results: list[T | BaseException] = [RuntimeError("not run")] * len(jobs)
    pending = list(enumerate(jobs))
    take = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        try:
            start.wait(timeout=30)
            while True:
                with take:
                    if not pending:
                        return
                    index, job = pending.pop()
                try:
                    results[index] = job()
                except BaseException as exc:  # noqa: BLE001 - reported to the test
                    results[index] = exc
        finally:
            connection.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in workers), "a worker hung"
    return results


def enrol() -> Method:
    """Enrol m-1 of c-1 two days ago (these tests run on the real clock)."""
    return enroll(at=timezone.now() - timedelta(days=2), phone_number="+14155550142")


def assert_exact(method: Method) -> None:
    """The stored projection and outcomes equal a fold of every stored event of the method."""
    stored = list(Event.objects.filter(method=method))
    projection, outcomes = policy.fold(
        (policy.FoldEvent(e.event_id, e.type, e.occurred_at) for e in stored), lock_policy()
    )
    assert method_projection(Method.objects.get(pk=method.pk)) == projection
    assert {e.event_id: e.outcome for e in stored} == {
        event.event_id: outcome.value for event, outcome in outcomes
    }


def producer_clients(producer, n: int) -> list[APIClient]:
    return [token_client(producer) for _ in range(n)]


def post_job(client: APIClient, body: dict[str, Any]) -> Callable[[], tuple[int, Any]]:
    def job() -> tuple[int, Any]:
        response = client.post("/api/v1/events/", json.dumps(body), content_type="application/json")
        return response.status_code, response.json()

    return job


def test_201_concurrent_resends_lock_exactly_once_at_the_201st():
    method = enrol()
    start = timezone.now() - timedelta(hours=1)
    times = [start + timedelta(seconds=i) for i in range(201)]
    jobs = [partial(ingest, f"r{i:03d}", at=at) for i, at in enumerate(times)]
    random.Random(201).shuffle(jobs)

    results = in_threads(jobs, threads=8)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert Counter(r.status for r in results) == {"accepted": 201}
    method = Method.objects.get(pk=method.pk)
    assert method.locked_at == times[200]
    assert method.locked_until == times[200] + timedelta(hours=24)
    locked = Event.objects.filter(method=method, outcome=EventOutcome.LOCKED)
    assert list(locked.values_list("event_id", flat=True)) == ["r200"]
    assert Event.objects.filter(method=method, outcome=EventOutcome.COUNTED).count() == 200
    assert method_state(method, now=timezone.now()).status == "locked"
    assert_exact(method)


@pytest.mark.parametrize("kind", ["resend", "enrolment of a new method"])
def test_the_same_event_posted_20_times_at_once_is_stored_once(producer, kind):
    if kind == "resend":
        enrol()
        body = {
            "event_id": "same-1",
            "type": "code_resend_requested",
            "customer_id": "c-1",
            "occurred_at": timezone.now().isoformat(),
            "data": {"method_id": "m-1"},
        }
    else:
        body = {
            "event_id": "same-1",
            "type": "method_enrolled",
            "customer_id": "c-new",
            "occurred_at": timezone.now().isoformat(),
            "data": {"method_id": "m-new", "kind": "authenticator_app", "role": "backup"},
        }
    clients = producer_clients(producer, 20)

    results = in_threads([post_job(client, body) for client in clients], threads=20)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert Counter(status for status, _ in results) == {201: 1, 200: 19}
    assert {body["status"] for status, body in results if status == 200} == {"duplicate"}
    assert Event.objects.filter(event_id="same-1").count() == 1
    if kind == "resend":
        assert method_state(Method.objects.get(), now=timezone.now()).resend_count == 1
    else:
        assert Method.objects.filter(method_id="m-new").count() == 1
        assert Customer.objects.filter(customer_id="c-new").count() == 1


def test_20_concurrent_enrolments_of_one_new_method_id_make_one_method(producer):
    clients = producer_clients(producer, 20)
    jobs = [
        post_job(
            client,
            {
                "event_id": f"enrol-{n}",
                "type": "method_enrolled",
                "customer_id": f"c-{n % 2}",
                "occurred_at": timezone.now().isoformat(),
                "data": {
                    "method_id": "m-race",
                    "kind": "sms",
                    "role": "primary",
                    "phone_number": "+14155550142",
                },
            },
        )
        for n, client in enumerate(clients)
    ]

    results = in_threads(jobs, threads=20)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: 19}
    refusals = {body["error"]["code"] for status, body in results if status == 409}
    assert refusals == {"method_exists"}
    assert Method.objects.filter(method_id="m-race").count() == 1
    assert Event.objects.filter(type=EventType.METHOD_ENROLLED).count() == 1


def test_a_lift_racing_new_resends_loses_nothing(settings, staff):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 50
    method = enrol()
    seed_start = timezone.now() - timedelta(minutes=30)
    for i in range(51):
        ingest(f"seed-{i:02d}", at=seed_start + timedelta(seconds=i))
    assert method_state(Method.objects.get(pk=method.pk), now=timezone.now()).status == "locked"

    # Resends from 20 s before to 20 s after the moment of the lift, racing it.
    around = timezone.now()
    jobs: list[Callable[[], Any]] = [
        partial(ingest, f"race-{i:02d}", at=around + timedelta(seconds=i - 20, microseconds=i))
        for i in range(40)
    ]
    jobs.insert(20, lambda: services.lock_lift(method=method, actor=staff, reason="race"))

    results = in_threads(jobs, threads=8)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert results[20] is True
    lifted = Event.objects.get(type=EventType.LOCK_LIFTED)
    races = Event.objects.filter(event_id__startswith="race-")
    assert races.count() == 40
    # Before the lift the method was locked: blocked. After it, each one counts.
    before = races.filter(occurred_at__lt=lifted.occurred_at)
    assert set(before.values_list("outcome", flat=True)) <= {"blocked"}
    after = races.filter(occurred_at__gt=lifted.occurred_at)
    assert set(after.values_list("outcome", flat=True)) <= {"counted"}
    state = method_state(Method.objects.get(pk=method.pk), now=timezone.now())
    assert state.status == "active"
    assert state.resend_count == after.count()
    assert_exact(method)


def test_concurrent_enrolments_for_one_new_customer_create_it_once():
    jobs = [
        partial(
            ingest,
            f"enrol-{n}",
            EventType.METHOD_ENROLLED,
            at=timezone.now() - timedelta(minutes=1),
            method_id=f"m-{n}",
            customer_id="c-new",
            kind="security_key",
            role="backup",
        )
        for n in range(10)
    ]

    results = in_threads(jobs, threads=10)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert Counter(r.status for r in results) == {"accepted": 10}
    customer = Customer.objects.get(customer_id="c-new")
    assert customer.methods.count() == 10
