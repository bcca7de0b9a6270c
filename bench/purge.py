"""Figure (l): the retention purge's rate in events per second, on aged events of its own.

The bench's seeded data must survive the run, so (l) COPYs scratch customers into the bench
database whose history reaches back before every seeded event: SCRATCH_CUSTOMERS customers
shaped like the seed's (a primary method, sometimes a backup, ~QUOTA events from enrolment to
two hours ago) and one method with BIG_QUOTA events (a tenth of the events, as in the seed),
folded and checkpointed exactly as the seed does (`bench.seed_fold`: live ingestion's
checkpoints, one every TWOSV_CHECKPOINT_EVERY events). The purge then runs as the periodic task
does (`twosv.services.retention`) with a cutoff a day before the oldest seeded event: only the
scratch methods have events before it, about half of their events. What is left of the
scratch customers is deleted afterwards. The rate counts the whole purge: moving the horizons
(each method folded from its latest checkpoint before the cutoff) and deleting.
"""

from __future__ import annotations

import io
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.config import log

SCRATCH_CUSTOMERS = 2_000
QUOTA = 200
BIG_QUOTA = 50_000


def _reserve(cursor: Any, table: str, count: int) -> list[int]:
    cursor.execute(
        f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)",
        [count],
    )
    return [row[0] for row in cursor.fetchall()]


def seed_aged(run: str, cutoff: datetime, now: datetime) -> dict[str, int]:
    """COPY the scratch customers, methods, events and checkpoints; return their counts."""
    from django.db import connection, transaction

    from bench import seed
    from bench.seed_fold import CHECKPOINT_COLUMNS, checkpoint_lines, fast_fold
    from twosv.selectors import lock_policy

    rng = random.Random(19)
    rules, every = lock_policy(), seed.checkpoint_every()
    span = now - cutoff  # as much history before the cutoff as after it
    counts = {"customers": SCRATCH_CUSTOMERS + 1, "methods": 0, "events": 0, "old_events": 0}
    with transaction.atomic(), connection.cursor() as cursor:
        pg = cursor.cursor
        customer_pks = _reserve(cursor, "twosv_customer", SCRATCH_CUSTOMERS + 1)
        plans: list[seed.MethodSeed] = []
        customers = io.StringIO()
        for n, pk in enumerate(customer_pks):
            customer_id = f"bench-run-{run}-purge{n:05d}"
            customers.write(f"{pk}\t{customer_id}\tPurge scratch {n}\t{now.isoformat()}\n")
            big = n == SCRATCH_CUSTOMERS
            roles = ("primary", "backup") if not big and rng.random() < 0.4 else ("primary",)
            for role in roles:
                quota = BIG_QUOTA if big else QUOTA // (10 if role == "backup" else 1)
                start = cutoff - span * rng.uniform(0.9, 1.0)
                kind = "sms" if big or rng.random() < 0.8 else "email"
                plans.append(
                    seed.MethodSeed(
                        pk=0,
                        customer_pk=pk,
                        method_id=f"{customer_id}-{role}",
                        kind=kind,
                        role=role,
                        quota=quota,
                        start=start,
                        phone_number=seed._phone(rng) if kind == "sms" else "",
                        email=f"{customer_id}@example.com" if kind == "email" else "",
                        label="Phone",
                    )
                )
        for m, pk in zip(plans, _reserve(cursor, "twosv_method", len(plans)), strict=True):
            m.pk = pk
        seed._copy(
            pg, "twosv_customer", ("id", "customer_id", "display_name", "created_at"), customers
        )
        methods, events, checkpoints = io.StringIO(), io.StringIO(), io.StringIO()
        for m in plans:
            rows = seed._method_events(m, now, rng)
            fast = fast_fold(rows, rules, every)
            prefix, ids = f"{m.method_id}-e", f"\t{m.customer_pk}\t{m.pk}\t"
            for n, (event_type, t, data) in enumerate(rows):
                at = seed._iso(t)
                events.write(
                    f"{prefix}{n:06d}\t{event_type}{ids}{at}\t{at}\t{data}\t{fast.outcomes[n]}\n"
                )
            if fast.checkpoints:
                event_ids = [f"{prefix}{n:06d}" for n in range(len(rows))]
                times = [t for _, t, _ in rows]
                checkpoints.write(checkpoint_lines(m.pk, event_ids, times, fast))
            methods.write(seed._method_line(m, rows, fast, m.phone_number, rows[0][1], every))
            counts["events"] += len(rows)
            cut = int(cutoff.timestamp() * 1_000_000)
            counts["old_events"] += sum(1 for _, t, _ in rows if t < cut)
        counts["methods"] = len(plans)
        seed._copy(pg, "twosv_method", seed.METHOD_COLUMNS, methods)
        seed._copy(pg, "twosv_event", seed.EVENT_COLUMNS, events)
        seed._copy(pg, "twosv_methodcheckpoint", CHECKPOINT_COLUMNS, checkpoints)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE twosv_event, twosv_method, twosv_methodcheckpoint")
    return counts


def drop_scratch(run: str) -> None:
    from django.db import connection, transaction

    like = f"bench-run-{run}-purge%"
    with transaction.atomic(), connection.cursor() as cursor:
        scratch = "(SELECT id FROM twosv_customer WHERE customer_id LIKE %s)"
        cursor.execute(f"DELETE FROM twosv_event WHERE customer_id IN {scratch}", [like])
        cursor.execute(
            "DELETE FROM twosv_methodcheckpoint WHERE method_id IN "
            f"(SELECT id FROM twosv_method WHERE customer_id IN {scratch})",
            [like],
        )
        cursor.execute(f"DELETE FROM twosv_method WHERE customer_id IN {scratch}", [like])
        cursor.execute("DELETE FROM twosv_customer WHERE customer_id LIKE %s", [like])


def measure_purge(run: str) -> dict[str, Any]:
    """Figure (l): seed the scratch history, purge it as the periodic task does, time it."""
    from django.db import connection

    from twosv.models import Method
    from twosv.services import retention

    oldest = Method.objects.order_by("enrolled_at").values_list("enrolled_at", flat=True).first()
    assert oldest is not None
    cutoff = min(oldest, datetime.now(UTC)) - timedelta(days=1)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    counts = seed_aged(run, cutoff, now)
    seeded_s = time.perf_counter() - started
    log(f"(l) seeded {json.dumps(counts)} in {seeded_s:.1f} s; purging ...")
    try:
        report = retention.PurgeReport()
        deadline = time.monotonic() + 3600
        began = time.perf_counter()
        retention.horizons_move(cutoff, deadline, report)
        horizons_s = time.perf_counter() - began
        retention.events_purge(deadline, report)
        total_s = time.perf_counter() - began
    finally:
        connection.close()
        drop_scratch(run)
    if report.events_purged != counts["old_events"]:
        raise RuntimeError(
            f"(l) purged {report.events_purged} of {counts['old_events']} old events"
        )
    return {
        "scratch": counts,
        "seed_s": round(seeded_s, 1),
        "horizons_moved": report.horizons_moved,
        "events_purged": report.events_purged,
        "horizons_s": round(horizons_s, 2),
        "deletes_s": round(total_s - horizons_s, 2),
        "seconds": round(total_s, 2),
        "events_per_s": round(report.events_purged / total_s, 1) if total_s else None,
        "delete_events_per_s": round(report.events_purged / (total_s - horizons_s), 1),
    }
