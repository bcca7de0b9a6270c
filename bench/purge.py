"""Figure (l): the retention purge's rate in events per second, on aged events of its own.

The bench's seeded data must survive the run, and a purge leaves dead rows and statistics behind
that would skew the other figures (after one, the planner read the big method's events through
the wrong index), so (l) runs in a database of its own (``twosv_bench_purge``, migrated once),
in a child process: it COPYs SCRATCH_CUSTOMERS customers shaped like the seed's (a primary
method, sometimes a backup, ~QUOTA events from enrolment to two hours ago) and one method with
BIG_QUOTA events (a tenth of the events, as in the seed), folded and checkpointed exactly as
the seed does (`bench.seed_fold`: live ingestion's checkpoints, one every
TWOSV_CHECKPOINT_EVERY events), with as much history before the cutoff (now -
TWOSV_EVENT_RETENTION) as after it. The purge then runs as the periodic task does
(`twosv.services.retention`: horizons, then deletes); the tables are truncated afterwards. The
rate counts the whole purge: moving the horizons (each method folded from its latest
checkpoint before the cutoff) and deleting.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
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
    # Rows older than the retention have long been vacuumed in production (hint bits set, pages
    # all-visible): so are these, or the purge would pay for a first read of fresh rows.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE twosv_event, twosv_method, twosv_methodcheckpoint")
    return counts


def _truncate() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE twosv_customer, twosv_method, twosv_event, twosv_methodcheckpoint CASCADE"
        )


def purge_scratch(run: str) -> dict[str, Any]:
    """In the purge database: seed the scratch history, purge it as the periodic task does,
    time it, empty the tables."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from twosv.services import retention

    call_command("migrate", verbosity=0, interactive=False)
    _truncate()
    now = datetime.now(UTC).replace(microsecond=0)
    cutoff = now - settings.TWOSV_EVENT_RETENTION
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
        _truncate()
    if report.events_purged != counts["old_events"]:
        raise RuntimeError(
            f"(l) purged {report.events_purged} of {counts['old_events']} old events"
        )
    return {
        "database": connection.settings_dict["NAME"],
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


def measure_purge(run: str) -> dict[str, Any]:
    """Figure (l): `purge_scratch` in a child process on the purge database (created once)."""
    from bench.config import BIN, PG, PURGE_DB, ROOT
    from bench.servers import pg_command

    listing = subprocess.run(
        [*pg_command("psql", "-At", "-d", "postgres"), "-c", "SELECT datname FROM pg_database"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if PURGE_DB not in listing:
        log(f"(l) creating database {PURGE_DB}")
        subprocess.run([*pg_command("createdb"), PURGE_DB], check=True)
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{PURGE_DB}"
    child = subprocess.run(
        [str(BIN / "python"), "-m", "bench.purge", run],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    lines = child.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"(l) failed ({child.returncode}): {child.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


if __name__ == "__main__":
    import django

    django.setup()
    print(json.dumps(purge_scratch(sys.argv[1])))
