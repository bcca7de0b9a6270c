"""A real Celery worker in a subprocess (its own process group), with its log captured.

Unlike `celery.contrib.testing.worker` (a thread of the test process), this one can be
SIGKILLed mid-task, like a worker whose pod was OOM-killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Self

from celery import Celery

from tests.infra.ports import group_is_gone, kill, terminate

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")
READY = re.compile(r"@\S+ ready\.")


def django_database_url(settings_dict: Mapping[str, Any]) -> str:
    """Return a postgres:// URL for a Django settings_dict (e.g. the pytest-django test DB).

    Read `django.db.connection.settings_dict` inside a test that uses `db`: NAME is then
    `test_<name>`.
    """
    if "postgresql" not in settings_dict["ENGINE"]:
        raise ValueError(f"not a PostgreSQL database: {settings_dict['ENGINE']}")
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def send_task(
    broker_url: str,
    name: str,
    *,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    queue: str = "celery",
) -> str:
    """Publish task `name` to `queue` on `broker_url` with a private app; return its id.

    The project's app keeps its broker pools and eager setting untouched.
    """
    app = Celery("infra-publisher", broker=broker_url, set_as_current=False)
    try:
        result = app.send_task(name, args=list(args), kwargs=dict(kwargs or {}), queue=queue)
        return str(result.id)
    finally:
        app.close()


def purge_queue(broker_url: str, queue: str) -> int:
    """Drop the messages waiting in `queue`; return how many."""
    app = Celery("infra-purger", broker=broker_url, set_as_current=False)
    try:
        with app.connection_for_write() as conn:
            return int(conn.default_channel.queue_purge(queue) or 0)
    finally:
        app.close()


class CeleryWorkerProcess:
    """`celery -A crm_plugin worker --pool=solo --concurrency=1 -Q <queues>` as a subprocess.

    `env` is added to this process's environment: pass DATABASE_URL (see
    `django_database_url`) so that the worker writes to the test database. DEBUG defaults
    to 1 (with DATABASE_URL set and DEBUG off, settings demand SECRET_KEY etc.).
    """

    def __init__(
        self,
        *,
        broker_url: str,
        queues: Iterable[str] = ("celery",),
        env: Mapping[str, str] | None = None,
        app: str = "crm_plugin",
        pool: str = "solo",
        concurrency: int = 1,
        loglevel: str = "INFO",
        extra_args: Iterable[str] = (),
        nodename: str | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.queues = list(queues)
        self.nodename = nodename or f"infra-{uuid.uuid4().hex[:8]}@%h"
        self.command = [
            str(CELERY), "-A", app, "worker",
            f"--pool={pool}", f"--concurrency={concurrency}",
            "-Q", ",".join(self.queues),
            f"--loglevel={loglevel}",
            "-n", self.nodename,
            "--without-heartbeat", "--without-gossip", "--without-mingle",
            *extra_args,
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "DEBUG": "1",
            "DJANGO_SETTINGS_MODULE": "crm_plugin.settings",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
            "CELERY_BROKER_URL": broker_url,
        }
        # The test process may publish elsewhere meanwhile; the worker reads one broker.
        self.env.pop("CELERY_BROKER_WRITE_URL", None)
        self.env.pop("CELERY_BROKER_READ_URL", None)
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._new_line = threading.Condition(self._lines_lock)
        self._reader: threading.Thread | None = None

    # Lifecycle

    def start(self, *, timeout: float = 30.0) -> Self:
        """Start the worker and wait for its "ready." line."""
        if self._process is not None:
            raise RuntimeError("a CeleryWorkerProcess starts once; make a new one")
        self._process = subprocess.Popen(
            self.command,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._process.stdout,), name="celery-log", daemon=True
        )
        self._reader.start()
        try:
            self.wait_for_log(READY, timeout=timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._new_line:
                self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._new_line.notify_all()
        stream.close()
        with self._new_line:
            self._new_line.notify_all()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the worker is not started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_gone(self) -> bool:
        """Return whether the worker and every process of its group are gone (and reaped)."""
        return not self.is_alive() and (self._process is None or group_is_gone(self.pid))

    def kill(self) -> None:
        """SIGKILL the whole process group at once: no warm shutdown, no ack, no cleanup."""
        if self._process is not None:
            kill(self._process)
            self._join_reader()

    def stop(self, *, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM: finish the current task), SIGKILL after `timeout`."""
        if self._process is not None:
            terminate(self._process, timeout=timeout)
            self._join_reader()

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` to the worker's main process only (e.g. SIGQUIT = cold shutdown)."""
        os.kill(self.pid, signum)

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    # Log

    @property
    def log_lines(self) -> list[str]:
        """Return the worker's output so far (stdout and stderr), one line each."""
        with self._lines_lock:
            return list(self._lines)

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def wait_for_log(
        self, pattern: str | re.Pattern[str], *, timeout: float = 30.0, since: int = 0
    ) -> str:
        """Wait for a log line matching `pattern` (regex, searched); return the line.

        Lines before index `since` are ignored: pass `len(worker.log_lines)` to wait for a
        new one.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = since
        with self._new_line:
            while True:
                for line in self._lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not self.is_alive() and (self._reader is None or not self._reader.is_alive()):
                    raise RuntimeError(
                        f"worker exited ({self.returncode}) without logging {regex.pattern!r}:\n"
                        + "\n".join(self._lines[-40:])
                    )
                self._new_line.wait(timeout=min(remaining, 0.5))
        raise TimeoutError(
            f"no log line matching {regex.pattern!r} after {timeout:.1f} s:\n"
            + "\n".join(self._lines[-40:])
        )

    def wait_for_task(self, task_id: str, *, timeout: float = 30.0) -> str:
        """Wait until the worker logs task `task_id` succeeded (or failed); return the line."""
        return self.wait_for_log(
            re.compile(rf"\[{re.escape(task_id)}\] (succeeded|raised|retry)"), timeout=timeout
        )
