"""Set-up and processes: wrk, the bench database, gunicorn, the Celery worker, CPU and memory."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from bench.ats_stub import AtsStub
from bench.config import (
    ATS_TOKEN,
    BIN,
    BROKER_URL,
    CACHE_URL,
    DATABASE_URL,
    DB_NAME,
    PG,
    ROOT,
    log,
)

# ---------------------------------------------------------------------------------------------
# Set-up: wrk, database, environment
# ---------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk missing: apt-get install -y wrk")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    install = [*sudo, "apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=False)
        subprocess.run(install, check=True)
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is not installed and apt-get could not install it")
    return path


def pg_command(*args: str) -> list[str]:
    return [*args, "-h", PG["host"], "-p", PG["port"], "-U", PG["user"]]


def ensure_database(*, reseed: bool) -> None:
    ready = subprocess.run(pg_command("pg_isready", "-q"), check=False)
    if ready.returncode != 0:
        sys.exit(f"PostgreSQL is not answering at {PG['host']}:{PG['port']}")
    listing = subprocess.run(
        [*pg_command("psql", "-At", "-d", "postgres"), "-c", "SELECT datname FROM pg_database"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if reseed and DB_NAME in listing:
        log(f"--reseed: dropping database {DB_NAME}")
        subprocess.run([*pg_command("dropdb", "--force"), DB_NAME], check=True)
        listing.remove(DB_NAME)
    if DB_NAME not in listing:
        log(f"creating database {DB_NAME}")
        subprocess.run([*pg_command("createdb"), DB_NAME], check=True)


def bench_env(ats_url: str) -> dict[str, str]:
    """The environment of every bench process: production mode on the bench database."""
    rate = "1000000/s"  # per second, so the throttle's history stays short
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": DATABASE_URL,
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "ALLOWED_HOSTS": "127.0.0.1",
        # Plain HTTP on loopback; in production a TLS proxy sits in front.
        "SECURE_SSL_REDIRECT": "0",
        "CELERY_BROKER_URL": BROKER_URL,
        # As deployed: throttles and links in one Redis shared by every worker.
        "CACHE_URL": CACHE_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "LOG_LEVEL": "WARNING",
        "TWOSV_THROTTLE_AGENT_READ": rate,
        "TWOSV_THROTTLE_LOOKUP": rate,
        "TWOSV_THROTTLE_VERIFY_PHONE": rate,
        "TWOSV_THROTTLE_PRODUCER": rate,
        "TWOSV_ATS_BACKEND": "http",
        "ATS_BASE_URL": ats_url,
        "ATS_TOKEN": ATS_TOKEN,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Processes: gunicorn and the Celery worker
# ---------------------------------------------------------------------------------------------


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 (after the parenthesised command, which may hold spaces) is the parent pid.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.pid:
                found.append(int(entry.name))
        return sorted(found)

    def stop(self) -> None:
        """Stop the process and its children (gunicorn's workers, Celery's pool)."""
        children = self.children()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.log.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Services:
    """The processes a run starts, and the ATS stub: on leaving, a failure prints each
    process's log tail, and every process stops (last started first), then the ATS."""

    def __init__(self, ats: AtsStub, logdir: Path) -> None:
        self.ats = ats
        self.logdir = logdir
        self.procs: list[Proc] = []

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None and issubclass(exc_type, Exception):
                for proc in self.procs:
                    print(f"--- {proc.name} log tail ---\n{proc.tail()}", file=sys.stderr)
        finally:
            for proc in reversed(self.procs):
                proc.stop()
            self.ats.stop()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start `argv` with this process's environment plus `env`."""
        proc = Proc(name, argv, env={**os.environ, **(env or {})}, logdir=self.logdir)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """Stop one process before the others (the rest stop on leaving)."""
        proc.stop()
        self.procs.remove(proc)

    def start_gunicorn(
        self,
        port: int,
        args: argparse.Namespace,
        *,
        name: str = "gunicorn",
        env: dict[str, str] | None = None,
        nice: int = 0,
    ) -> Proc:
        """Serve the app on `port` (with `env` added to the environment, at CPU priority
        `nice`); return once it answers /healthz."""
        gunicorn = self.start(
            name,
            [
                *(["nice", "-n", str(nice)] if nice else []),
                str(BIN / "gunicorn"),
                "crm_plugin.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--worker-class",
                args.worker_class,
                "--threads",
                str(args.threads),
                "--keep-alive",
                "30",
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            env,
        )
        wait_http(port, "/healthz")
        log(f"{name} pid {gunicorn.pid} on 127.0.0.1:{port}, workers {gunicorn.children()}")
        return gunicorn

    def start_worker(self, run: str) -> Proc:
        """Purge the bench's queue, then start a Celery worker on it."""
        subprocess.run(
            [str(BIN / "celery"), "-A", "crm_plugin", "purge", "-f"],
            cwd=ROOT,
            env={**os.environ},
            check=False,
            capture_output=True,
        )
        return self.start(
            "celery",
            [
                str(BIN / "celery"),
                "-A",
                "crm_plugin",
                "worker",
                "--loglevel",
                "WARNING",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"bench-{run}@%h",
            ],
        )


def wait_http(port: int, path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered 200 on 127.0.0.1:{port}{path} within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# Memory and CPU
# ---------------------------------------------------------------------------------------------


def proc_memory(pid: int) -> dict[str, int]:
    """Return VmHWM (peak RSS) and VmRSS of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_backends() -> list[int]:
    """Return the pids of the bench database's client backends (the app's connections)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
            "backend_type = 'client backend' AND pid <> pg_backend_pid()",
            [DB_NAME],
        )
        pids = [row[0] for row in cursor.fetchall()]
    connection.close()
    return pids


class CpuMeter:
    """CPU seconds spent by the gunicorn workers and by PostgreSQL's backends for them.

    Unlike latency, CPU per request hardly depends on what else the machine runs, so it
    checks the latency ratios when the box is busy. PostgreSQL runs on the same machine.
    """

    def __init__(self, app_pids: Callable[[], list[int]]) -> None:
        self.app_pids = app_pids
        self.app = 0.0
        self.db = 0.0
        self._start: dict[str, dict[int, float]] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {
            "app": {pid: cpu_seconds(pid) for pid in self.app_pids()},
            "db": {pid: cpu_seconds(pid) for pid in database_backends()},
        }
        return self

    def __exit__(self, *exc_info: object) -> None:
        ends = {"app": self.app_pids(), "db": database_backends()}
        for kind, pids in ends.items():
            started = self._start[kind]
            used = sum(cpu_seconds(pid) - started.get(pid, 0.0) for pid in pids)
            setattr(self, kind, getattr(self, kind) + used)


def wait_drained(
    app_pids: Callable[[], list[int]], done: Callable[[], bool] | None = None, timeout: float = 300
) -> float:
    """Wait until the server has finished the requests wrk left running; return the seconds.

    Finished: `done()` says so, or for a whole second no database backend ran a statement or
    held a transaction and no gunicorn worker used any CPU (a busy machine can starve a
    worker between two statements for a moment, but not for a second).
    """
    from django.db import connection

    started = time.perf_counter()
    quiet_since = None
    last_cpu = -1.0
    while time.perf_counter() - started < timeout:
        if done is not None and done():
            break
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid() AND state IN ('active', 'idle in transaction')",
                [DB_NAME],
            )
            row = cursor.fetchone()
            busy = row[0] if row else 0
        cpu = sum(cpu_seconds(pid) for pid in app_pids())
        if busy or cpu != last_cpu:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since >= 1.0:
            break
        last_cpu = cpu
        time.sleep(0.1)
    connection.close()
    return time.perf_counter() - started
