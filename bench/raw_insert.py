"""Figure (f): event rows inserted straight into twosv_event with psycopg2, the database's limit."""

from __future__ import annotations

import io
import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.config import BATCH, DB_NAME, PG
from bench.servers import cpu_seconds

COLUMNS = "event_id, type, customer_id, method_id, occurred_at, received_at, data, outcome"

# One process's share: run, thread, customer pk, method pk, seconds, mode + tag, barrier.
Job = tuple[str, int, int, int, float, str, Any]


def _raw_insert_worker(job: Job) -> tuple[int, float, float, float]:
    import psycopg2
    from psycopg2.extras import execute_values

    run, tid, customer_pk, method_pk, seconds, mode, barrier = job
    conn = psycopg2.connect(dbname=DB_NAME, **PG)
    kinds = ("code_sent", "code_resend_requested", "code_verified")
    base = datetime.now(UTC) - timedelta(hours=1)
    customer = f"bench-run-{run}-f{tid}"
    data = json.dumps({"method_id": f"{customer}-m"})
    counter = 0
    inserted = 0
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    conn.commit()
    barrier.wait()
    started = time.perf_counter()
    cpu_started, db_cpu_started = time.process_time(), cpu_seconds(backend)
    with conn.cursor() as cursor:
        while time.perf_counter() - started < seconds:
            rows = []
            for _ in range(BATCH):
                counter += 1
                moment = base + timedelta(milliseconds=counter)
                rows.append(
                    (
                        f"{customer}-{mode}-{counter}",
                        kinds[(counter - 1) % 3],
                        customer_pk,
                        method_pk,
                        moment,
                        moment,
                        data,
                        "recorded",
                    )
                )
            if mode == "copy":
                buffer = "".join(
                    "\t".join(str(v) if not isinstance(v, datetime) else v.isoformat() for v in r)
                    + "\n"
                    for r in rows
                )
                cursor.copy_expert(f"COPY twosv_event ({COLUMNS}) FROM STDIN", io.StringIO(buffer))
            else:
                execute_values(
                    cursor, f"INSERT INTO twosv_event ({COLUMNS}) VALUES %s", rows, page_size=BATCH
                )
            conn.commit()
            inserted += len(rows)
    elapsed = time.perf_counter() - started
    cpu, db_cpu = time.process_time() - cpu_started, cpu_seconds(backend) - db_cpu_started
    conn.close()
    return inserted, elapsed, cpu, db_cpu


def raw_insert(run: str, threads: int, seconds: float, mode: str, tag: str = "") -> dict[str, Any]:
    """Insert event rows straight into twosv_event, 500 a transaction, one process a thread."""
    from django.db import connections

    from twosv.models import Method

    methods = {
        m.method_id: m
        for m in Method.objects.filter(customer__customer_id__startswith=f"bench-run-{run}-f")
    }
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(threads)
        jobs: list[Job] = []
        for tid in range(threads):
            method = methods[f"bench-run-{run}-f{tid}-m"]
            jobs.append((run, tid, method.customer_id, method.pk, seconds, mode + tag, barrier))
        with ctx.Pool(threads) as pool:
            results = pool.map(_raw_insert_worker, jobs)
    total = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    client_cpu, db_cpu = sum(r[2] for r in results), sum(r[3] for r in results)
    return {
        "events": total,
        "seconds": round(elapsed, 2),
        "events_per_s": round(total / elapsed, 1),
        "mode": mode,
        "client_cpu_ms_per_event": round(client_cpu / total * 1000, 4),
        "db_cpu_ms_per_event": round(db_cpu / total * 1000, 4),
        "cpu_ms_per_event": round((client_cpu + db_cpu) / total * 1000, 4),
    }
