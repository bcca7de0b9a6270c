"""Smoke tests of the test infrastructure in tests/infra: each helper really does its job.

Redis and the trickling HTTP server need only their binaries/stdlib; PgBouncer needs
PostgreSQL (marker `postgres`); the worker subprocess needs PostgreSQL and a broker.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import psycopg2
import psycopg2.errors
import pytest
import redis
import requests
from django.db import connection

from tests.infra import (
    CeleryWorkerProcess,
    PgBouncer,
    RedisServer,
    TrickleHttpServer,
    django_database_url,
    port_is_closed,
    send_task,
)

pytest_plugins = ["tests.infra.fixtures"]


# Redis


def test_redis_server_stops_and_starts_again_on_the_same_port(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.set("key", "value")
    assert client.get("key") == b"value"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    port = redis_server.port

    redis_server.stop()
    assert port_is_closed(port)
    with pytest.raises(redis.ConnectionError):
        redis_server.client().ping()

    redis_server.start()
    assert redis_server.port == port
    assert redis_server.client().ping()
    # No persistence: the restarted server is empty.
    assert redis_server.client().get("key") is None


# PgBouncer


def _backend_pid(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@pytest.mark.postgres
def test_pgbouncer_clients_share_one_server_connection(
    pgbouncer_factory: Callable[..., PgBouncer],
) -> None:
    bouncer = pgbouncer_factory(pool_size=1)
    assert bouncer.execute("postgres", "SELECT 1") == [(1,)]
    first, second = bouncer.connect("postgres"), bouncer.connect("postgres")
    try:
        # Both clients stay connected; between transactions neither owns a server.
        assert _backend_pid(first) == _backend_pid(second)
        assert len(bouncer.server_connections("postgres")) == 1
    finally:
        first.close()
        second.close()
    pools = [row for row in bouncer.admin("SHOW POOLS") if row["database"] == "postgres"]
    assert pools[0]["pool_mode"] == "transaction"


@pytest.mark.postgres
def test_pgbouncer_breaks_sql_level_prepared_statements(
    pgbouncer_factory: Callable[..., PgBouncer],
) -> None:
    """The failure mode later tests must catch: PREPARE outlives the client's transaction."""
    bouncer = pgbouncer_factory(pool_size=1)
    first, second = bouncer.connect("postgres"), bouncer.connect("postgres")
    try:
        with first.cursor() as cursor:
            cursor.execute("PREPARE infra_stmt AS SELECT 1")
        with second.cursor() as cursor, pytest.raises(psycopg2.errors.DuplicatePreparedStatement):
            cursor.execute("PREPARE infra_stmt AS SELECT 2")
        # The other client can drop it, too: the first one's statement is then gone.
        with second.cursor() as cursor:
            cursor.execute("DEALLOCATE infra_stmt")
        with first.cursor() as cursor, pytest.raises(psycopg2.errors.InvalidSqlStatementName):
            cursor.execute("EXECUTE infra_stmt")
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_pgbouncer_stop_refuses_connections(pgbouncer: PgBouncer) -> None:
    assert pgbouncer.database_url("x") == f"postgres://postgres@127.0.0.1:{pgbouncer.port}/x"
    pgbouncer.stop()
    with pytest.raises(psycopg2.OperationalError):
        pgbouncer.connect("postgres")
    pgbouncer.start()
    assert pgbouncer.execute("postgres", "SELECT 1") == [(1,)]


# Trickling HTTP server

BODY = b'{"messages": [], "next_cursor": null}'


def test_trickle_server_defeats_per_read_timeouts() -> None:
    with TrickleHttpServer(body=BODY, interval=0.05) as server:
        started = time.monotonic()
        # Read timeout 0.5 s, yet the whole response takes ~1.8 s and never times out.
        response = requests.get(f"{server.url}/v1/messages", timeout=(1, 0.5))
        elapsed = time.monotonic() - started
    assert response.json() == {"messages": [], "next_cursor": None}
    assert elapsed >= (len(BODY) - 1) * 0.05
    assert server.completed == 1
    assert server.paths == ["/v1/messages"]


def test_trickle_server_sends_headers_at_once_and_sees_a_client_give_up() -> None:
    with TrickleHttpServer(body=BODY, interval=0.1) as server:
        started = time.monotonic()
        with requests.get(server.url, stream=True, timeout=(1, 5)) as response:
            assert time.monotonic() - started < 0.5
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(len(BODY))
            # A client with an overall deadline gives up after 0.3 s.
            received = b""
            for chunk in response.iter_content(chunk_size=1):
                received += chunk
                if time.monotonic() - started > 0.3:
                    break
        assert 0 < len(received) < len(BODY)
        assert server.wait_for_disconnects(1, timeout=5)
        assert server.completed == 0


# Celery worker subprocess


@pytest.mark.postgres
@pytest.mark.broker
def test_celery_worker_process_runs_a_task_and_dies_on_sigkill(
    db: None, celery_worker_factory: Callable[..., CeleryWorkerProcess]
) -> None:
    broker_url = os.environ["CELERY_BROKER_URL"]
    database_url = django_database_url(connection.settings_dict)
    assert connection.settings_dict["NAME"].startswith("test_")
    worker = celery_worker_factory(broker_url=broker_url, env={"DATABASE_URL": database_url})
    assert worker.is_alive()

    # The sweeper finds nothing to do in the empty test database and returns 0.
    task_id = send_task(broker_url, "twosv.tasks.delivery_lookup_sweep", queue=worker.queues[0])
    line = worker.wait_for_task(task_id, timeout=20)
    # Plain or JSON log format alike: "Task ...[id] succeeded in 0.01s: 0".
    assert re.search(r"succeeded in [\d.]+s: 0\b", line), line

    pid = worker.pid
    worker.kill()
    assert worker.is_gone()
    assert worker.returncode == -9
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
