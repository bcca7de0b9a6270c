"""Liveness and readiness probes for the orchestrator: plain Django views, no auth."""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


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
    """Answer 200 when the database (and, outside eager mode, the broker) answers; else 503."""
    checks: dict[str, str] = {}
    failing: list[str] = []
    db_error = _check_database()
    checks["database"] = "ok" if db_error is None else f"error: {db_error}"
    if db_error:
        failing.append("database")
    if settings.CELERY_TASK_ALWAYS_EAGER:
        checks["broker"] = "skipped (eager mode)"
    else:
        broker_error = _check_broker()
        checks["broker"] = "ok" if broker_error is None else f"error: {broker_error}"
        if broker_error:
            failing.append("broker")
    body = {"status": "ok" if not failing else "unavailable", "checks": checks, "failing": failing}
    return JsonResponse(body, status=503 if failing else 200)
