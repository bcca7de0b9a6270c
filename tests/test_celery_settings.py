"""Celery settings that keep delivery lookups from running twice, looping or hanging.

Redis hands a message out again when it is not acknowledged within the visibility timeout:
any countdown, ETA or retry wait longer than that makes the task run again, in a loop
(Celery's Redis caveats). These checks read the settings the deployment will run with.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings

from crm_plugin.celery import app
from twosv import services, tasks
from twosv.ats import HttpAtsClient, ats_client_from_settings

VISIBILITY_TIMEOUT = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]


def longest_retry_wait() -> float:
    """Return the longest wait any retry can ask for, whatever the attempt and Retry-After."""
    return max(
        tasks.retry_countdown(attempt, retry_after)
        for attempt in (0, 1, 5, 64, 10_000)
        for retry_after in (None, 0.0, 3600.0, 86400.0 * 365)
    )


def test_the_longest_retry_countdown_is_below_the_visibility_timeout() -> None:
    assert longest_retry_wait() <= tasks.RETRY_BACKOFF_MAX
    assert tasks.RETRY_BACKOFF_MAX < VISIBILITY_TIMEOUT


def test_no_task_asks_for_a_backoff_longer_than_the_visibility_timeout() -> None:
    app.loader.import_default_modules()
    for name, task in app.tasks.items():
        if getattr(task, "autoretry_for", ()):
            assert task.retry_backoff_max < VISIBILITY_TIMEOUT, name
        assert (getattr(task, "default_retry_delay", 0) or 0) < VISIBILITY_TIMEOUT, name


def test_the_beat_schedule_fires_well_within_the_visibility_timeout() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["delivery-lookup-sweep"]
    assert entry["task"] == "twosv.tasks.delivery_lookup_sweep"
    assert entry["task"] in app.tasks
    assert float(entry["schedule"]) < VISIBILITY_TIMEOUT
    # The sweep runs at least once per stale period, so a stuck lookup waits at most twice it.
    assert timedelta(seconds=float(entry["schedule"])) <= settings.TWOSV_LOOKUP_STALE_AFTER


def test_a_lookup_waiting_for_its_retry_is_not_taken_for_lost() -> None:
    assert timedelta(seconds=tasks.RETRY_BACKOFF_MAX) < settings.TWOSV_LOOKUP_STALE_AFTER


def test_a_try_can_finish_before_it_is_taken_for_lost_or_redelivered(
    settings: Any,
) -> None:
    settings.TWOSV_ATS_BACKEND = "http"
    settings.ATS_BASE_URL = "https://ats.internal"
    settings.ATS_TOKEN = "token"
    client = ats_client_from_settings()
    assert isinstance(client, HttpAtsClient)
    # Every page may use its whole connect and read timeouts (httpx counts them per phase).
    per_page = settings.ATS_CONNECT_TIMEOUT + settings.ATS_READ_TIMEOUT
    longest_try = timedelta(seconds=per_page * client._max_pages)

    assert longest_try < services.lookup_running_stale_after()
    assert services.lookup_running_stale_after() < timedelta(seconds=VISIBILITY_TIMEOUT)


def test_the_lookup_task_is_acknowledged_late_and_bounded_by_the_lookup() -> None:
    task = app.tasks["twosv.tasks.delivery_lookup_run"]
    assert task.acks_late is True
    # The lookup row bounds the tries (TWOSV_LOOKUP_MAX_TRIES), not the message.
    assert task.max_retries is None
    assert settings.TWOSV_LOOKUP_MAX_TRIES == 5
    # Redelivering a killed child's task can loop (Celery's warning); the sweeper recovers it.
    assert not app.conf.task_reject_on_worker_lost


@pytest.mark.parametrize("name", ["socket_connect_timeout", "socket_timeout"])
def test_publishing_cannot_hang_on_a_dead_broker(name: str) -> None:
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert options[name] <= 2
    assert options["max_retries"] == 0
    assert settings.CELERY_BROKER_CONNECTION_TIMEOUT <= 2
    assert settings.CELERY_TASK_PUBLISH_RETRY is False
