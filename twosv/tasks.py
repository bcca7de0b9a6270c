"""Celery tasks: thin wrappers that take ids, call a service, and retry transient ATS errors.

Every wait here stays far below the Redis visibility timeout (twosv/checks.py refuses to start
otherwise): a countdown longer than that makes Redis hand the message out again while the
first copy still waits, and the task runs again, in a loop. Every task runs under Celery's
soft and hard time limits (CELERY_TASK_SOFT_TIME_LIMIT, CELERY_TASK_TIME_LIMIT).
"""

from __future__ import annotations

import logging
import random

from celery import Task, shared_task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from twosv import services
from twosv.ats import AtsTransientError, backoff_seconds
from twosv.services.enqueue import DELIVERY_LOOKUP_RUN_TASK, DELIVERY_LOOKUP_SWEEP_TASK

logger = logging.getLogger(__name__)

# Exponential backoff with full jitter between tries: 2 s, 4 s, 8 s, ... at most 60 s, and at
# least what a Retry-After asks for (itself capped at 60 s). The cap also stays below
# TWOSV_LOOKUP_STALE_AFTER, so the sweeper never mistakes a lookup waiting for its retry for a
# lost one.
RETRY_BACKOFF_BASE = 2.0
RETRY_BACKOFF_MAX = 60.0


def retry_countdown(
    retries: int, retry_after: float | None = None, *, rng: random.Random | None = None
) -> float:
    """Return how long to wait before retry number `retries` (0 for the first retry)."""
    return backoff_seconds(
        retries, base=RETRY_BACKOFF_BASE, cap=RETRY_BACKOFF_MAX, retry_after=retry_after, rng=rng
    )


@shared_task(
    bind=True,
    name=DELIVERY_LOOKUP_RUN_TASK,
    # Safe to run twice: the lookup row says whether it is finished or another try owns it.
    acks_late=True,
    # The tries are bounded by the lookup row (TWOSV_LOOKUP_MAX_TRIES), which survives the
    # sweeper's fresh messages; Celery's own per-message counter would not.
    max_retries=None,
    ignore_result=True,
)
def delivery_lookup_run(self: Task, lookup_id: str) -> Retry | None:
    """Run one try of the delivery lookup; retry a transient ATS error after a backoff.

    The soft time limit interrupting the ATS call counts as a transient error (`lookup_run`
    records it for the try); anywhere else, the lookup row says where it stands and the sweeper
    takes it from there.
    """
    try:
        services.lookup_run(lookup_id=lookup_id)
    except SoftTimeLimitExceeded:
        logger.warning(
            "Delivery lookup %s: the task hit its soft time limit outside the ATS call; "
            "the sweeper will pick the lookup up.",
            lookup_id,
            extra={"lookup_id": lookup_id},
        )
        return None
    except AtsTransientError as exc:
        countdown = retry_countdown(self.request.retries, exc.retry_after)
        logger.info(
            "Delivery lookup %s: transient ATS error (%s); retrying in %.1f s.",
            lookup_id,
            exc,
            countdown,
            extra={"lookup_id": lookup_id, "retry_countdown": countdown},
        )
        if self.request.is_eager:
            # Eager mode (the embedded default) re-raises a raised Retry to the caller, as
            # it propagates errors, instead of running it: hand the Retry back and
            # `apply()` runs the next try inline (without the wait).
            return self.retry(exc=exc, countdown=countdown, throw=False)
        raise self.retry(exc=exc, countdown=countdown) from exc
    return None


@shared_task(name=DELIVERY_LOOKUP_SWEEP_TASK, ignore_result=True)
def delivery_lookup_sweep() -> int:
    """Publish again the lookups left pending (broker down, message lost) or stuck running."""
    return services.lookups_sweep()


@shared_task(name="twosv.tasks.retention_purge", ignore_result=True)
def retention_purge() -> dict[str, object]:
    """Purge what is older than the retention (SPEC §8), in batches, within a time budget."""
    report = services.retention_purge()
    logger.info(
        "Retention: %d horizons moved, %d events and %d audit entries purged, %d numbers "
        "erased in %.1f s%s.",
        report.horizons_moved,
        report.events_purged,
        report.audit_purged,
        report.numbers_erased,
        report.seconds,
        "" if report.complete else " (budget used up; the next run goes on)",
    )
    return dict(vars(report))


@shared_task(name="twosv.tasks.delivery_incidents_detect", ignore_result=True)
def delivery_incidents_detect() -> dict[str, list[str]]:
    """Open, update and resolve delivery incidents from the last window's attempts (SPEC §11)."""
    return dict(vars(services.incidents_detect()))


@shared_task(name="twosv.tasks.twilio_receipts_reconcile", ignore_result=True)
def twilio_receipts_reconcile() -> int:
    """Ask Twilio's Messages API about messages whose final status callback hasn't come."""
    from twosv.services.receipts import receipts_reconcile

    return receipts_reconcile()
