"""/healthz and /readyz: what the orchestrator sees."""

import time

import pytest
from django.test import Client


@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_healthz_needs_no_database_at_all():
    """No db fixture: pytest-django makes any query here an error."""
    assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_200_when_the_database_answers_in_eager_mode(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True

    response = Client().get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("skipped")


@pytest.fixture
def unreachable_broker(settings):
    """Not eager, and a broker URL pointing at a closed port."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"


@pytest.mark.django_db
@pytest.mark.usefixtures("unreachable_broker")
def test_readyz_is_503_naming_the_broker_when_it_is_down():
    started = time.monotonic()
    response = Client().get("/readyz")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")
    # One connection attempt, no retry: a probe must answer promptly.
    assert elapsed < 4, f"readiness took {elapsed:.1f} s with the broker down"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_only_answer_get(path):
    assert Client().post(path).status_code == 405


@pytest.mark.django_db
def test_readyz_is_503_naming_the_cache_when_it_is_down(settings):
    """The cache on its own Redis, and that Redis gone: every part but the cache answers."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    started = time.monotonic()
    response = Client().get("/readyz")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["cache"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["cache"].startswith("error")
    assert elapsed < 4, f"readiness took {elapsed:.1f} s with the cache down"
