"""The embedded default runs the periodic tasks itself: no lookup stays pending for ever there.

`make run` has no Celery beat and no worker (tasks run inline), so the dev server runs the beat
schedule in a thread of its own (twosv/scheduler.py).
"""

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from tests import factories
from twosv.management.commands.runserver import Command as RunserverCommand
from twosv.models import DeliveryLookup, LookupStatus
from twosv.scheduler import LONGEST_INTERVAL, EmbeddedBeat, entry_interval


def wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_pending_lookup_left_behind_completes_under_the_embedded_beat(settings):
    settings.TWOSV_ATS_BACKEND = "local"
    method = factories.MethodFactory(phone_number="+14155550100")
    factories.LocalDeliveryRecordFactory(
        to="+14155550100",
        created_at=timezone.now() - timedelta(minutes=5),
        updated_at=timezone.now() - timedelta(minutes=5),
    )
    # Left pending since before the stale-after: its first publish was lost.
    lookup = DeliveryLookup.objects.create(
        method=method,
        customer=method.customer,
        status=LookupStatus.PENDING,
        period_start=timezone.now() - settings.TWOSV_LOOKUP_PERIOD,
    )
    DeliveryLookup.objects.filter(pk=lookup.pk).update(
        created_at=timezone.now() - settings.TWOSV_LOOKUP_STALE_AFTER - timedelta(seconds=5)
    )
    beat = EmbeddedBeat(settings.CELERY_BEAT_SCHEDULE, tick=0.1)

    beat.start()
    try:
        finished = wait_until(
            lambda: DeliveryLookup.objects.get(pk=lookup.pk).status == LookupStatus.SUCCEEDED
        )
    finally:
        beat.stop()

    assert finished
    assert DeliveryLookup.objects.get(pk=lookup.pk).verdict == "delivered"


def test_every_beat_entry_runs_at_least_once_a_minute():
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert 1 <= entry_interval(entry) <= LONGEST_INTERVAL
    assert entry_interval({"task": "x", "schedule": 3600.0}) == LONGEST_INTERVAL
    assert entry_interval({"task": "x", "schedule": timedelta(seconds=30)}) == 30


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_failing_entry_does_not_stop_the_others(caplog):
    beat = EmbeddedBeat(
        {
            "broken": {"task": "no.such.task", "schedule": 60.0},
            "sweep": {"task": "twosv.tasks.delivery_lookup_sweep", "schedule": 60.0},
        },
        tick=0.1,
    )
    beat.start()
    try:
        assert wait_until(lambda: beat.runs["sweep"] >= 1 and beat.runs["broken"] >= 1)
    finally:
        beat.stop()

    assert "no.such.task" in caplog.text


def test_the_dev_server_starts_the_beat_in_eager_mode(monkeypatch, settings):
    settings.TWOSV_EMBEDDED_BEAT = True
    started = []
    monkeypatch.setattr(EmbeddedBeat, "start", lambda self: started.append(self))
    monkeypatch.setattr(
        "django.core.management.commands.runserver.Command.inner_run",
        lambda self, *args, **options: None,
    )

    RunserverCommand().inner_run(use_threading=True)

    assert len(started) == 1


def test_the_embedded_beat_is_on_exactly_when_tasks_run_eagerly():
    assert settings.TWOSV_EMBEDDED_BEAT == settings.CELERY_TASK_ALWAYS_EAGER
