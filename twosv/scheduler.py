"""The embedded default's beat: the periodic tasks, run in the dev server's own process.

In production Celery beat publishes CELERY_BEAT_SCHEDULE to the workers. The embedded default
(`make run`) has no beat and no worker: tasks run inline (eager). Without this, what beat does
would never happen there: a lookup left pending would stay pending for ever, no incident would
open, nothing would be purged. So `runserver` in eager mode starts this thread, which runs every
entry of the same schedule, inline, at its interval and at least once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

# SPEC §2: the embedded default runs the periodic tasks at least once a minute.
LONGEST_INTERVAL = 60.0


def entry_interval(entry: Mapping[str, Any]) -> float:
    """Return how often a beat entry runs here, in seconds: its schedule, at most a minute."""
    schedule = entry["schedule"]
    if isinstance(schedule, timedelta):
        seconds = schedule.total_seconds()
    elif isinstance(schedule, int | float):
        seconds = float(schedule)
    else:  # a celery schedule object
        seconds = schedule.run_every.total_seconds()
    return max(1.0, min(seconds, LONGEST_INTERVAL))


class EmbeddedBeat:
    """Run the beat schedule's tasks inline, each at its interval, in a daemon thread."""

    def __init__(self, schedule: Mapping[str, Mapping[str, Any]], *, tick: float = 1.0) -> None:
        self._entries = {
            name: (entry["task"], entry_interval(entry)) for name, entry in schedule.items()
        }
        self._tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = dict.fromkeys(self._entries, 0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="embedded-beat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        # Due at once: a newcomer's pending lookup is swept on the first tick, not a minute later.
        next_run = dict.fromkeys(self._entries, time.monotonic())
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for name, (task, interval) in self._entries.items():
                    if now >= next_run[name]:
                        self._run(name, task)
                        next_run[name] = time.monotonic() + interval
                self._stop.wait(self._tick)
        finally:
            connections.close_all()

    def _run(self, name: str, task_name: str) -> None:
        from crm_plugin.celery import app

        close_old_connections()
        try:
            app.tasks[task_name].apply(throw=True)
        except Exception:  # one failing entry must not stop the others
            logger.exception("Embedded beat: %s (%s) failed", name, task_name)
        finally:
            self.runs[name] += 1
            close_old_connections()


def embedded_beat_from_settings() -> EmbeddedBeat:
    from django.conf import settings

    return EmbeddedBeat(settings.CELERY_BEAT_SCHEDULE)
