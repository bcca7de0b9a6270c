"""Through PgBouncer in transaction mode, and across a live ALTER TABLE: zero errors (SPEC §8).

The hand-written state read and audit insert once ran as SQL-level prepared statements
(PREPARE/EXECUTE), which are session state: behind a pooler in transaction mode a fresh process
met statements that another client had prepared on the same server connection ("prepared
statement ... already exists"), and after a migration widened a column every read on an open
connection failed ("cached plan must not change result type"). These tests run the app's own
code in fresh subprocesses through a real PgBouncer (Debian's package, tests/infra), against
server connections another client keeps warm, and across an ALTER TABLE on open connections.

Each client is `python -c` with django.setup() and DATABASE_URL through PgBouncer to the test
database; it reads commands (JSON lines) on stdin and answers what it did, and every error, on
stdout. `pooler_client_main` below is that process's side.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from tests.infra import PgBouncer, django_database_url
from twosv import services
from twosv.audit import AuditAction, AuditContext, audit_record
from twosv.models import AuditEntry, Event, EventType, Method
from twosv.selectors import access_customer_state

pytest_plugins = ["tests.infra.fixtures"]

pytestmark = [
    pytest.mark.postgres,
    # serialized_rollback: start from the migrated data (the roles), which a flush removes.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ANSWER = "POOLER-ANSWER "
PHONE = "+14155550123"
# The column widened under live traffic: the state read returns it, so with a cached plan its
# new type changes the statement's result type.
WIDENED_TABLE, WIDENED_COLUMN = "twosv_customer", "display_name"


# ---------------------------------------------------------------------------------------------
# The client process's side (runs after django.setup() in a fresh interpreter)
# ---------------------------------------------------------------------------------------------


def pooler_client_main() -> None:
    """Answer each command line on stdin with one ``POOLER-ANSWER {json}`` line on stdout."""
    from django.db.backends.signals import connection_created

    connects: list[int] = []
    connection_created.connect(lambda **kwargs: connects.append(1), weak=False)
    client = _PoolerClient()
    for line in sys.stdin:
        answer = client.burst(json.loads(line))
        answer["connects"] = len(connects)
        print(ANSWER + json.dumps(answer), flush=True)


class _PoolerClient:
    """One customer's traffic: state reads (service and API), audit rows, single and batch
    ingestion. Every exception is caught, counted and reported."""

    EVENT_TYPES = ("code_sent", "code_resend_requested", "code_verified")

    def __init__(self) -> None:
        self.events = 0

    def burst(self, command: dict[str, Any]) -> dict[str, Any]:
        from django.test import Client

        customer_id, tag = command["customer_id"], command["tag"]
        method_id = f"{customer_id}-m"
        done = {"reads": 0, "api_reads": 0, "audits": 0, "events": 0, "batch_events": 0}
        errors: list[str] = []

        def attempt(kind: str, action: Callable[[], int]) -> None:
            try:
                done[kind] += action()
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{kind}: {type(exc).__name__}: {exc}".strip())

        def event(event_type: str, **data: Any) -> dict[str, Any]:
            self.events += 1
            return {
                "event_id": f"{customer_id}-{tag}-{self.events}",
                "type": event_type,
                "customer_id": customer_id,
                "occurred_at": timezone.now() - timedelta(hours=1) + timedelta(seconds=self.events),
                "data": {"method_id": method_id, **data},
            }

        def ingest_one(item: dict[str, Any]) -> int:
            result = services.event_ingest(
                event_id=item["event_id"],
                event_type=item["type"],
                customer_id=item["customer_id"],
                occurred_at=item["occurred_at"],
                data=item["data"],
            )
            if result.status != "accepted":
                raise AssertionError(f"event {item['event_id']} answered {result.status}")
            return 1

        def read() -> int:
            state = access_customer_state(customer_id=customer_id, now=timezone.now())
            found = [m.method.method_id for m in state.methods]
            if found != [method_id]:
                raise AssertionError(f"state read found methods {found}")
            return 1

        def api_read() -> int:
            response = Client().get(
                f"/api/v1/customers/{customer_id}/twosv/",
                headers={"authorization": f"Token {command['token']}"},
            )
            if response.status_code != 200:
                raise AssertionError(f"API answered {response.status_code}: {response.content!r}")
            found = [m["id"] for m in response.json()["methods"]]
            if found != [method_id]:
                raise AssertionError(f"API state read found methods {found}")
            return 1

        def audit() -> int:
            audit_record(
                actor=None,
                action=AuditAction.STATE_READ,
                result="ok",
                customer_ref=customer_id,
                context=AuditContext(request_id=f"{tag}-{done['audits']}"),
            )
            return 1

        def batch() -> int:
            items = [event(kind) for kind in self.EVENT_TYPES]
            results = services.events_ingest_batch(events=items)
            statuses = [result.status for result in results]
            if statuses != ["accepted"] * len(items):
                raise AssertionError(f"batch answered {statuses}")
            return len(items)

        if command.get("enrol"):
            enrolment = event("method_enrolled", kind="sms", role="primary", phone_number=PHONE)
            attempt("events", lambda: ingest_one(enrolment))
        for n in range(command["iterations"]):
            attempt("reads", read)
            attempt("api_reads", api_read)
            attempt("audits", audit)
            single = event(self.EVENT_TYPES[n % 3])
            attempt("events", lambda: ingest_one(single))  # noqa: B023 - called at once
            attempt("batch_events", batch)
        return {**done, "errors": errors, "port": connection.settings_dict["PORT"]}


# ---------------------------------------------------------------------------------------------
# The test process's side
# ---------------------------------------------------------------------------------------------

CLIENT_CODE = (
    "import django; django.setup(); "
    "from tests.test_pooler import pooler_client_main; pooler_client_main()"
)


class PoolerClientProcess:
    """A fresh `python -c` client through PgBouncer; `run(...)` sends a command, waits."""

    def __init__(self, database_url: str, customer_id: str, token: str) -> None:
        self.customer_id = customer_id
        self.token = token
        self.runs = 0
        self.total: dict[str, int] = {}
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("CELERY_BROKER_URL", "CACHE_URL", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "crm_plugin.settings",
                "DATABASE_URL": database_url,
                "DISABLE_SERVER_SIDE_CURSORS": "1",
                "CONN_MAX_AGE": "600",
                "DEBUG": "1",
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT_CODE],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(ANSWER):
                self._answers.put(json.loads(line.removeprefix(ANSWER)))
            else:
                self.output.append(line)
        self._answers.put(None)

    def send(self, iterations: int) -> None:
        assert self.process.stdin is not None
        command = {
            "customer_id": self.customer_id,
            "token": self.token,
            "tag": f"r{self.runs}",
            "iterations": iterations,
            "enrol": self.runs == 0,
        }
        self.runs += 1
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = 120) -> dict[str, Any]:
        answer = self._answers.get(timeout=timeout)
        if answer is None:
            raise AssertionError(f"the client exited ({self.process.poll()}):\n{self.log}")
        for key, value in answer.items():
            if isinstance(value, int) and key != "connects":
                self.total[key] = self.total.get(key, 0) + value
        self.total.setdefault("errors", 0)
        self.total["errors"] += len(answer["errors"])
        return answer

    def run(self, iterations: int) -> dict[str, Any]:
        self.send(iterations)
        return self.answer()

    @property
    def log(self) -> str:
        return "".join(self.output[-40:])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def pooler_clients(
    pgbouncer_factory: Callable[..., PgBouncer],
) -> Iterator[Callable[[str], PoolerClientProcess]]:
    """Start fresh client processes through one PgBouncer (transaction mode, 2 server
    connections); every client gets a customer of its own and the agent's token."""
    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    bouncer = pgbouncer_factory(pool_size=2)
    assert connection.settings_dict["NAME"].startswith("test_")
    url = bouncer.database_url(connection.settings_dict["NAME"])
    agent = User.objects.create_user("pooler-agent")
    agent.groups.add(Group.objects.get(name="support_agent"))
    token = Token.objects.create(user=agent).key
    started: list[PoolerClientProcess] = []

    def start(name: str) -> PoolerClientProcess:
        client = PoolerClientProcess(url, f"pool-{name}", token)
        started.append(client)
        return client

    start.bouncer = bouncer  # type: ignore[attr-defined]
    yield start
    for client in started:
        client.close()


def assert_clean(answer: dict[str, Any], client: PoolerClientProcess) -> None:
    assert answer["errors"] == [], f"{client.customer_id}: {answer['errors'][:5]}\n{client.log}"


def assert_rows_of(client: PoolerClientProcess) -> None:
    """What the client reported doing is what the database holds: every audit row and every
    event stored once, every event folded into the method."""
    total = client.total
    method = Method.objects.get(method_id=f"{client.customer_id}-m")
    events = Event.objects.filter(method=method)
    assert events.count() == total["events"] + total["batch_events"]
    assert not events.filter(outcome="").exists()
    assert method.last_event_id == events.latest("occurred_at").event_id
    audits = AuditEntry.objects.filter(customer_ref=client.customer_id)
    # One row a direct audit insert, one a state read through the API.
    assert audits.count() == total["audits"] + total["api_reads"]
    assert audits.filter(request_id__startswith="r").count() == total["audits"]


def test_fresh_processes_against_warm_server_connections_see_zero_errors(pooler_clients):
    """Fresh processes, one after another and four at once, through PgBouncer whose two server
    connections another client keeps using in between: state reads, audit rows, single and
    batch ingestion, no error."""
    warmer = pooler_clients("warmer")
    assert_clean(warmer.run(iterations=3), warmer)

    fresh: list[PoolerClientProcess] = []
    for n in range(2):  # one at a time: each meets the connections the warmer just used
        client = pooler_clients(f"seq{n}")
        fresh.append(client)
        assert_clean(client.run(iterations=5), client)
        assert_clean(warmer.run(iterations=2), warmer)

    crowd = [pooler_clients(f"par{n}") for n in range(4)]  # four at once, and the warmer
    for client in [*crowd, warmer]:
        client.send(iterations=5)
    for client in [*crowd, warmer]:
        assert_clean(client.answer(), client)
    fresh += crowd
    for client in fresh:  # a second burst each on their now-warm connections
        client.send(iterations=2)
    for client in fresh:
        assert_clean(client.answer(), client)

    for client in [warmer, *fresh]:
        assert client.total["errors"] == 0
        assert_rows_of(client)
        # Every client went through PgBouncer, on one Django connection all along.
        assert client.process.poll() is None
    bouncer = pooler_clients.bouncer  # type: ignore[attr-defined]
    assert len(bouncer.server_connections(connection.settings_dict["NAME"])) <= 2
    figures = {
        key: sum(c.total.get(key, 0) for c in [warmer, *fresh])
        for key in ("reads", "api_reads", "audits", "events", "batch_events", "errors")
    }
    print(f"\nthrough PgBouncer, {len(fresh)} fresh processes and a warmer: {figures}")
    assert figures["errors"] == 0


# ---------------------------------------------------------------------------------------------
# A live ALTER TABLE
# ---------------------------------------------------------------------------------------------


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def direct_traffic(customer_id: str, method_id: str, rounds: int) -> tuple[int, list[str]]:
    """State reads and audit rows on this thread's own connection; return its backend pid
    and the errors met."""
    errors: list[str] = []
    for _ in range(rounds):
        try:
            state = access_customer_state(customer_id=customer_id, now=timezone.now())
            assert [m.method.method_id for m in state.methods] == [method_id]
            audit_record(
                actor=None, action=AuditAction.STATE_READ, result="ok", customer_ref=customer_id
            )
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(f"{type(exc).__name__}: {exc}".strip())
    return backend_pid(), errors


def column_type() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = %s",
            [WIDENED_TABLE, WIDENED_COLUMN],
        )
        return str(cursor.fetchone()[0])


def alter_column(new_type: str) -> None:
    """ALTER TABLE from a connection of its own, as `manage.py migrate` would."""
    settings = connection.settings_dict
    other = psycopg2.connect(django_database_url(settings), connect_timeout=5)
    other.autocommit = True
    try:
        with other.cursor() as cursor:
            cursor.execute("SET lock_timeout = '10s'")
            cursor.execute(
                f"ALTER TABLE {WIDENED_TABLE} ALTER COLUMN {WIDENED_COLUMN} TYPE {new_type}"
            )
    finally:
        other.close()


def test_a_column_widened_under_open_connections_costs_no_error(pooler_clients):
    """The test's own connection, a second thread's and a client process's through PgBouncer
    read and write audit rows, a migration widens a column the state read returns, and the
    same open connections go on: zero errors after it (and before)."""
    pooled = pooler_clients("alter")
    assert_clean(pooled.run(iterations=2), pooled)
    customer_id, method_id = "pool-alter-direct", "pool-alter-direct-m"
    services.event_ingest(
        event_id="alter-enrol",
        event_type=EventType.METHOD_ENROLLED,
        customer_id=customer_id,
        occurred_at=timezone.now() - timedelta(hours=2),
        data={"method_id": method_id, "kind": "sms", "role": "primary", "phone_number": PHONE},
    )
    original = column_type()
    assert original == "character varying(200)"
    second = ThreadPoolExecutor(max_workers=1)  # one thread, so one connection of its own
    before: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    try:
        own_pid, before["own connection"] = direct_traffic(customer_id, method_id, 5)
        thread_pid, before["second thread"] = second.submit(
            direct_traffic, customer_id, method_id, 5
        ).result()
        before["through PgBouncer"] = pooled.run(iterations=3)["errors"]
        assert thread_pid != own_pid

        alter_column("varchar(300)")
        assert column_type() == "character varying(300)"

        own_pid_after, after["own connection"] = direct_traffic(customer_id, method_id, 5)
        thread_pid_after, after["second thread"] = second.submit(
            direct_traffic, customer_id, method_id, 5
        ).result()
        pooled_after = pooled.run(iterations=3)
        after["through PgBouncer"] = pooled_after["errors"]
    finally:
        second.submit(lambda: connection.close()).result()
        second.shutdown()
        alter_column("varchar(200)")
    met = {key: (len(errors), errors[:1]) for key, errors in [*before.items(), *after.items()]}
    assert before == {key: [] for key in before}, met
    assert after == {key: [] for key in after}, met
    # The same open connections as before the ALTER: no reconnect hid an error.
    assert (own_pid_after, thread_pid_after) == (own_pid, thread_pid)
    assert pooled_after["connects"] == 1
    assert_rows_of(pooled)
    assert AuditEntry.objects.filter(customer_ref=customer_id).count() == 20
