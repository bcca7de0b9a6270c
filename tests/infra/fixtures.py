"""Pytest fixtures for the infra helpers: `pytest_plugins = ["tests.infra.fixtures"]`.

A missing binary skips the test, or fails it when REQUIRE_SERVICES=1 (as tests/conftest.py
does for the service markers).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.infra.celery_worker import CeleryWorkerProcess, purge_queue
from tests.infra.pgbouncer import PGBOUNCER, PgBouncer
from tests.infra.redis_server import REDIS_SERVER, RedisServer
from tests.infra.trickle_http import TrickleHttpServer


def require_binary(binary: str) -> None:
    """Skip (or fail, with REQUIRE_SERVICES=1) when `binary` is not installed."""
    if shutil.which(binary) or os.access(binary, os.X_OK):
        return
    reason = f"needs {binary} installed"
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"REQUIRE_SERVICES=1 but this test {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running, empty redis-server of its own; stopped and removed afterwards."""
    require_binary(REDIS_SERVER)
    with RedisServer() as server:
        yield server


def _upstream() -> tuple[str, int, str]:
    from django.conf import settings

    database = settings.DATABASES["default"]
    return (
        database.get("HOST") or "127.0.0.1",
        int(database.get("PORT") or 5432),
        database.get("USER") or "postgres",
    )


@pytest.fixture
def pgbouncer_factory() -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers with chosen settings (`pgbouncer_factory(pool_size=1)`)."""
    require_binary(PGBOUNCER)
    started: list[PgBouncer] = []

    def start(**kwargs: object) -> PgBouncer:
        host, port, user = _upstream()
        options: dict[str, object] = {
            "upstream_host": host,
            "upstream_port": port,
            "user": user,
            **kwargs,
        }
        bouncer = PgBouncer(**options)  # type: ignore[arg-type]
        started.append(bouncer)
        return bouncer.start()

    yield start
    for bouncer in started:
        bouncer.cleanup()


@pytest.fixture
def pgbouncer(pgbouncer_factory: Callable[..., PgBouncer]) -> PgBouncer:
    """A PgBouncer in transaction mode (pool size 2) in front of DATABASE_URL's server."""
    return pgbouncer_factory()


@pytest.fixture
def trickle_server() -> Iterator[TrickleHttpServer]:
    """A server that sends an empty ATS page one byte per second (change its attributes)."""
    with TrickleHttpServer() as server:
        yield server


@pytest.fixture
def celery_worker_factory() -> Iterator[Callable[..., CeleryWorkerProcess]]:
    """Start worker subprocesses: `celery_worker_factory(broker_url=..., env=...)`.

    Each gets a fresh queue of its own (`worker.queues[0]`) unless `queues` is given, purged
    first. Every worker is SIGKILLed at teardown.
    """
    started: list[CeleryWorkerProcess] = []

    def start(*, broker_url: str, **kwargs: object) -> CeleryWorkerProcess:
        queues = kwargs.pop("queues", None) or [f"infra-{uuid.uuid4().hex[:8]}"]
        for queue in queues:  # type: ignore[attr-defined]
            purge_queue(broker_url, queue)
        worker = CeleryWorkerProcess(broker_url=broker_url, queues=queues, **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.kill()
