"""The bench database's data: migrate and seed it once; per run, fresh methods to ingest into
and the lookup customer, cleaned up afterwards."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bench.config import DB_NAME, LOOKUP_CUSTOMER, LOOKUP_PHONE, log


def setup_database() -> dict[str, Any]:
    """Set Django up on the bench database (the environment names it), migrate, seed when not
    seeded yet, ensure the bench users and drop what earlier runs left; return the seed's
    description."""
    import django

    django.setup()
    from django.core.management import call_command

    from bench import seed

    log(f"migrating {DB_NAME}")
    call_command("migrate", verbosity=0, interactive=False)
    seed_info = seed.seeded()
    if seed_info is None:
        seed.clear_outdated(log=log)
        seed_info = seed.seed(log=log)
    else:
        log(f"already seeded at {seed_info['seeded_at']} (--reseed to redo)")
    seed.ensure_users()
    cleanup_run_data()
    return seed_info


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
            # Live ingestion checkpoints the run's busy methods.
            "checkpoints": "DELETE FROM twosv_methodcheckpoint WHERE method_id IN "
            "(SELECT m.id FROM twosv_method m JOIN twosv_customer c ON c.id = m.customer_id "
            "WHERE c.customer_id LIKE 'bench-run-%%')",
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


def count_accepted(run: str, phase: str, tag: str) -> int:
    """Return how many of a run's events with `tag` the database holds for `phase`."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM twosv_event e JOIN twosv_customer c ON c.id = e.customer_id "
            "WHERE c.customer_id LIKE %s AND e.event_id LIKE %s",
            [f"bench-run-{run}-{phase}%", f"bench-run-{run}-{phase}%-{tag}-%"],
        )
        row = cursor.fetchone()
    connection.close()
    return int(row[0]) if row else 0
