"""Celery and lookup timing settings that keep delivery lookups from running twice, looping,
hanging or waiting an hour for a lost worker.

Redis hands a message out again when it is not acknowledged within the visibility timeout:
any countdown, ETA or retry wait longer than that makes the task run again, in a loop
(Celery's Redis caveats). The clocks of a lookup must nest (twosv/checks.py, run at start-up):
a try's deadline < soft time limit < hard time limit < running stale-after < visibility
timeout. These tests read the settings the deployment will run with, and feed each
contradiction to the start-up check.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core import checks as django_checks

from crm_plugin.celery import app
from twosv import services, tasks
from twosv.ats import HttpAtsClient, ats_client_from_settings
from twosv.checks import TAG, lookup_timing_errors

VISIBILITY_TIMEOUT = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
# docs/SPEC.md §8: a lookup whose worker died reaches a final state within 3 minutes.
WORKER_LOSS_SLO = timedelta(minutes=3)


def seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def longest_retry_wait() -> float:
    """Return the longest wait any retry can ask for, whatever the attempt and Retry-After."""
    return max(
        tasks.retry_countdown(attempt, retry_after)
        for attempt in (0, 1, 5, 64, 10_000)
        for retry_after in (None, 0.0, 3600.0, 86400.0 * 365)
    )


def error_text(errors: list[django_checks.CheckMessage]) -> str:
    return "\n".join(str(error.msg) for error in errors)


def test_the_default_settings_pass_the_start_up_check() -> None:
    assert lookup_timing_errors() == []
    assert django_checks.run_checks(tags=[TAG]) == []


def test_the_longest_retry_countdown_is_below_the_visibility_timeout() -> None:
    assert longest_retry_wait() <= tasks.RETRY_BACKOFF_MAX
    assert tasks.RETRY_BACKOFF_MAX < VISIBILITY_TIMEOUT


def test_no_task_asks_for_a_backoff_longer_than_the_visibility_timeout() -> None:
    app.loader.import_default_modules()
    for name, task in app.tasks.items():
        if getattr(task, "autoretry_for", ()):
            assert task.retry_backoff_max < VISIBILITY_TIMEOUT, name
        assert (getattr(task, "default_retry_delay", 0) or 0) < VISIBILITY_TIMEOUT, name


def test_the_beat_schedule_sweeps_at_the_sweep_interval() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["delivery-lookup-sweep"]
    assert entry["task"] == "twosv.tasks.delivery_lookup_sweep"
    assert entry["task"] in app.tasks
    assert float(entry["schedule"]) == seconds(settings.TWOSV_LOOKUP_SWEEP_INTERVAL)
    assert float(entry["schedule"]) < VISIBILITY_TIMEOUT


def test_the_tasks_have_soft_and_hard_time_limits() -> None:
    soft, hard = app.conf.task_soft_time_limit, app.conf.task_time_limit
    assert (soft, hard) == (settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT)
    assert 0 < soft < hard
    # No task opts out of them.
    app.loader.import_default_modules()
    for name in ("twosv.tasks.delivery_lookup_run", "twosv.tasks.delivery_lookup_sweep"):
        task = app.tasks[name]
        assert task.soft_time_limit in (None, soft), name
        assert task.time_limit in (None, hard), name


def test_every_ats_try_has_the_deadline_of_the_settings(settings: Any) -> None:
    settings.TWOSV_ATS_BACKEND = "http"
    settings.ATS_BASE_URL = "https://ats.internal"
    settings.ATS_TOKEN = "token"
    client = ats_client_from_settings()
    assert isinstance(client, HttpAtsClient)
    assert client.deadline == seconds(settings.ATS_TRY_DEADLINE)

    settings.ATS_TRY_DEADLINE = timedelta(seconds=3)
    client = ats_client_from_settings()
    assert isinstance(client, HttpAtsClient)
    assert client.deadline == 3


def test_the_clocks_of_a_try_nest_with_the_defaults() -> None:
    # A try ends by its deadline plus at most one read begun just before it (twosv/ats.py),
    # whatever the number of pages.
    longest_try = seconds(settings.ATS_TRY_DEADLINE) + settings.ATS_READ_TIMEOUT
    soft = settings.CELERY_TASK_SOFT_TIME_LIMIT
    hard = settings.CELERY_TASK_TIME_LIMIT
    running_stale = seconds(services.lookup_running_stale_after())

    assert longest_try < soft < hard < running_stale < VISIBILITY_TIMEOUT
    assert services.lookup_running_stale_after() == settings.TWOSV_LOOKUP_RUNNING_STALE_AFTER


def test_a_lost_worker_is_recovered_within_3_minutes_with_the_defaults() -> None:
    """Worst case: the try (or its retry wait) began just before the worker died; the sweeper
    notices it one stale period later, at its next sweep, and the new try takes its longest."""
    noticed = max(settings.TWOSV_LOOKUP_RUNNING_STALE_AFTER, settings.TWOSV_LOOKUP_STALE_AFTER)
    swept = noticed + settings.TWOSV_LOOKUP_SWEEP_INTERVAL
    longest_try = settings.ATS_TRY_DEADLINE + timedelta(seconds=settings.ATS_READ_TIMEOUT)

    assert swept + longest_try <= WORKER_LOSS_SLO
    # Celery's own redelivery of the unacknowledged message would take the visibility timeout.
    assert timedelta(seconds=VISIBILITY_TIMEOUT) > 10 * WORKER_LOSS_SLO


# Each contradiction, set alone on top of the defaults, and the setting the error must name.
CONTRADICTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "deadline beyond the soft limit": (
        {"ATS_TRY_DEADLINE": timedelta(seconds=44)},
        "ATS_TRY_DEADLINE + ATS_READ_TIMEOUT (49 s) must be shorter than "
        "CELERY_TASK_SOFT_TIME_LIMIT (45 s)",
    ),
    "soft limit beyond the hard limit": (
        {"CELERY_TASK_SOFT_TIME_LIMIT": 60},
        "CELERY_TASK_SOFT_TIME_LIMIT (60 s) must be shorter than CELERY_TASK_TIME_LIMIT (60 s)",
    ),
    # The sweeper would hand a try that is still running to a second worker.
    "hard limit beyond the running stale-after": (
        {"CELERY_TASK_TIME_LIMIT": 120},
        "CELERY_TASK_TIME_LIMIT (120 s) must be shorter than "
        "TWOSV_LOOKUP_RUNNING_STALE_AFTER (90 s)",
    ),
    # A lookup waiting for its retry would be taken for lost.
    "stale-after within the retry backoff": (
        {"TWOSV_LOOKUP_STALE_AFTER": timedelta(seconds=50)},
        "retry backoff cap (60 s) must be shorter than TWOSV_LOOKUP_STALE_AFTER (50 s)",
    ),
    # A stuck lookup would wait more than twice its stale period.
    "sweep slower than the stale-after": (
        {"TWOSV_LOOKUP_SWEEP_INTERVAL": timedelta(minutes=3)},
        "TWOSV_LOOKUP_SWEEP_INTERVAL (180 s) must be shorter than TWOSV_LOOKUP_STALE_AFTER",
    ),
    "sweep slower than the running stale-after": (
        {"TWOSV_LOOKUP_SWEEP_INTERVAL": timedelta(seconds=100)},
        "TWOSV_LOOKUP_SWEEP_INTERVAL (100 s) must be shorter than "
        "TWOSV_LOOKUP_RUNNING_STALE_AFTER (90 s)",
    ),
    # Redis would redeliver a live try's message, or a waiting lookup's, in a loop.
    "running stale-after beyond the visibility timeout": (
        {"TWOSV_LOOKUP_RUNNING_STALE_AFTER": timedelta(hours=2)},
        "TWOSV_LOOKUP_RUNNING_STALE_AFTER (7200 s) must be shorter than visibility_timeout",
    ),
    "stale-after beyond the visibility timeout": (
        {"TWOSV_LOOKUP_STALE_AFTER": timedelta(hours=2)},
        "TWOSV_LOOKUP_STALE_AFTER (7200 s) must be shorter than visibility_timeout (3600 s)",
    ),
    "visibility timeout shorter than a try": (
        {"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 60}},
        "TWOSV_LOOKUP_RUNNING_STALE_AFTER (90 s) must be shorter than visibility_timeout (60 s)",
    ),
    "no sweep at all": (
        {"TWOSV_LOOKUP_SWEEP_INTERVAL": timedelta(0)},
        "TWOSV_LOOKUP_SWEEP_INTERVAL must be positive (is 0 s)",
    ),
    "no deadline": (
        {"ATS_TRY_DEADLINE": timedelta(0)},
        "ATS_TRY_DEADLINE must be positive (is 0 s)",
    ),
}


@pytest.mark.parametrize("case", sorted(CONTRADICTIONS))
def test_each_contradiction_stops_start_up_with_a_clear_error(settings: Any, case: str) -> None:
    overrides, expected = CONTRADICTIONS[case]
    for name, value in overrides.items():
        setattr(settings, name, value)

    errors = lookup_timing_errors()

    assert expected in error_text(errors)
    assert all(error.level == django_checks.ERROR for error in errors)
    # `manage.py check` reports the same errors (gunicorn and Celery get them at start-up:
    # TwosvConfig.ready(), tests/test_settings.py).
    assert error_text(django_checks.run_checks(tags=[TAG])) == error_text(errors)


def test_an_order_error_says_why_and_where_to_read_more(settings: Any) -> None:
    settings.CELERY_TASK_TIME_LIMIT = 120

    (error,) = lookup_timing_errors()

    assert "hand a try that is still running to a second worker" in str(error.msg)
    assert error.hint == "See 'Delivery lookups and lost workers' in README.md."
    assert error.id == "twosv.E002"


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
