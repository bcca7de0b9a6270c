"""Retention (SPEC §8): old events purged after a checkpoint keeps their effect, events before
a method's horizon refused with 409 event_too_old, old audit entries purged, numbers of methods
removed long ago erased. The clock is moved with time-machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings

from tests.builders import RESEND, enroll, enrolment, event, ingest, token_client
from twosv import policy, services, tasks
from twosv.audit import AuditAction, audit_record
from twosv.errors import Conflict, ErrorCode
from twosv.models import AuditEntry, Event, EventType, Method, MethodCheckpoint
from twosv.selectors import lock_policy, method_projection
from twosv.services.checkpoints import checkpoint_projection
from twosv.services.retention import HORIZON_STEP

pytestmark = pytest.mark.django_db

START = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=400)


@pytest.fixture(autouse=True)
def _policy(settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    settings.TWOSV_CHECKPOINT_EVERY = 7
    settings.TWOSV_EVENT_RETENTION = RETENTION
    settings.TWOSV_AUDIT_RETENTION = RETENTION


def history(time_machine, method_id: str = "m-1", days: int = 500) -> list[policy.FoldEvent]:
    """Enrol the method at START and give it resends and verifications every 12 h for `days`,
    each ingested on its day; return every event as the fold sees it."""
    time_machine.move_to(START, tick=False)
    enroll(method_id=method_id, at=START)
    for i in range(1, days * 2):
        at = START + timedelta(hours=12 * i)
        time_machine.move_to(at + timedelta(seconds=1), tick=False)
        type_ = EventType.CODE_VERIFIED if i % 9 == 0 else RESEND
        ingest(f"{method_id}-{i:04d}", type_, at=at, method_id=method_id)
    method = Method.objects.get(method_id=method_id)
    return [policy.FoldEvent(e.event_id, e.type, e.occurred_at) for e in method.events.all()]


def test_the_purge_keeps_the_projection_and_refuses_events_before_the_horizon(time_machine):
    events = history(time_machine)
    method = Method.objects.get(method_id="m-1")
    before = method_projection(method)
    now = START + timedelta(days=500)
    time_machine.move_to(now, tick=False)

    report = services.retention_purge(batch=50)

    cutoff = now - RETENTION
    method.refresh_from_db()
    assert method.purged_before == cutoff
    assert report.complete
    assert report.horizons_moved == 1
    purged = [e for e in events if e.occurred_at < cutoff]
    assert report.events_purged == len(purged) > 100
    assert not Event.objects.filter(method=method, occurred_at__lt=cutoff).exists()
    assert Event.objects.filter(method=method).count() == len(events) - len(purged)
    assert method_projection(method) == before
    # The horizon checkpoint holds the effect of every purged event; none is older.
    oldest = MethodCheckpoint.objects.filter(method=method).order_by("event_at").first()
    assert oldest is not None
    expected, _ = policy.fold(purged, lock_policy())
    assert checkpoint_projection(oldest) == expected

    # Before the horizon: refused, nothing stored.
    with pytest.raises(Conflict) as refused:
        ingest("too-old", at=cutoff - timedelta(seconds=1))
    assert refused.value.code == ErrorCode.EVENT_TOO_OLD
    assert not Event.objects.filter(event_id="too-old").exists()

    # Inside the retention, however late: accepted, and the fold is exact from the horizon.
    late = ingest("late-verify", EventType.CODE_VERIFIED, at=cutoff + timedelta(minutes=1))
    assert late.status == "accepted"
    late_event = policy.FoldEvent("late-verify", EventType.CODE_VERIFIED, late.event.occurred_at)
    everything = [*events, late_event]
    full, outcomes = policy.fold(everything, lock_policy())
    assert method_projection(Method.objects.get(pk=method.pk)) == full
    stored = dict(Event.objects.filter(method=method).values_list("event_id", "outcome"))
    assert stored == {e.event_id: o.value for e, o in outcomes if e.event_id in stored}


def test_an_event_before_the_horizon_is_answered_409_event_too_old(time_machine, producer):
    time_machine.move_to(START, tick=False)
    client = token_client(producer)

    def post(body):
        return client.post("/api/v1/events/", json.dumps(body), content_type="application/json")

    assert post(enrolment("enrol", at=START, phone_number="+14155550123")).status_code == 201
    time_machine.move_to(START + timedelta(hours=2), tick=False)
    assert post(event("old-1", at=START + timedelta(hours=1))).status_code == 201
    now = START + RETENTION + timedelta(days=3)
    time_machine.move_to(now, tick=False)
    services.retention_purge()

    response = post(event("old-2", at=now - RETENTION - timedelta(minutes=1)))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "event_too_old"
    assert not Event.objects.filter(event_id="old-2").exists()

    batch = client.post(
        "/api/v1/events/batch/",
        json.dumps(
            {"events": [event("old-3", at=START + timedelta(days=2)), event("new-1", at=now)]}
        ),
        content_type="application/json",
    )
    assert batch.status_code == 200, batch.content
    statuses = [item["status"] for item in batch.json()["results"]]
    assert statuses == ["rejected", "accepted"]
    assert batch.json()["results"][0]["error"]["code"] == "event_too_old"
    # Just inside the retention, older than every stored event: accepted.
    assert post(event("late-ok", at=now - RETENTION + timedelta(minutes=1))).status_code == 201


def test_the_purge_deletes_in_batches_and_a_spent_budget_leaves_the_rest_to_the_next_run(
    time_machine,
):
    events = history(time_machine, days=450)
    now = START + timedelta(days=450)
    time_machine.move_to(now, tick=False)
    old = sum(1 for e in events if e.occurred_at < now - RETENTION)

    first = services.retention_purge(budget_s=0, batch=10)
    # Out of budget after the first horizon and the first statement.
    assert not first.complete
    assert first.events_purged == 10
    second = services.retention_purge(batch=10)
    assert second.complete
    assert first.events_purged + second.events_purged == old
    # A run within a day of the last horizon moves none and purges nothing more.
    time_machine.move_to(now + HORIZON_STEP - timedelta(hours=1), tick=False)
    third = services.retention_purge(batch=10)
    assert (third.horizons_moved, third.events_purged) == (0, 0)


def test_the_purge_deletes_every_old_event_of_small_and_big_methods_and_nothing_newer(
    time_machine,
):
    """Small methods share a statement; a method with more old events than a batch is deleted
    a batch at a time, each starting where the last stopped, even through a run of events at
    one instant that straddles the batches."""
    time_machine.move_to(START, tick=False)
    instant = START + timedelta(days=10)
    sizes = {"m-small-1": 3, "m-small-2": 5, "m-big": 24, "m-small-3": 2}
    for method_id, size in sizes.items():
        enroll(method_id=method_id, at=START)
        for i in range(size):
            # The big method's events from the 4th on all occur at one instant.
            at = START + timedelta(hours=i + 1) if method_id != "m-big" or i < 3 else instant
            ingest(f"{method_id}-old-{i}", RESEND, at=at, method_id=method_id)
        ingest(f"{method_id}-new", RESEND, at=START + timedelta(days=300), method_id=method_id)
    time_machine.move_to(START + RETENTION + timedelta(days=20), tick=False)

    report = services.retention_purge(batch=10)

    assert report.complete
    # Every event before the cutoff went, enrolments included; the new ones stayed.
    assert report.events_purged == sum(sizes.values()) + len(sizes)
    left = sorted(Event.objects.values_list("event_id", flat=True))
    assert left == sorted(f"{method_id}-new" for method_id in sizes)


def test_audit_entries_older_than_the_audit_retention_are_purged(time_machine, settings):
    settings.TWOSV_AUDIT_RETENTION = timedelta(days=30)
    for day in range(40):
        time_machine.move_to(START + timedelta(days=day), tick=False)
        audit_record(actor=None, action=AuditAction.LOCK_LIFT, result="lifted", customer_ref="c")
    time_machine.move_to(START + timedelta(days=40, hours=-1), tick=False)

    report = services.retention_purge(batch=4)

    assert report.audit_purged == 10
    assert AuditEntry.objects.count() == 30
    assert AuditEntry.objects.order_by("created_at").first().created_at >= START + timedelta(
        days=10
    )


def test_numbers_of_methods_removed_before_the_horizon_are_erased(time_machine):
    time_machine.move_to(START, tick=False)
    gone = enroll(method_id="m-gone", at=START)
    kept = enroll(method_id="m-kept", at=START)
    recent = enroll(method_id="m-recent", at=START)
    ingest("rm-gone", EventType.METHOD_REMOVED, at=START + timedelta(days=1), method_id="m-gone")
    time_machine.move_to(START + timedelta(days=300), tick=False)
    ingest(
        "rm-recent", EventType.METHOD_REMOVED, at=START + timedelta(days=299), method_id="m-recent"
    )
    time_machine.move_to(START + RETENTION + timedelta(days=2), tick=False)

    report = services.retention_purge()

    assert report.numbers_erased == 1
    assert Method.objects.get(pk=gone.pk).phone_number == ""
    assert Method.objects.get(pk=kept.pk).phone_number == kept.phone_number != ""
    assert Method.objects.get(pk=recent.pk).phone_number == recent.phone_number != ""
    # The enrolment events that carried the number are purged with the rest.
    assert not Event.objects.filter(event_id="enrol-m-gone").exists()


def test_the_task_runs_the_purge_and_beat_runs_it_hourly(time_machine):
    history(time_machine, days=410)
    time_machine.move_to(START + timedelta(days=410), tick=False)

    done = tasks.retention_purge.delay().get()

    assert done["events_purged"] > 0
    assert done["complete"]
    entry = django_settings.CELERY_BEAT_SCHEDULE["retention-purge"]
    assert entry["task"] == "twosv.tasks.retention_purge"
    assert entry["schedule"] == 3600
