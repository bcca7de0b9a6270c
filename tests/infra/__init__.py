"""Real services started by the tests themselves: Redis, PgBouncer, a trickling HTTP server
and a Celery worker subprocess.

Each helper is a context manager (`with RedisServer() as redis: ...`); the pytest fixtures
live in `tests.infra.fixtures` (load it with `pytest_plugins = ["tests.infra.fixtures"]`).
"""

from tests.infra.celery_worker import CeleryWorkerProcess, django_database_url, send_task
from tests.infra.pgbouncer import PgBouncer
from tests.infra.ports import free_port, port_is_closed, wait_for_port
from tests.infra.redis_server import RedisServer
from tests.infra.trickle_http import TrickleHttpServer

__all__ = [
    "CeleryWorkerProcess",
    "PgBouncer",
    "RedisServer",
    "TrickleHttpServer",
    "django_database_url",
    "free_port",
    "port_is_closed",
    "send_task",
    "wait_for_port",
]
