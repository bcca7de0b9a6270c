"""What every bench module shares: where things are, the figures' names, the goals, the log."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Events in the seeded database (`--events`, which bench/run.py passes on as BENCH_EVENTS
# before any bench module is imported); another size gets a database of its own.
EVENTS = int(os.environ.get("BENCH_EVENTS", "1000000"))
DB_NAME = "twosv_bench" if EVENTS == 1_000_000 else f"twosv_bench_{EVENTS // 1_000_000}m"
# Figure (l) purges scratch data in a database of its own (bench/purge.py).
PURGE_DB = "twosv_bench_purge"
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
DATABASE_URL = f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{DB_NAME}"
# A Redis database of its own, so purging the bench's queue touches nobody else's.
BROKER_URL = "redis://127.0.0.1:6379/14"
CACHE_URL = "redis://127.0.0.1:6379/13"
ATS_TOKEN = "bench-ats-token"
LOOKUP_CUSTOMER = "bench-lookup"
LOOKUP_PHONE = "+14152371234"
RESULTS = ROOT / "bench" / "results.json"
BATCH = 500
GOALS = {
    "state_vs_floor_p50": 1.5,
    "big_vs_typical_p50": 1.1,
    "batch_vs_raw_insert": 0.25,
    "lookup_p50_overhead_ms": 100.0,
    # Issue 19: (h) late over in-order, (i) state p99 loaded over idle, (l) purge over (e).
    "late_vs_in_order": 2.0,
    "state_p99_loaded_vs_idle": 3.0,
    "purge_vs_batch_ingest": 10.0,
}
# The figures, in the order of the table; (s) is a diagnostic, not a goal's figure. (j) is
# POOLED below.
FIGURES = "abcdefgs"
NAMES = {
    "a": "state, typical customer",
    "b": "state, 100,000-event customer",
    "c": "framework floor",
    "d": "ingest, one event a request",
    "e": f"ingest, batches of {BATCH}",
    "f": f"raw psycopg2 insert, {BATCH} a transaction",
    "g": "delivery lookup, request to result",
    "s": "diagnostic: (a) without its audit row",
    "h": "late event (1 min) vs in-order, 100,000-event method",
    "i": "state p99 under full-rate batch ingestion vs idle",
    "l": "retention purge of aged events",
}
# Figure (j): (a), (b) and (c) again, with gunicorn behind PgBouncer in transaction mode
# (bench/pooler.py); stored and printed under these keys.
POOLED = ("a_pgbouncer", "b_pgbouncer", "c_pgbouncer")
NAMES.update({key: f"{NAMES[key[0]]}, through PgBouncer" for key in POOLED})
# Every row of the table, in order.
TABLE = (*FIGURES, *POOLED)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_steal_jiffies() -> int:
    """Return the CPU time the hypervisor gave to others since boot (/proc/stat "steal")."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0
