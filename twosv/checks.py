"""Start-up checks: lookup timing settings that contradict each other stop the process.

A delivery lookup passes through four clocks: the ATS client's deadline per try, Celery's soft
and hard time limits, the sweeper that takes a try running too long for lost, and the broker's
visibility timeout that redelivers an unacknowledged message. Set out of order, a live try is
handed to a second worker, or a dead one waits an hour; neither shows until production.
README.md ("Delivery lookups and lost workers") explains each clock and the defaults.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import checks

TAG = "twosv_timing"


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def lookup_timing_errors() -> list[checks.Error]:
    """Return one error per pair of lookup timing settings in the wrong order."""
    from twosv.tasks import RETRY_BACKOFF_MAX

    # A try ends by its deadline plus at most one read that began just before it.
    longest_try = _seconds(settings.ATS_TRY_DEADLINE) + _seconds(settings.ATS_READ_TIMEOUT)
    soft = _seconds(settings.CELERY_TASK_SOFT_TIME_LIMIT)
    hard = _seconds(settings.CELERY_TASK_TIME_LIMIT)
    running_stale = _seconds(settings.TWOSV_LOOKUP_RUNNING_STALE_AFTER)
    pending_stale = _seconds(settings.TWOSV_LOOKUP_STALE_AFTER)
    sweep = _seconds(settings.TWOSV_LOOKUP_SWEEP_INTERVAL)
    visibility = _seconds(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600))

    # (shorter, longer, why the first must stay below the second)
    orders = [
        (
            ("ATS_TRY_DEADLINE + ATS_READ_TIMEOUT", longest_try),
            ("CELERY_TASK_SOFT_TIME_LIMIT", soft),
            "a try must end at its own deadline and record why, before Celery interrupts it",
        ),
        (
            ("CELERY_TASK_SOFT_TIME_LIMIT", soft),
            ("CELERY_TASK_TIME_LIMIT", hard),
            "the soft limit lets the try record a failure before the hard limit kills it",
        ),
        (
            ("CELERY_TASK_TIME_LIMIT", hard),
            ("TWOSV_LOOKUP_RUNNING_STALE_AFTER", running_stale),
            "the sweeper would hand a try that is still running to a second worker",
        ),
        (
            ("retry backoff cap", RETRY_BACKOFF_MAX),
            ("TWOSV_LOOKUP_STALE_AFTER", pending_stale),
            "the sweeper would take a lookup waiting for its retry for a lost one",
        ),
        (
            ("TWOSV_LOOKUP_SWEEP_INTERVAL", sweep),
            ("TWOSV_LOOKUP_STALE_AFTER", pending_stale),
            "a stuck lookup must be swept at least once per stale period",
        ),
        (
            ("TWOSV_LOOKUP_SWEEP_INTERVAL", sweep),
            ("TWOSV_LOOKUP_RUNNING_STALE_AFTER", running_stale),
            "a lost try must be swept at least once per running stale period",
        ),
        (
            ("TWOSV_LOOKUP_RUNNING_STALE_AFTER", running_stale),
            ("visibility_timeout", visibility),
            "the broker would redeliver the message before the sweeper recovers the lookup",
        ),
        (
            ("TWOSV_LOOKUP_STALE_AFTER", pending_stale),
            ("visibility_timeout", visibility),
            "the broker would redeliver the message before the sweeper recovers the lookup",
        ),
    ]
    positive = {
        "ATS_TRY_DEADLINE": _seconds(settings.ATS_TRY_DEADLINE),
        "CELERY_TASK_SOFT_TIME_LIMIT": soft,
        "TWOSV_LOOKUP_SWEEP_INTERVAL": sweep,
        "TWOSV_LOOKUP_STALE_AFTER": pending_stale,
    }
    errors = [
        checks.Error(f"{name} must be positive (is {value:g} s).", id="twosv.E001")
        for name, value in positive.items()
        if not value > 0
    ]
    for (short_name, short), (long_name, long), why in orders:
        if not short < long:
            errors.append(
                checks.Error(
                    f"{short_name} ({short:g} s) must be shorter than {long_name} ({long:g} s): "
                    f"otherwise {why}.",
                    hint="See 'Delivery lookups and lost workers' in README.md.",
                    id="twosv.E002",
                )
            )
    return errors


@checks.register(TAG, deploy=False)
def check_lookup_timing(**kwargs: Any) -> list[checks.Error]:
    return lookup_timing_errors()
