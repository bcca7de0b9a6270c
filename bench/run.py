"""`make bench`: measure the state endpoint, ingestion and delivery lookups against their floors.

On PostgreSQL (database ``twosv_bench``, created and migrated when missing, seeded once), serve the
app with gunicorn, drive it with wrk from separate processes, and measure in one run:

  (a) GET  customers/<typical>/twosv/      a typical customer's state (~90 events)
  (b) GET  customers/bench-big/twosv/      the customer with 100,000 events on one method
  (c) GET  bench/floor/                    same auth, permission, throttle, middleware; constant
  (s) GET  bench/state-without-audit/<typical>/  diagnostic: (a) minus its audit row
  (d) POST events/                         one event per request, unique ids
  (e) POST events/batch/                   500 events per request, in events/s
  (f) psycopg2 execute_values of the same event rows, 500 a transaction: the database's own limit
  (g) POST customers/<id>/twosv/delivery-lookups/ (force) -> GET until finished, real Celery worker
      and a local ATS over HTTP; the ATS's own time reported beside it

Prints a table and writes bench/results.json (every figure, the ratios and the goals).
Usage: .venv/bin/python bench/run.py [--reseed] [--duration 12] [--py-spy] [--only abc] ...
(--help lists every option.)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ats_stub import AtsStub  # noqa: E402

BIN = Path(sys.executable).parent
DB_NAME = "twosv_bench"
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
DATABASE_URL = f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{DB_NAME}"
# A Redis database of its own, so purging the bench's queue touches nobody else's.
BROKER_URL = "redis://127.0.0.1:6379/14"
ATS_TOKEN = "bench-ats-token"
LOOKUP_CUSTOMER = "bench-lookup"
LOOKUP_PHONE = "+14152371234"
RESULTS = ROOT / "bench" / "results.json"
BATCH = 500
GOALS = {
    "state_vs_floor_p50": 1.5,
    "big_vs_typical_p50": 1.1,
    "batch_vs_raw_insert": 0.25,
    "lookup_p50_overhead_ms": 100.0,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Set-up: wrk, services, database
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
# Per-run data: fresh methods to ingest into, the lookup customer; cleaned up afterwards
# ---------------------------------------------------------------------------------------------


def cleanup_run_data() -> dict[str, int]:
    """Delete what earlier runs left: run customers and their rows, bench audit rows, lookups."""
    from django.db import connection, transaction

    deleted: dict[str, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        statements = {
            "events": "DELETE FROM twosv_event WHERE customer_id IN "
            "(SELECT id FROM twosv_customer WHERE customer_id LIKE 'bench-run-%%')",
            "attempts": "DELETE FROM twosv_deliveryattempt WHERE lookup_id IN "
            "(SELECT l.id FROM twosv_deliverylookup l JOIN twosv_customer c "
            "ON c.id = l.customer_id WHERE c.customer_id LIKE 'bench-%%')",
            "lookups": "DELETE FROM twosv_deliverylookup WHERE customer_id IN "
            "(SELECT id FROM twosv_customer WHERE customer_id LIKE 'bench-%%')",
            "methods": "DELETE FROM twosv_method WHERE customer_id IN "
            "(SELECT id FROM twosv_customer WHERE customer_id LIKE 'bench-run-%%')",
            "customers": "DELETE FROM twosv_customer WHERE customer_id LIKE 'bench-run-%%'",
            "audit": "DELETE FROM twosv_auditentry WHERE actor_username LIKE 'bench-%%'",
        }
        for name, sql in statements.items():
            cursor.execute(sql)
            deleted[name] = cursor.rowcount
    return deleted


def enrol(customer_id: str, method_id: str, phone: str, occurred_at: datetime) -> None:
    from twosv.services import event_ingest

    event_ingest(
        event_id=f"{method_id}-enrolled",
        event_type="method_enrolled",
        customer_id=customer_id,
        occurred_at=occurred_at,
        data={"method_id": method_id, "kind": "sms", "role": "primary", "phone_number": phone},
    )


def prepare_run(run: str, threads: int, started: datetime) -> None:
    """Enrol one fresh method per load thread for (d), (e) and (f): each thread's events then
    arrive in order on its own method, as a producer's would."""
    for phase in ("d", "e", "f"):
        for tid in range(threads):
            customer = f"bench-run-{run}-{phase}{tid}"
            enrol(customer, f"{customer}-m", "+14152370000", started - timedelta(hours=3))
    from twosv.models import Method

    if not Method.objects.filter(method_id=f"{LOOKUP_CUSTOMER}-primary").exists():
        method_id = f"{LOOKUP_CUSTOMER}-primary"
        enrol(LOOKUP_CUSTOMER, method_id, LOOKUP_PHONE, started - timedelta(days=1))


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
# wrk scripts
# ---------------------------------------------------------------------------------------------

LUA_COMMON = r"""
wrk.headers["Authorization"] = "Token @TOKEN@"
wrk.headers["Content-Type"] = "application/json"
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"errors_connect\":%d," ..
    "\"errors_read\":%d,\"errors_write\":%d,\"errors_status\":%d,\"errors_timeout\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f,\"max_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

# Events in order on the thread's own method, one millisecond apart from @BASE@ (epoch seconds):
# a sign-in's code, a resend, the verification.
LUA_EVENTS = r"""
local counter = 0
local kinds = {"code_sent", "code_resend_requested", "code_verified"}
local function event()
  counter = counter + 1
  local customer = "bench-run-@RUN@-@PHASE@" .. tid
  local when = os.date("!%Y-%m-%dT%H:%M:%S", @BASE@ + math.floor(counter / 1000)) ..
    string.format(".%03dZ", counter % 1000)
  return string.format(
    "{\"event_id\":\"%s-@TAG@-%d-%d\",\"type\":\"%s\",\"customer_id\":\"%s\"," ..
    "\"occurred_at\":\"%s\",\"data\":{\"method_id\":\"%s-m\"}}",
    customer, tid, counter, kinds[(counter - 1) % 3 + 1], customer, when, customer)
end
"""

LUA_SINGLE = r"""
request = function()
  return wrk.format("POST", "/api/v1/events/", nil, event())
end
"""

LUA_BATCH = r"""
request = function()
  local parts = {}
  for i = 1, @BATCH@ do parts[i] = event() end
  return wrk.format("POST", "/api/v1/events/batch/", nil,
    "{\"events\":[" .. table.concat(parts, ",") .. "]}")
end
"""


def lua_script(directory: Path, name: str, body: str, **values: Any) -> Path:
    text = LUA_COMMON + body
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    path = directory / f"{name}.lua"
    path.write_text(text)
    return path


def run_wrk(
    wrk: str, port: int, path: str, script: Path, *, seconds: float, connections: int
) -> dict[str, Any]:
    argv = [
        wrk,
        f"-t{connections}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCHJSON "))
    stats = json.loads(line.removeprefix("BENCHJSON "))
    seconds_run = stats["duration_us"] / 1e6
    errors = sum(v for k, v in stats.items() if k.startswith("errors_"))
    return {
        "requests": stats["requests"],
        "seconds": round(seconds_run, 2),
        "rps": round(stats["requests"] / seconds_run, 1),
        "p50_ms": round(stats["p50_us"] / 1000, 2),
        "p90_ms": round(stats["p90_us"] / 1000, 2),
        "p99_ms": round(stats["p99_us"] / 1000, 2),
        "mean_ms": round(stats["mean_us"] / 1000, 2),
        "max_ms": round(stats["max_us"] / 1000, 2),
        "errors": errors,
        "non_2xx": stats["errors_status"],
        "load_after": load_average(),
    }


# ---------------------------------------------------------------------------------------------
# (f) raw psycopg2 insert
# ---------------------------------------------------------------------------------------------


def _raw_insert_worker(
    args: tuple[str, int, int, str, float, str, Any],
) -> tuple[int, float, float, float]:
    import psycopg2
    from psycopg2.extras import execute_values

    run, tid, customer_pk, method_pk, seconds, mode, barrier = args
    conn = psycopg2.connect(dbname=DB_NAME, **PG)
    kinds = ("code_sent", "code_resend_requested", "code_verified")
    base = datetime.now(UTC) - timedelta(hours=1)
    customer = f"bench-run-{run}-f{tid}"
    data = json.dumps({"method_id": f"{customer}-m"})
    counter = 0
    inserted = 0
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    conn.commit()
    barrier.wait()
    started = time.perf_counter()
    cpu_started, db_cpu_started = time.process_time(), cpu_seconds(backend)
    with conn.cursor() as cursor:
        while time.perf_counter() - started < seconds:
            rows = []
            for _ in range(BATCH):
                counter += 1
                moment = base + timedelta(milliseconds=counter)
                rows.append(
                    (
                        f"{customer}-{mode}-{counter}",
                        kinds[(counter - 1) % 3],
                        customer_pk,
                        method_pk,
                        moment,
                        moment,
                        data,
                        "recorded",
                    )
                )
            sql = (
                "INSERT INTO twosv_event (event_id, type, customer_id, method_id, occurred_at, "
                "received_at, data, outcome) VALUES %s"
            )
            if mode == "copy":
                buffer = "".join(
                    "\t".join(str(v) if not isinstance(v, datetime) else v.isoformat() for v in r)
                    + "\n"
                    for r in rows
                )
                import io

                cursor.copy_expert(
                    "COPY twosv_event (event_id, type, customer_id, method_id, occurred_at, "
                    "received_at, data, outcome) FROM STDIN",
                    io.StringIO(buffer),
                )
            else:
                execute_values(cursor, sql, rows, page_size=BATCH)
            conn.commit()
            inserted += len(rows)
    elapsed = time.perf_counter() - started
    cpu, db_cpu = time.process_time() - cpu_started, cpu_seconds(backend) - db_cpu_started
    conn.close()
    return inserted, elapsed, cpu, db_cpu


def raw_insert(run: str, threads: int, seconds: float, mode: str, tag: str = "") -> dict[str, Any]:
    """Insert event rows straight into twosv_event, 500 a transaction, one process a thread."""
    from django.db import connections

    from twosv.models import Method

    methods = {
        m.method_id: m
        for m in Method.objects.filter(customer__customer_id__startswith=f"bench-run-{run}-f")
    }
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(threads)
        jobs = []
        for tid in range(threads):
            method = methods[f"bench-run-{run}-f{tid}-m"]
            jobs.append((run, tid, method.customer_id, method.pk, seconds, mode + tag, barrier))
        with ctx.Pool(threads) as pool:
            results = pool.map(_raw_insert_worker, jobs)
    total = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    client_cpu, db_cpu = sum(r[2] for r in results), sum(r[3] for r in results)
    return {
        "events": total,
        "seconds": round(elapsed, 2),
        "events_per_s": round(total / elapsed, 1),
        "mode": mode,
        "client_cpu_ms_per_event": round(client_cpu / total * 1000, 4),
        "db_cpu_ms_per_event": round(db_cpu / total * 1000, 4),
        "cpu_ms_per_event": round((client_cpu + db_cpu) / total * 1000, 4),
    }


# ---------------------------------------------------------------------------------------------
# (g) delivery lookups
# ---------------------------------------------------------------------------------------------


def lookups_available() -> str | None:
    """Return why figure (g) can't run, or None when the lookup API and task exist."""
    import redis

    try:
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis is not answering at {BROKER_URL} ({type(exc).__name__})"
    tasks = ROOT / "twosv" / "tasks.py"
    if not tasks.exists() or "delivery_lookup_run" not in tasks.read_text():
        return "twosv/tasks.py has no delivery_lookup_run yet"
    from django.urls import Resolver404, resolve

    try:
        resolve(f"/api/v1/customers/{LOOKUP_CUSTOMER}/twosv/delivery-lookups/")
        resolve(f"/api/v1/twosv/delivery-lookups/{uuid.uuid4()}/")
    except Resolver404:
        return "the delivery-lookup endpoints are not routed yet"
    return None


def _json_request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Token {AGENT_TOKEN}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    return response.status, json.loads(payload) if payload else None


def measure_lookups(port: int, ats: AtsStub, count: int) -> dict[str, Any]:
    """Run `count` forced lookups one after another; time POST -> GET that shows it finished."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    post_path = f"/api/v1/customers/{LOOKUP_CUSTOMER}/twosv/delivery-lookups/"
    totals, ats_times, server_times, statuses, verdicts, polls = [], [], [], {}, {}, []
    post_times: list[float] = []
    queue_waits: list[float] = []
    run_times: list[float] = []
    body = {"method_id": f"{LOOKUP_CUSTOMER}-primary", "force": True}
    for _ in range(3):
        # Warm-up, not timed: the worker may still be starting, and each process's first
        # lookup pays for imports and connections.
        status, created = _json_request(conn, "POST", post_path, body)
        deadline = time.perf_counter() + 120
        while created and time.perf_counter() < deadline:
            _, lookup = _json_request(
                conn, "GET", f"/api/v1/twosv/delivery-lookups/{created['id']}/"
            )
            if lookup.get("status") in ("succeeded", "failed"):
                break
            time.sleep(0.01)
    ats_base = ats.request_count()
    for i in range(count):
        before = ats.request_count()
        started = time.perf_counter()
        status, created = _json_request(conn, "POST", post_path, body)
        post_times.append(time.perf_counter() - started)
        if status not in (200, 201, 202) or not created or "id" not in created:
            raise RuntimeError(f"lookup request {i} answered {status}: {created}")
        path = f"/api/v1/twosv/delivery-lookups/{created['id']}/"
        n_polls = 0
        while True:
            status, lookup = _json_request(conn, "GET", path)
            n_polls += 1
            if status != 200:
                raise RuntimeError(f"lookup {created['id']} answered {status}: {lookup}")
            if lookup.get("status") in ("succeeded", "failed"):
                break
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"lookup {created['id']} not finished after 60 s: {lookup}")
            time.sleep(0.002)
        totals.append(time.perf_counter() - started)
        polls.append(n_polls)
        ats_times.append(sum(ats.timings_since(before)))
        statuses[lookup["status"]] = statuses.get(lookup["status"], 0) + 1
        verdict = lookup.get("verdict") or "-"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        stamps = {
            key: datetime.fromisoformat(lookup[key].replace("Z", "+00:00"))
            for key in ("created_at", "started_at", "finished_at")
            if lookup.get(key)
        }
        if len(stamps) == 3:
            server_times.append((stamps["finished_at"] - stamps["created_at"]).total_seconds())
            queue_waits.append((stamps["started_at"] - stamps["created_at"]).total_seconds())
            run_times.append((stamps["finished_at"] - stamps["started_at"]).total_seconds())
    conn.close()

    def ms(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "lookups": count,
        "p50_ms": round(statistics.median(totals) * 1000, 2),
        "p99_ms": ms(totals, 0.99),
        "mean_ms": round(statistics.fmean(totals) * 1000, 2),
        "ats_p50_ms": round(statistics.median(ats_times) * 1000, 3),
        "ats_p99_ms": ms(ats_times, 0.99),
        "ats_requests": ats.request_count() - ats_base,
        "post_p50_ms": ms(post_times, 0.5),
        "server_created_to_finished_p50_ms": ms(server_times, 0.5),
        "server_created_to_started_p50_ms": ms(queue_waits, 0.5),
        "server_started_to_finished_p50_ms": ms(run_times, 0.5),
        "polls_p50": statistics.median(polls),
        "statuses": statuses,
        "verdicts": verdicts,
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

AGENT_TOKEN = ""  # set from bench.seed once Django is up


def add_cpu(result: dict[str, Any], meter: CpuMeter, count: int, unit: str = "request") -> None:
    """Add the app's and the database's CPU milliseconds per request (or event)."""
    if not count:
        return
    result[f"app_cpu_ms_per_{unit}"] = round(meter.app / count * 1000, 3)
    result[f"db_cpu_ms_per_{unit}"] = round(meter.db / count * 1000, 3)
    result[f"cpu_ms_per_{unit}"] = round((meter.app + meter.db) / count * 1000, 3)


def profile_workers(
    wrk: str,
    port: int,
    path: str,
    script: Path,
    gunicorn: Proc,
    key: str,
    *,
    seconds: float,
    threads: int,
) -> dict[str, Any]:
    """Sample every gunicorn worker with py-spy while wrk drives `path`; summarise the stacks.

    py-spy leaves out idle threads, but counts a thread blocked in a database call as busy:
    the shares are of the time the workers spend serving requests, PostgreSQL round trips
    included (CursorWrapper._execute).
    """
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    out_dir = ROOT / "var" / "bench-profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.txt"
    record = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(gunicorn.pid),
            "--subprocesses",
            "--nonblocking",
            "--function",
            "--rate",
            "200",
            "--format",
            "raw",
            "--duration",
            str(int(seconds) + 1),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    run_wrk(wrk, port, path, script, seconds=seconds, connections=threads)
    record.wait(timeout=seconds + 30)
    return summarise_stacks(out)


def summarise_stacks(path: Path, top: int = 15) -> dict[str, Any]:
    """Return the hottest functions of a py-spy raw (collapsed) profile: inclusive shares of
    the project's own functions, and the frames the samples were taken in (self time)."""
    if not path.exists():
        return {"skipped": "py-spy wrote no profile"}
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return {"skipped": "no samples"}

    def share(table: dict[str, int], keep: Callable[[str], bool]) -> list[list[Any]]:
        ranked = sorted(((n, f) for f, n in table.items() if keep(f)), reverse=True)[:top]
        return [[round(100 * n / total, 1), frame] for n, frame in ranked]

    def project(frame: str) -> bool:
        return "/work/" not in frame or "/.venv/" not in frame

    return {
        "samples": total,
        "file": str(path.relative_to(ROOT)),
        "inclusive_pct_project": share(
            inclusive, lambda f: ("twosv/" in f or "crm_plugin/" in f) and project(f)
        ),
        "self_pct": share(own, lambda f: True),
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the rounds' requests; take the median of their percentiles."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    merged: dict[str, Any] = {"requests": requests, "seconds": round(seconds, 2)}
    merged["rps"] = round(requests / seconds, 1)
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        merged[key] = round(statistics.median(r[key] for r in rounds), 2)
    merged["max_ms"] = max(r["max_ms"] for r in rounds)
    merged["errors"] = sum(r["errors"] for r in rounds)
    merged["non_2xx"] = sum(r["non_2xx"] for r in rounds)
    merged["rounds"] = [{k: r[k] for k in ("requests", "rps", "p50_ms", "p99_ms")} for r in rounds]
    return merged


def merge_ingest_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the rounds' events and seconds; CPU per event weighted by events; the median of
    wrk's percentiles where there are any. Each round is kept under "rounds"."""
    merged: dict[str, Any] = {}
    events_key = "accepted_events" if "accepted_events" in rounds[0] else "events"
    events = sum(r[events_key] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    # Until the last event of a round was stored (wrk's seconds plus the drain), where known.
    elapsed = sum(r.get("elapsed_s", r["seconds"]) for r in rounds)
    merged[events_key] = events
    merged["seconds"] = round(seconds, 2)
    merged["events_per_s"] = round(events / elapsed, 1)
    if "requests" in rounds[0]:
        merged["requests"] = sum(r["requests"] for r in rounds)
        merged["rps"] = round(merged["requests"] / seconds, 1)
        merged["errors"] = sum(r["errors"] for r in rounds)
        merged["non_2xx"] = sum(r["non_2xx"] for r in rounds)
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            values = [r[key] for r in rounds if r.get(key) is not None]
            merged[key] = round(statistics.median(values), 2) if values else None
    for key in rounds[0]:
        if key.endswith("_ms_per_event") and events:
            merged[key] = round(sum(r[key] * r[events_key] for r in rounds) / events, 4)
    merged["rounds"] = rounds
    return merged


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def paired_ratio(x: dict[str, Any], y: dict[str, Any], key: str = "p50_ms") -> float | None:
    """Return the median over rounds of x's figure over y's in the same round.

    Rounds interleave the GET figures a few seconds apart, so a slow spell of the machine (a
    shared VM here) hits both sides of a round's ratio alike, where it would skew one pooled
    percentile: the goals are judged on these paired ratios.
    """
    pairs = [
        rx[key] / ry[key]
        for rx, ry in zip(x.get("rounds", []), y.get("rounds", []), strict=False)
        if rx.get(key) and ry.get(key)
    ]
    return round(statistics.median(pairs), 3) if pairs else None


def cpu_steal_jiffies() -> int:
    """Return the CPU time the hypervisor gave to others since boot (/proc/stat "steal")."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


def main() -> int:
    global AGENT_TOKEN
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reseed", action="store_true", help="drop the bench database, reseed")
    parser.add_argument("--duration", type=float, default=12, help="seconds per wrk figure")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of c a b s")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per figure")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (= threads)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument(
        "--keepalive", action="store_true", help="GET figures: keep connections open (noisier)"
    )
    parser.add_argument("--lookups", type=int, default=50, help="sequential lookups for (g)")
    parser.add_argument(
        "--ingest-rounds", type=int, default=3, help="interleaved rounds of (e) and (f)"
    )
    parser.add_argument("--raw-seconds", type=float, default=5, help="seconds of raw insert (f)")
    parser.add_argument("--ats-delay-ms", type=float, default=0, help="simulated ATS latency")
    parser.add_argument("--only", default="abcdefgs", help="figures to run, e.g. --only abc")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="after the figures, profile the workers with py-spy under (c), (a) and (e) load; "
        "collapsed stacks go to var/bench-profiles/, a summary to results.json",
    )
    parser.add_argument("--keep-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overall = time.perf_counter()

    load_at_start = load_average()
    steal_at_start = cpu_steal_jiffies()
    if float(load_at_start.split()[0]) > (os.cpu_count() or 1):
        log(
            f"warning: load average {load_at_start} on {os.cpu_count()} CPUs: other work "
            "competes with the bench; latencies will be inflated (CPU ms per request less so)"
        )
    wrk = ensure_wrk()
    ensure_database(reseed=args.reseed)
    ats = AtsStub(token=ATS_TOKEN, delay=args.ats_delay_ms / 1000).start()
    env = bench_env(ats.url)
    os.environ.update(env)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from bench import seed

    AGENT_TOKEN = seed.AGENT_TOKEN
    log(f"migrating {DB_NAME}")
    call_command("migrate", verbosity=0, interactive=False)
    seed_info = seed.seeded()
    if seed_info is None:
        seed_info = seed.seed(log=log)
    else:
        log(f"already seeded at {seed_info['seeded_at']} (--reseed to redo)")
    seed.ensure_users()
    cleanup_run_data()

    run = uuid.uuid4().hex[:8]
    started = datetime.now(UTC)
    threads = args.connections
    prepare_run(run, threads, started)
    # What the ATS knows about the lookup customer's number: a filtered send, then a delivery.
    history = ((300, "failed", 30007), (120, "sent", None), (30, "delivered", None))
    for minutes_ago, status, error_code in history:
        ats.add_message(
            to=LOOKUP_PHONE,
            status=status,
            error_code=error_code,
            created_at=started - timedelta(minutes=minutes_ago),
        )
    lookup_skip = lookups_available() if "g" in args.only else "not selected"
    connections.close_all()

    logdir = Path(tempfile.mkdtemp(prefix="twosv-bench-"))
    port = free_port()
    procs: list[Proc] = []
    results: dict[str, Any] = {}
    try:
        gunicorn = Proc(
            "gunicorn",
            [
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
            env={**os.environ},
            logdir=logdir,
        )
        procs.append(gunicorn)
        wait_http(port, "/healthz")
        log(f"gunicorn pid {gunicorn.pid} on 127.0.0.1:{port}, workers {gunicorn.children()}")
        if lookup_skip is None:
            subprocess.run(
                [str(BIN / "celery"), "-A", "crm_plugin", "purge", "-f"],
                cwd=ROOT,
                env={**os.environ},
                check=False,
                capture_output=True,
            )
            worker = Proc(
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
                env={**os.environ},
                logdir=logdir,
            )
            procs.append(worker)

        scripts = Path(tempfile.mkdtemp(prefix="twosv-bench-lua-"))
        get_script = lua_script(
            scripts,
            "get",
            # A connection per request: with keep-alive each wrk connection stays on the worker
            # that accepted it, and 4 connections rarely land one per single-threaded worker,
            # so a round's p50 depended on that draw ((a) 8.7 to 31 ms between rounds).
            "" if args.keepalive else 'wrk.headers["Connection"] = "close"\n',
            TOKEN=AGENT_TOKEN,
        )
        figures: dict[str, Callable[..., dict[str, Any]]] = {}
        base_now = int(started.timestamp())

        get_paths = {
            "c": "/bench/floor/",
            "a": f"/api/v1/customers/{seed.TYPICAL_CUSTOMER}/twosv/",
            "b": f"/api/v1/customers/{seed.BIG_CUSTOMER}/twosv/",
            "s": f"/bench/state-without-audit/{seed.TYPICAL_CUSTOMER}/",
        }

        def get_figures(keys: str) -> None:
            """Measure the GET figures in interleaved rounds (c a b c a b ...), so that a load
            change on the machine during the run hits all of them alike."""
            for key in keys:
                run_wrk(
                    wrk, port, get_paths[key], get_script, seconds=args.warmup, connections=threads
                )
            rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
            meters = {key: CpuMeter(gunicorn.children) for key in keys}
            for n in range(args.rounds):
                for key in keys:
                    with meters[key]:
                        rounds[key].append(
                            run_wrk(
                                wrk,
                                port,
                                get_paths[key],
                                get_script,
                                seconds=max(1, round(args.duration / args.rounds)),
                                connections=threads,
                            )
                        )
                log(
                    f"round {n + 1}/{args.rounds}: "
                    + ", ".join(f"({k}) p50 {rounds[k][-1]['p50_ms']} ms" for k in keys)
                    + f"; load {load_average()}"
                )
            for key in keys:
                results[key] = merge_rounds(rounds[key])
                add_cpu(results[key], meters[key], results[key]["requests"])
                log(f"({key}) {json.dumps(results[key])}")

        def ingest_figure(phase: str, body: str, path: str) -> Callable[..., dict[str, Any]]:
            def measure(
                *,
                tag: str = "t",
                base: int = base_now - 3600,
                seconds: float = args.duration,
                warm_up: bool = True,
                alone: bool = True,
            ) -> dict[str, Any]:
                """One timed wrk run; `tag` marks its events, which occur from `base` on (a
                later round needs a later base: each method's events arrive in order)."""
                common = {"TOKEN": seed.PRODUCER_TOKEN, "RUN": run, "PHASE": phase}
                common["BATCH"] = BATCH
                timed = lua_script(
                    scripts,
                    f"{phase}-{tag}",
                    LUA_EVENTS + body,
                    BASE=base,
                    TAG=tag,
                    **common,
                )
                if warm_up:
                    warm = lua_script(
                        scripts,
                        f"{phase}-warm",
                        LUA_EVENTS + body,
                        BASE=base_now - 7200,
                        TAG="w",
                        **common,
                    )
                    run_wrk(wrk, port, path, warm, seconds=args.warmup, connections=threads)
                wait_drained(gunicorn.children)
                per_request = BATCH if phase == "e" else 1
                began = time.perf_counter()
                with CpuMeter(gunicorn.children) as meter:
                    result = run_wrk(wrk, port, path, timed, seconds=seconds, connections=threads)
                    # Requests still running when wrk stops finish on the server: count what
                    # the database holds once they are done, over the time until then. wrk
                    # stops with a request in flight on each connection, as a rule.
                    target = (result["requests"] + threads) * per_request
                    result["drain_s"] = round(
                        wait_drained(
                            gunicorn.children,
                            lambda: count_accepted(run, phase, tag) >= target,
                        ),
                        2,
                    )
                elapsed = time.perf_counter() - began
                if result["requests"] < 10:
                    # A batch can take longer than the run: one or two samples make no p99.
                    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
                        result[key] = None
                    result["latency_note"] = (
                        f"{result['requests']} requests finished inside the {seconds:g} s "
                        "run: too few for percentiles"
                    )
                result["accepted_events"] = count_accepted(run, phase, tag)
                result["sent_events"] = result["requests"] * per_request
                result["events_per_s_wrk"] = round(result["rps"] * per_request, 1)
                result["elapsed_s"] = round(elapsed, 3)
                result["events_per_s"] = round(result["accepted_events"] / elapsed, 1)
                add_cpu(result, meter, result["accepted_events"], unit="event")
                if phase == "e" and alone:
                    result["one_batch_alone_s"] = time_batches_alone(port, run, base_now - 600)
                return result

            return measure

        figures["d"] = ingest_figure("d", LUA_SINGLE, "/api/v1/events/")
        figures["e"] = ingest_figure("e", LUA_BATCH, "/api/v1/events/batch/")
        names = {
            "a": "state, typical customer",
            "b": "state, 100,000-event customer",
            "c": "framework floor",
            "d": "ingest, one event a request",
            "e": f"ingest, batches of {BATCH}",
            "f": f"raw psycopg2 insert, {BATCH} a transaction",
            "g": "delivery lookup, request to result",
            "s": "diagnostic: (a) without its audit row",
        }
        memory_after: dict[str, int] = {}

        def snapshot(label: str) -> None:
            peaks = [proc_memory(pid).get("VmHWM", 0) for pid in gunicorn.children()]
            memory_after[label] = max(peaks, default=0)

        snapshot("boot")
        get_keys = "".join(key for key in "cabs" if key in args.only)
        if get_keys:
            log(f"({') ('.join(get_keys)}) in {args.rounds} interleaved rounds ...")
            get_figures(get_keys)
            snapshot("abc")
        if "d" in args.only:
            log(f"(d) {names['d']} ...")
            results["d"] = figures["d"]()
            log(f"(d) {json.dumps(results['d'])}")
            snapshot("d")
        if "e" in args.only and "f" in args.only:
            # Interleaved like the GET figures: measured one after the other, a spell of CPU
            # steal during (e) alone once halved its rate and the ratio (0.13 against 0.25-0.30).
            count = args.ingest_rounds
            log(f"(e) {names['e']} and (f) {names['f']} in {count} interleaved rounds ...")
            e_rounds, f_rounds = [], []
            for n in range(count):
                e_rounds.append(
                    figures["e"](
                        tag=f"t{n}",
                        base=base_now - 3600 + 600 * n,
                        seconds=args.duration / count,
                        warm_up=n == 0,
                        alone=False,
                    )
                )
                f_rounds.append(
                    raw_insert(run, threads, args.raw_seconds / count, "execute_values", f"{n}")
                )
                log(
                    f"round {n + 1}/{count}: (e) {e_rounds[-1]['events_per_s']:,.0f}, "
                    f"(f) {f_rounds[-1]['events_per_s']:,.0f} events/s; load {load_average()}"
                )
            results["e"] = merge_ingest_rounds(e_rounds)
            results["e"]["one_batch_alone_s"] = time_batches_alone(port, run, base_now - 600)
            results["f"] = merge_ingest_rounds(f_rounds)
            log(f"(e) {json.dumps(results['e'])}")
            log(f"(f) {json.dumps(results['f'])}")
            snapshot("e")
        elif "e" in args.only:
            log(f"(e) {names['e']} ...")
            results["e"] = figures["e"]()
            log(f"(e) {json.dumps(results['e'])}")
            snapshot("e")
        elif "f" in args.only:
            log(f"(f) {names['f']} ...")
            results["f"] = raw_insert(run, threads, args.raw_seconds, "execute_values")
        if "f" in args.only:
            results["f_copy"] = raw_insert(run, threads, args.raw_seconds, "copy")
            log(f"(f) COPY: {json.dumps(results['f_copy'])}")
        if "g" in args.only:
            if lookup_skip is None:
                log(f"(g) {names['g']}: {args.lookups} forced lookups ...")
                results["g"] = measure_lookups(port, ats, args.lookups)
                log(f"(g) {json.dumps(results['g'])}")
                snapshot("g")
            else:
                log(f"(g) skipped: {lookup_skip}")
                results["g"] = {"skipped": lookup_skip}

        if args.py_spy:
            results["profiles"] = {}
            targets = {
                "c": (get_paths["c"], get_script),
                "a": (get_paths["a"], get_script),
                "e": (
                    "/api/v1/events/batch/",
                    lua_script(
                        scripts,
                        "e-profile",
                        LUA_EVENTS + LUA_BATCH,
                        TOKEN=seed.PRODUCER_TOKEN,
                        RUN=run,
                        PHASE="e",
                        BATCH=BATCH,
                        BASE=base_now - 1800,
                        TAG="p",
                    ),
                ),
            }
            for key, (path, script) in targets.items():
                log(f"py-spy: profiling the workers under ({key}) load ...")
                results["profiles"][key] = profile_workers(
                    wrk, port, path, script, gunicorn, key, seconds=args.duration, threads=threads
                )
                wait_drained(gunicorn.children)
        memory = {str(pid): proc_memory(pid) for pid in gunicorn.children()}
        results["gunicorn_workers_kb"] = memory
        results["worker_peak_rss_kb_after"] = memory_after
        if args.keep_server:
            log(f"--keep-server: gunicorn stays on port {port}; press Enter to stop")
            input()
    except Exception:
        for proc in procs:
            print(f"--- {proc.name} log tail ---\n{proc.tail()}", file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            proc.stop()
        ats.stop()

    connections.close_all()
    cleanup = cleanup_run_data()
    results["load_average"] = {"start": load_at_start, "end": load_average()}
    results["cpu_steal_s"] = round(
        (cpu_steal_jiffies() - steal_at_start) / os.sysconf("SC_CLK_TCK"), 1
    )
    report(results, args, seed_info, names, time.perf_counter() - overall, cleanup)
    return 0


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
            busy = cursor.fetchone()[0]
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


def time_batches_alone(port: int, run: str, base: int, count: int = 2) -> list[float]:
    """Send `count` batches one after another on an otherwise idle server; return their
    latencies in seconds (wrk's percentiles need more batches than a run can finish)."""
    from bench import seed

    customer = f"bench-run-{run}-e0"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Token {seed.PRODUCER_TOKEN}", "Content-Type": "application/json"}
    kinds = ("code_sent", "code_resend_requested", "code_verified")
    latencies = []
    for n in range(count):
        events = [
            {
                "event_id": f"{customer}-alone-{n}-{i}",
                "type": kinds[i % 3],
                "customer_id": customer,
                "occurred_at": datetime.fromtimestamp(base + n + i / 1000, UTC).isoformat(),
                "data": {"method_id": f"{customer}-m"},
            }
            for i in range(BATCH)
        ]
        started = time.perf_counter()
        conn.request("POST", "/api/v1/events/batch/", json.dumps({"events": events}), headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"batch answered {response.status}")
        latencies.append(round(time.perf_counter() - started, 2))
    conn.close()
    return latencies


def count_accepted(run: str, phase: str, tag: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM twosv_event e JOIN twosv_customer c ON c.id = e.customer_id "
            "WHERE c.customer_id LIKE %s AND e.event_id LIKE %s",
            [f"bench-run-{run}-{phase}%", f"bench-run-{run}-{phase}%-{tag}-%"],
        )
        count = cursor.fetchone()[0]
    connection.close()
    return int(count)


def report(
    results: dict[str, Any],
    args: argparse.Namespace,
    seed_info: dict[str, Any],
    names: dict[str, str],
    seconds: float,
    cleanup: dict[str, int],
) -> None:
    a, b, c = results.get("a", {}), results.get("b", {}), results.get("c", {})
    e, f, g = results.get("e", {}), results.get("f", {}), results.get("g", {})
    s = results.get("s", {})
    ratios = {
        # Paired: the median over rounds of the ratio within a round (see paired_ratio).
        "a_over_c_p50": paired_ratio(a, c),
        "a_over_c_p99": paired_ratio(a, c, "p99_ms"),
        "b_over_a_p50": paired_ratio(b, a),
        "b_over_a_p99": paired_ratio(b, a, "p99_ms"),
        # The same from the pooled percentiles of the table, for comparison.
        "a_over_c_p50_pooled": ratio(a.get("p50_ms"), c.get("p50_ms")),
        "b_over_a_p50_pooled": ratio(b.get("p50_ms"), a.get("p50_ms")),
        "e_over_f_events": paired_ratio(e, f, "events_per_s")
        or ratio(e.get("events_per_s"), f.get("events_per_s")),
        "e_over_f_events_pooled": ratio(e.get("events_per_s"), f.get("events_per_s")),
        # The same comparisons in server CPU per request (app + database), which a busy
        # machine hardly distorts; the goals are judged on latency.
        "a_over_c_cpu": ratio(a.get("cpu_ms_per_request"), c.get("cpu_ms_per_request")),
        "b_over_a_cpu": ratio(b.get("cpu_ms_per_request"), a.get("cpu_ms_per_request")),
        # Diagnostic: how far the state read is from the floor without its audit write.
        "s_over_c_p50": paired_ratio(s, c),
        "s_over_c_cpu": ratio(s.get("cpu_ms_per_request"), c.get("cpu_ms_per_request")),
    }
    lookup_overhead = None
    if g.get("p50_ms") is not None:
        lookup_overhead = round(g["p50_ms"] - g["ats_p50_ms"], 2)
    goals = {
        "a_over_c_p50_le_1.5": _goal(ratios["a_over_c_p50"], GOALS["state_vs_floor_p50"], "le"),
        "b_over_a_p50_le_1.1": _goal(ratios["b_over_a_p50"], GOALS["big_vs_typical_p50"], "le"),
        "e_over_f_ge_0.25": _goal(ratios["e_over_f_events"], GOALS["batch_vs_raw_insert"], "ge"),
        "lookup_p50_lt_100ms_plus_ats": _goal(
            lookup_overhead, GOALS["lookup_p50_overhead_ms"], "lt"
        ),
    }
    workers = results.get("gunicorn_workers_kb", {})
    peak_kb = max((m.get("VmHWM", 0) for m in workers.values()), default=0)

    rows = []
    for key in "abcdefgs":
        r = results.get(key)
        if not r or r.get("skipped"):
            rows.append(
                (f"({key})", names[key], "-", "-", "-", "-", "-", (r or {}).get("skipped", ""))
            )
            continue
        rps = "-"
        if "rps" in r:
            rps = f"{r['rps']:,.0f}" if r["rps"] >= 10 else f"{r['rps']:.1f}"
        eps = f"{r['events_per_s']:,.0f}" if "events_per_s" in r else "-"
        note = ""
        if r.get("errors"):
            note = f"{r['errors']} errors ({r['non_2xx']} non-2xx)"
        if key == "g":
            note = f"ATS p50 {r['ats_p50_ms']} ms; {r['statuses']}"
        if key == "f":
            note = f"COPY: {results['f_copy']['events_per_s']:,.0f} events/s"
        if key in "de":
            note = (note + " " if note else "") + f"{r['accepted_events']:,} stored"
            if r.get("one_batch_alone_s"):
                note += f"; one batch alone: {r['one_batch_alone_s']} s"
        rows.append(
            (
                f"({key})",
                names[key],
                rps,
                eps,
                str(r.get("p50_ms") or "-"),
                str(r.get("p99_ms") or "-"),
                str(r.get("cpu_ms_per_request", r.get("cpu_ms_per_event", "-"))),
                note,
            )
        )
    header = ("", "figure", "req/s", "events/s", "p50 ms", "p99 ms", "CPU ms", "notes")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for name, value in ratios.items():
        print(f"{name:>20}: {value}")
    if lookup_overhead is not None:
        print(f"{'lookup p50 - ATS':>20}: {lookup_overhead} ms")
    print(f"{'peak worker RSS':>20}: {peak_kb / 1024:.1f} MiB (VmHWM, max over gunicorn workers)")
    for name, goal in goals.items():
        print(f"{name:>30}: {goal['status']} ({goal['value']})")
    load = results.get("load_average", {})
    print(
        f"\nwhole run: {seconds:.0f} s; load average {load.get('start')} -> {load.get('end')}; "
        f"CPU stolen by the hypervisor: {results.get('cpu_steal_s')} s"
    )

    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_1_5_15min": results.get("load_average"),
            "cpu_steal_s_during_run": results.get("cpu_steal_s"),
        },
        "config": {
            "database": DB_NAME,
            "gunicorn_workers": args.workers,
            "gunicorn_worker_class": args.worker_class,
            "wrk_connections": args.connections,
            "wrk_threads": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "batch_size": BATCH,
            "lookups": args.lookups,
            "ats_delay_ms": args.ats_delay_ms,
        },
        "seed": seed_info,
        "figures": {key: results.get(key) for key in "abcdefgs"},
        "raw_insert_copy": results.get("f_copy"),
        "ratios": ratios,
        "lookup_p50_minus_ats_ms": lookup_overhead,
        "goals": goals,
        "gunicorn_workers_memory_kb": workers,
        "profiles": results.get("profiles"),
        "gunicorn_worker_peak_rss_mib": round(peak_kb / 1024, 1),
        "gunicorn_worker_peak_rss_kb_after_each_phase": results.get("worker_peak_rss_kb_after"),
        "run_seconds": round(seconds, 1),
        "cleanup": cleanup,
    }
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _goal(value: float | None, target: float, op: str) -> dict[str, Any]:
    if value is None:
        return {"status": "not measured", "value": None, "target": target}
    met = {"le": value <= target, "ge": value >= target, "lt": value < target}[op]
    return {"status": "met" if met else "MISSED", "value": value, "target": target}


if __name__ == "__main__":
    sys.exit(main())
