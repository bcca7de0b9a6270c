"""`make bench`: measure the state endpoint, ingestion and delivery lookups against their floors.

On PostgreSQL (database ``twosv_bench``, created and migrated when missing, seeded once), serve the
app with gunicorn, drive it with wrk from separate processes, and measure in one run:

  (a) GET  customers/<typical>/twosv/      a typical customer's state (~90 events)
  (b) GET  customers/bench-big/twosv/      the customer with 100,000 events on one method
  (c) GET  bench/floor/                    same auth, permission, throttle, middleware; constant
  (s) GET  bench/state-without-audit/<typical>/  diagnostic: (a) minus its audit row
  (d) POST events/                         one event per request, unique ids
  (e) POST events/batch/                   500 events per request, in events/s
  (f) psycopg2 execute_values of the same event rows, 500 a transaction: the database's own limit
  (g) POST customers/<id>/twosv/delivery-lookups/ (force) -> GET until finished, real Celery worker
      and a local ATS over HTTP; the ATS's own time reported beside it
  (j) (c), (a) and (b) again with a second gunicorn behind PgBouncer in transaction mode,
      started by the bench: c_pgbouncer, a_pgbouncer, b_pgbouncer, their errors (must be 0)

Prints a table and writes bench/results.json (every figure, the ratios and the goals).
Usage: .venv/bin/python bench/run.py [--reseed] [--duration 12] [--py-spy] [--only abc] ...
(--help lists every option.)

The parts: bench/servers.py (wrk, the database, gunicorn and Celery, CPU and memory),
bench/rundata.py (seed and per-run rows), bench/load.py (wrk, its scripts, merging rounds),
bench/state_reads.py (a b c s), bench/ingestion.py and bench/raw_insert.py (d e f),
bench/lookups.py (g), bench/pooler.py (j), bench/profiling.py (--py-spy), bench/scenarios.py
(the run's order) and bench/report.py (the table, the goals, results.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _events_option() -> None:
    """Pass --events on as BENCH_EVENTS before bench.config is imported: it names the database."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--events", type=int, default=1_000_000)
    os.environ["BENCH_EVENTS"] = str(pre.parse_known_args()[0].events)


_events_option()

from bench import lookups, rundata, scenarios, servers  # noqa: E402
from bench.ats_stub import AtsStub  # noqa: E402
from bench.config import ATS_TOKEN, cpu_steal_jiffies, load_average, log  # noqa: E402
from bench.report import report  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reseed", action="store_true", help="drop the bench database, reseed")
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="events seeded (figure (k): 10000000, in a database of its own); goals judged alike",
    )
    parser.add_argument("--duration", type=float, default=12, help="seconds per wrk figure")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of c a b s")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per figure")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (= threads)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument(
        "--keepalive", action="store_true", help="GET figures: keep connections open (noisier)"
    )
    parser.add_argument("--lookups", type=int, default=50, help="sequential lookups for (g)")
    parser.add_argument(
        "--ingest-rounds", type=int, default=3, help="interleaved rounds of (e) and (f)"
    )
    parser.add_argument("--raw-seconds", type=float, default=5, help="seconds of raw insert (f)")
    parser.add_argument("--ats-delay-ms", type=float, default=0, help="simulated ATS latency")
    parser.add_argument(
        "--only",
        default="abcdefghijls",
        help="figures to run, e.g. --only abc; j = (c) (a) (b) again through PgBouncer; "
        "(k) is a run with --events 10000000",
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="after the figures, profile the workers with py-spy under (c), (a) and (e) load; "
        "collapsed stacks go to var/bench-profiles/, a summary to results.json",
    )
    parser.add_argument("--seed-only", action="store_true", help="seed the database and stop")
    parser.add_argument("--keep-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def warn_if_busy(load: str) -> None:
    if float(load.split()[0]) > (os.cpu_count() or 1):
        log(
            f"warning: load average {load} on {os.cpu_count()} CPUs: other work "
            "competes with the bench; latencies will be inflated (CPU ms per request less so)"
        )


def main() -> int:
    args = parse_args()
    overall = time.perf_counter()
    load_at_start, steal_at_start = load_average(), cpu_steal_jiffies()
    warn_if_busy(load_at_start)
    wrk = servers.ensure_wrk()
    servers.ensure_database(reseed=args.reseed)
    ats = AtsStub(token=ATS_TOKEN, delay=args.ats_delay_ms / 1000).start()
    os.environ.update(servers.bench_env(ats.url))
    seed_info = rundata.setup_database()
    if args.seed_only:
        ats.stop()
        return 0
    from django.db import connections

    run, started = uuid.uuid4().hex[:8], datetime.now(UTC)
    rundata.prepare_run(run, args.connections, started)
    lookups.add_ats_history(ats, started)
    lookup_skip = lookups.lookups_available() if "g" in args.only else "not selected"
    connections.close_all()

    logdir = Path(tempfile.mkdtemp(prefix="twosv-bench-"))
    with servers.Services(ats, logdir) as services:
        bench = scenarios.start(services, args, wrk, run, started, lookups=lookup_skip is None)
        scenarios.measure(bench, ats, lookup_skip, services)

    connections.close_all()
    cleanup = rundata.cleanup_run_data()
    results = bench.results
    results["load_average"] = {"start": load_at_start, "end": load_average()}
    steal = cpu_steal_jiffies() - steal_at_start
    results["cpu_steal_s"] = round(steal / os.sysconf("SC_CLK_TCK"), 1)
    report(results, args, seed_info, time.perf_counter() - overall, cleanup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
