"""Liveness and readiness probes for the orchestrator: plain Django views, no auth."""

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from twosv import dependencies


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the process serves requests; touches no database."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"{type(exc).__name__}"
    return None


def _check_cache() -> str | None:
    try:
        # A write and a read back: a cache that takes writes but lost its data is not ready.
        cache.set("twosv:readyz", "ok", timeout=10)
        if cache.get("twosv:readyz") != "ok":
            return "ReadBackFailed"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}"
    return None


def _check_broker() -> str | None:
    from crm_plugin.celery import app

    try:
        # The URL from settings: Celery lets a CELERY_BROKER_URL variable override its own conf.
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            # One attempt: a probe must answer fast, the orchestrator retries.
            conn.ensure_connection(max_retries=0, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}"
    return None


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database, the cache and (outside eager mode) the broker answer.

    Otherwise 503, naming every failing part. Only the database is essential to the API (it
    answers without the cache or the broker), but an operator must see the others go.
    """
    checks: dict[str, str] = {}
    failing: list[str] = []
    for part, check in (("database", _check_database), ("cache", _check_cache)):
        error = check()
        checks[part] = "ok" if error is None else f"error: {error}"
        if error:
            failing.append(part)
    if settings.CELERY_TASK_ALWAYS_EAGER:
        checks["broker"] = "skipped (eager mode)"
    else:
        broker_error = _check_broker()
        checks["broker"] = "ok" if broker_error is None else f"error: {broker_error}"
        if broker_error:
            failing.append("broker")
    body = {
        "status": "ok" if not failing else "unavailable",
        "checks": checks,
        "failing": failing,
        # Fallbacks this process made since it started because a dependency was down (a throttle
        # let through, advisory settings read from the database), by dependency.
        "fallbacks": dependencies.outage_counts(),
    }
    return JsonResponse(body, status=503 if failing else 200)
