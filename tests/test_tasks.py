"""Delivery lookup runs, the task around them and the sweeper (eager Celery, real ATS server)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone

from tests import factories
from tests.ats_server import AtsTestServer, ScriptedResponse
from twosv import services, tasks
from twosv.ats import (
    AtsMessage,
    AtsPermanentError,
    AtsTransientError,
    HttpAtsClient,
    LocalAtsClient,
    ats_client_from_settings,
)
from twosv.models import DeliveryAttempt, DeliveryLookup, LookupStatus

pytestmark = pytest.mark.django_db

PHONE = "+14155550142"


@pytest.fixture
def method(db: None) -> Any:
    return factories.MethodFactory(phone_number=PHONE)


def make_lookup(method: Any, **fields: Any) -> DeliveryLookup:
    """Create a lookup row as a request would, without publishing it."""
    created_at = fields.pop("created_at", None)
    lookup = DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        period_start=timezone.now() - timedelta(hours=24),
        **fields,
    )
    if created_at is not None:
        # auto_now_add ignores a value given to create().
        DeliveryLookup.objects.filter(pk=lookup.pk).update(created_at=created_at)
        lookup.refresh_from_db()
    return lookup


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


class ChangingClient:
    """An ATS client that lets the test act while the ATS "answers" (no HTTP involved)."""

    def __init__(self, during: Any, messages: list[AtsMessage] | None = None) -> None:
        self.during = during
        self.answer = messages or []

    def messages(self, *, to: str, since: datetime) -> list[AtsMessage]:
        self.during()
        return self.answer


# --- lookup_run ---------------------------------------------------------------------------------


def test_a_run_stores_the_attempts_and_the_verdict(http_ats: AtsTestServer, method: Any) -> None:
    http_ats.add_message(to=PHONE, status="delivered", created_at=ago(hours=2))
    http_ats.add_message(to=PHONE, status="failed", error_code=30003, created_at=ago(minutes=2))
    lookup = make_lookup(method)

    services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "unreachable", 1)
    assert lookup.started_at is not None
    assert lookup.finished_at is not None
    assert sorted(lookup.attempts.values_list("status", flat=True)) == ["delivered", "failed"]


def test_a_finished_lookup_is_left_alone(http_ats: AtsTestServer, method: Any) -> None:
    finished_at = ago(minutes=1)
    lookup = make_lookup(
        method, status=LookupStatus.SUCCEEDED, verdict="delivered", tries=1, finished_at=finished_at
    )

    services.lookup_run(lookup_id=lookup.pk)
    tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 1)
    assert lookup.finished_at == finished_at
    assert http_ats.requests == []


def test_a_failed_lookup_is_left_alone(http_ats: AtsTestServer, method: Any) -> None:
    lookup = make_lookup(method, status=LookupStatus.FAILED, tries=5, failure_reason="gone")

    services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries, lookup.failure_reason) == ("failed", 5, "gone")
    assert http_ats.requests == []


def test_a_try_another_worker_is_running_is_left_alone(
    http_ats: AtsTestServer, method: Any
) -> None:
    lookup = make_lookup(method, status=LookupStatus.RUNNING, tries=1, started_at=ago(seconds=20))

    services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("running", 1)
    assert http_ats.requests == []


def test_a_try_whose_worker_was_lost_is_taken_over(http_ats: AtsTestServer, method: Any) -> None:
    http_ats.add_message(to=PHONE, status="delivered")
    lookup = make_lookup(method, status=LookupStatus.RUNNING, tries=1, started_at=ago(minutes=30))

    services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 2)


def test_a_lost_last_try_fails_the_lookup_without_asking_again(
    http_ats: AtsTestServer, method: Any
) -> None:
    lookup = make_lookup(method, status=LookupStatus.RUNNING, tries=5, started_at=ago(minutes=30))

    services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("failed", 5)
    assert lookup.failure_reason == (
        "Gave up after 5 tries: the last try did not finish "
        "(its worker was lost or the ATS did not answer)."
    )
    assert http_ats.requests == []


def test_a_transient_error_puts_the_lookup_back_to_pending_and_propagates(
    http_ats: AtsTestServer, method: Any
) -> None:
    http_ats.script([ScriptedResponse(502, {})])
    lookup = make_lookup(method)

    with pytest.raises(AtsTransientError):
        services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("pending", 1)
    assert (
        lookup.failure_reason
        == "Try 1 of 5 failed: ATS is unavailable (502 Bad Gateway); retrying."
    )
    # Waiting for its retry counts as enqueued: the sweeper leaves it alone meanwhile.
    assert lookup.enqueued_at is not None
    assert services.lookups_sweep() == 0


def test_a_transient_error_on_the_last_try_fails_the_lookup(
    http_ats: AtsTestServer, method: Any
) -> None:
    http_ats.script([ScriptedResponse(500, {})])
    lookup = make_lookup(method, tries=4)

    services.lookup_run(lookup_id=lookup.pk)

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("failed", 5)
    assert lookup.failure_reason.startswith("The ATS still failed after 5 tries: ")


def test_the_max_tries_setting_bounds_the_tries(
    http_ats: AtsTestServer, method: Any, settings: Any
) -> None:
    settings.TWOSV_LOOKUP_MAX_TRIES = 2
    http_ats.script([ScriptedResponse(500, {})] * 5)
    lookup = make_lookup(method)

    tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("failed", 2)
    assert len(http_ats.requests) == 2


def test_a_permanent_error_fails_at_once(http_ats: AtsTestServer, method: Any) -> None:
    http_ats.script([ScriptedResponse(200, raw=b"<html>not json</html>")])
    lookup = make_lookup(method)

    tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("failed", 1)
    assert lookup.failure_reason == "ATS answered page 1 with something that is not JSON."
    assert len(http_ats.requests) == 1


def test_a_misconfigured_backend_fails_with_a_readable_reason(method: Any, settings: Any) -> None:
    settings.TWOSV_ATS_BACKEND = "http"
    settings.ATS_BASE_URL = ""
    lookup = make_lookup(method)

    tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert lookup.status == "failed"
    assert lookup.failure_reason == (
        "The ATS is not configured correctly: ATS base URL must start with http:// or https://."
    )


def test_an_unexpected_error_fails_the_lookup_instead_of_leaving_it_running(method: Any) -> None:
    lookup = make_lookup(method)

    def explode() -> None:
        raise KeyError("bug")

    services.lookup_run(lookup_id=lookup.pk, client=ChangingClient(explode))

    lookup.refresh_from_db()
    assert lookup.status == "failed"
    assert lookup.failure_reason == "The lookup failed unexpectedly (KeyError)."


def test_a_result_is_dropped_when_a_newer_try_took_over_meanwhile(method: Any) -> None:
    lookup = make_lookup(method)
    message = AtsMessage(
        id="SM1",
        to=PHONE,
        sender="+14803605516",
        provider="twilio",
        status="delivered",
        error_code=None,
        created_at=ago(minutes=1),
        updated_at=ago(minutes=1),
    )

    def taken_over() -> None:
        # The sweeper thought this worker lost and another worker started try 2.
        DeliveryLookup.objects.filter(pk=lookup.pk).update(tries=2, started_at=timezone.now())

    services.lookup_run(lookup_id=lookup.pk, client=ChangingClient(taken_over, [message]))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries, lookup.verdict) == ("running", 2, "")
    assert not DeliveryAttempt.objects.exists()


def test_the_soft_time_limit_during_the_ats_call_is_a_transient_failure_retried(
    http_ats: AtsTestServer, method: Any
) -> None:
    http_ats.add_message(to=PHONE, status="delivered")
    lookup = make_lookup(method)
    calls: list[int] = []

    def interrupted_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            # What Celery raises inside the task when CELERY_TASK_SOFT_TIME_LIMIT passes.
            raise SoftTimeLimitExceeded()

    with pytest.raises(AtsTransientError, match="45 s soft time limit"):
        services.lookup_run(lookup_id=lookup.pk, client=ChangingClient(interrupted_once))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("pending", 1)
    assert lookup.failure_reason == (
        "Try 1 of 5 failed: the try ran into the task's 45 s soft time limit; retrying."
    )
    assert lookup.enqueued_at is not None

    # The task retries it like any transient error (eager mode runs the retry inline).
    tasks.delivery_lookup_run.delay(str(lookup.pk))
    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 2)


def test_the_task_retries_after_a_soft_time_limit(http_ats: AtsTestServer, method: Any) -> None:
    http_ats.add_message(to=PHONE, status="delivered")
    lookup = make_lookup(method)
    real_run = services.lookup_run
    runs: list[int] = []

    def run(*, lookup_id: Any) -> Any:
        runs.append(1)
        if len(runs) == 1:

            def interrupt() -> None:
                raise SoftTimeLimitExceeded()

            return real_run(lookup_id=lookup_id, client=ChangingClient(interrupt))
        return real_run(lookup_id=lookup_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "lookup_run", run)
        tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 2)
    assert len(runs) == 2


def test_the_soft_time_limit_on_the_last_try_fails_the_lookup(method: Any) -> None:
    lookup = make_lookup(method, tries=4)

    def interrupt() -> None:
        raise SoftTimeLimitExceeded()

    services.lookup_run(lookup_id=lookup.pk, client=ChangingClient(interrupt))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("failed", 5)
    assert lookup.failure_reason == (
        "The ATS still failed after 5 tries: the try ran into the task's 45 s soft time limit."
    )


def test_the_soft_time_limit_outside_the_ats_call_leaves_the_lookup_to_the_sweeper(
    method: Any, caplog: pytest.LogCaptureFixture
) -> None:
    lookup = make_lookup(method)

    def stuck(**kwargs: Any) -> None:
        raise SoftTimeLimitExceeded()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "lookup_run", stuck)
        tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert lookup.status == "pending"
    assert "the sweeper will pick the lookup up" in caplog.text


def test_a_redelivered_message_of_a_finished_lookup_is_a_no_op(
    http_ats: AtsTestServer, method: Any
) -> None:
    http_ats.add_message(to=PHONE, status="delivered")
    lookup = make_lookup(method)
    tasks.delivery_lookup_run.delay(str(lookup.pk))
    lookup.refresh_from_db()
    finished = (lookup.status, lookup.verdict, lookup.tries, lookup.finished_at)
    assert finished[:3] == ("succeeded", "delivered", 1)

    # Redis hands the unacknowledged message of a killed worker out again, an hour later.
    tasks.delivery_lookup_run.delay(str(lookup.pk))

    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries, lookup.finished_at) == finished
    assert len(http_ats.requests) == 1
    assert lookup.attempts.count() == 1


@pytest.mark.parametrize("lookup_id", ["00000000-0000-0000-0000-000000000000", "garbage"])
def test_an_unknown_lookup_is_ignored(db: None, lookup_id: str) -> None:
    assert services.lookup_run(lookup_id=lookup_id) is None
    tasks.delivery_lookup_run.delay(lookup_id)


# --- lookup_request: enqueued after commit, never before --------------------------------------


def test_a_rolled_back_request_publishes_nothing(
    method: Any, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    def request_then_roll_back() -> None:
        with transaction.atomic():
            services.lookup_request(customer=method.customer, actor=agent)
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        request_then_roll_back()

    assert callbacks == []
    assert not DeliveryLookup.objects.exists()


def test_a_committed_request_publishes_exactly_once(
    method: Any, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        lookup, created = services.lookup_request(customer=method.customer, actor=agent)
        again, created_again = services.lookup_request(customer=method.customer, actor=agent)

    assert (created, created_again) == (True, False)
    assert again.pk == lookup.pk
    assert len(callbacks) == 1


def test_publishing_records_when_the_lookup_was_enqueued(
    method: Any, agent: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TWOSV_ATS_BACKEND = "local"
    with django_capture_on_commit_callbacks(execute=True):
        lookup, _ = services.lookup_request(customer=method.customer, actor=agent)

    lookup.refresh_from_db()
    assert lookup.enqueued_at is not None
    assert lookup.status == "succeeded"
    assert lookup.verdict == "not_sent"


# --- The sweeper ----------------------------------------------------------------------------------


def test_the_sweeper_publishes_lookups_left_pending(http_ats: AtsTestServer, method: Any) -> None:
    http_ats.add_message(to=PHONE, status="delivered")
    never_published = make_lookup(method, created_at=ago(minutes=3))

    assert services.lookups_sweep() == 1

    never_published.refresh_from_db()
    assert (never_published.status, never_published.verdict) == ("succeeded", "delivered")
    assert never_published.enqueued_at is not None


def test_the_sweeper_leaves_recent_and_finished_lookups_alone(
    http_ats: AtsTestServer, method: Any
) -> None:
    make_lookup(method, created_at=ago(seconds=30))
    make_lookup(
        factories.MethodFactory(),
        created_at=ago(minutes=10),
        enqueued_at=ago(seconds=30),  # waiting for a retry
    )
    make_lookup(
        factories.MethodFactory(),
        status=LookupStatus.RUNNING,
        created_at=ago(minutes=10),
        started_at=ago(minutes=1),
    )
    for status in (LookupStatus.SUCCEEDED, LookupStatus.FAILED):
        make_lookup(factories.MethodFactory(), status=status, created_at=ago(hours=1))

    assert services.lookups_sweep() == 0
    assert http_ats.requests == []


def test_the_sweeper_publishes_a_lookup_published_long_ago_but_never_run(
    http_ats: AtsTestServer, method: Any
) -> None:
    lookup = make_lookup(method, created_at=ago(minutes=10), enqueued_at=ago(minutes=5))

    assert services.lookups_sweep() == 1

    lookup.refresh_from_db()
    assert lookup.status == "succeeded"


def test_the_sweeper_recovers_a_lookup_whose_worker_died(
    http_ats: AtsTestServer, method: Any
) -> None:
    lookup = make_lookup(
        method,
        status=LookupStatus.RUNNING,
        tries=1,
        created_at=ago(minutes=40),
        started_at=ago(minutes=30),
    )

    assert tasks.delivery_lookup_sweep.delay().get() == 1

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("succeeded", 2)


def test_the_sweeper_takes_a_try_for_lost_after_the_running_stale_after_setting(
    http_ats: AtsTestServer, method: Any, settings: Any
) -> None:
    http_ats.add_message(to=PHONE, status="delivered")
    stale_after = settings.TWOSV_LOOKUP_RUNNING_STALE_AFTER
    lookup = make_lookup(
        method,
        status=LookupStatus.RUNNING,
        tries=1,
        created_at=ago(minutes=10),
        enqueued_at=ago(minutes=10),
        started_at=timezone.now() - stale_after + timedelta(seconds=10),
    )

    assert services.lookups_sweep() == 0
    assert services.lookups_sweep(now=timezone.now() + timedelta(seconds=11)) == 1

    lookup.refresh_from_db()
    assert (lookup.status, lookup.verdict, lookup.tries) == ("succeeded", "delivered", 2)


def test_a_lost_try_goes_back_to_pending_with_its_reason_while_the_broker_is_down(
    http_ats: AtsTestServer, method: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookup = make_lookup(
        method,
        status=LookupStatus.RUNNING,
        tries=2,
        created_at=ago(minutes=10),
        enqueued_at=ago(minutes=3),
        started_at=ago(minutes=3),
    )
    monkeypatch.setattr("twosv.services.lookups.lookup_enqueue", lambda **kwargs: False)

    assert services.lookups_sweep() == 0

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("pending", 2)
    assert lookup.failure_reason == "Try 2 of 5 did not finish (its worker was lost); retrying."
    monkeypatch.undo()
    # Still lost by its last publish: the next sweep publishes it once the broker is back.
    http_ats.add_message(to=PHONE, status="delivered")
    assert services.lookups_sweep() == 1
    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("succeeded", 3)


def test_the_sweeper_fails_a_lost_last_try_with_a_readable_reason(
    http_ats: AtsTestServer, method: Any
) -> None:
    lookup = make_lookup(
        method,
        status=LookupStatus.RUNNING,
        tries=5,
        created_at=ago(minutes=20),
        started_at=ago(minutes=5),
    )

    assert services.lookups_sweep() == 0

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries) == ("failed", 5)
    assert lookup.finished_at is not None
    assert lookup.failure_reason == (
        "Gave up after 5 tries: the last try did not finish "
        "(its worker was lost or the ATS did not answer)."
    )
    assert http_ats.requests == []


def test_a_slow_worker_whose_try_the_sweeper_released_drops_its_result(
    method: Any, settings: Any
) -> None:
    settings.TWOSV_ATS_BACKEND = "local"
    lookup = make_lookup(method)
    message = AtsMessage(
        id="SM1",
        to=PHONE,
        sender="+14803605516",
        provider="twilio",
        status="failed",
        error_code=30007,
        created_at=ago(minutes=1),
        updated_at=ago(minutes=1),
    )

    def the_sweeper_gives_up_on_us() -> None:
        # Later than the running stale-after: the sweeper releases try 1 and (eager) runs try 2.
        later = timezone.now() + settings.TWOSV_LOOKUP_RUNNING_STALE_AFTER + timedelta(seconds=1)
        assert services.lookups_sweep(now=later) == 1

    services.lookup_run(
        lookup_id=lookup.pk, client=ChangingClient(the_sweeper_gives_up_on_us, [message])
    )

    lookup.refresh_from_db()
    assert (lookup.status, lookup.tries, lookup.verdict) == ("succeeded", 2, "not_sent")
    assert not DeliveryAttempt.objects.exists()


def test_the_sweep_uses_the_stale_after_setting(
    http_ats: AtsTestServer, method: Any, settings: Any
) -> None:
    settings.TWOSV_LOOKUP_STALE_AFTER = timedelta(minutes=30)
    make_lookup(method, created_at=ago(minutes=10))

    assert services.lookups_sweep() == 0
    assert services.lookups_sweep(now=timezone.now() + timedelta(minutes=25)) == 1


# --- Retry waits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 3, 10, 1000])
def test_retry_waits_grow_but_stay_capped(retries: int) -> None:
    rng = random.Random(retries)
    waits = [tasks.retry_countdown(retries, rng=rng) for _ in range(200)]

    assert all(0 <= wait <= tasks.RETRY_BACKOFF_MAX for wait in waits)
    assert max(waits) <= min(tasks.RETRY_BACKOFF_MAX, tasks.RETRY_BACKOFF_BASE * 2**retries)


def test_a_retry_waits_at_least_what_retry_after_asks_up_to_the_cap() -> None:
    assert tasks.retry_countdown(0, 7, rng=random.Random(1)) >= 7
    assert tasks.retry_countdown(0, 10**9) == tasks.RETRY_BACKOFF_MAX


# --- Backends -------------------------------------------------------------------------------------


def test_the_backend_comes_from_settings(settings: Any) -> None:
    settings.TWOSV_ATS_BACKEND = "local"
    assert isinstance(ats_client_from_settings(), LocalAtsClient)

    settings.TWOSV_ATS_BACKEND = "http"
    settings.ATS_BASE_URL = "https://ats.internal"
    settings.ATS_TOKEN = "secret-token"
    client = ats_client_from_settings()
    assert isinstance(client, HttpAtsClient)
    assert "secret-token" not in repr(client)

    settings.ATS_TOKEN = ""
    with pytest.raises(AtsPermanentError, match="ATS token must not be empty"):
        ats_client_from_settings()

    settings.TWOSV_ATS_BACKEND = "carrier-pigeon"
    with pytest.raises(AtsPermanentError, match="Unknown ATS backend"):
        ats_client_from_settings()


def test_the_local_backend_filters_by_recipient_and_period(db: None) -> None:
    since = ago(hours=24)
    inside = factories.LocalDeliveryRecordFactory(to=PHONE, created_at=ago(hours=1))
    factories.LocalDeliveryRecordFactory(to=PHONE, created_at=ago(hours=25))
    factories.LocalDeliveryRecordFactory(to="+14155550999", created_at=ago(hours=1))

    messages = LocalAtsClient().messages(to=PHONE, since=since)

    assert [m.id for m in messages] == [str(inside.external_id)]
    assert messages[0].status == "delivered"


def test_the_local_backend_refuses_a_record_with_an_unknown_status(db: None) -> None:
    factories.LocalDeliveryRecordFactory(to=PHONE, status="lost")

    with pytest.raises(AtsPermanentError, match="unknown status"):
        LocalAtsClient().messages(to=PHONE, since=ago(hours=24))
