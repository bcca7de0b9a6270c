"""Publishing Celery tasks from services, by their registered names.

Services never import `twosv.tasks` (which imports services): a task is named here and
published through the Celery app's signature, which runs the registered task itself (eager
mode included) and falls back to `send_task` by name where the task isn't loaded.
"""

from __future__ import annotations

import logging
import uuid

from celery import current_app
from django.utils import timezone

from twosv.models import DeliveryLookup

# The names the tasks in twosv/tasks.py are registered under (beat's schedule uses them too).
DELIVERY_LOOKUP_RUN_TASK = "twosv.tasks.delivery_lookup_run"
DELIVERY_LOOKUP_SWEEP_TASK = "twosv.tasks.delivery_lookup_sweep"

lookup_log = logging.getLogger("twosv.lookups")


def lookup_enqueue(*, lookup_id: uuid.UUID | str) -> bool:
    """Publish the lookup's task; return whether the broker took it.

    Never raise and never wait on the broker longer than its connect timeouts: on failure log
    it and leave the lookup pending, the sweeper publishes it again. On success record
    `enqueued_at`.
    """
    enqueued_at = timezone.now()
    try:
        current_app.signature(DELIVERY_LOOKUP_RUN_TASK, args=(str(lookup_id),)).apply_async(
            retry=False
        )
    except Exception as exc:  # noqa: BLE001 - broker errors come in many types; none may escape
        lookup_log.warning(
            "Could not publish delivery lookup %s (%s: %s); the sweeper will publish it again.",
            lookup_id,
            type(exc).__name__,
            str(exc)[:200],
        )
        return False
    DeliveryLookup.objects.filter(pk=lookup_id).update(enqueued_at=enqueued_at)
    return True
