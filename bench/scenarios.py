"""The run against a live server: start it, then the figures --only selects, in order."""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path

from bench.ats_stub import AtsStub
from bench.config import log
from bench.context import Bench
from bench.ingestion import measure_ingestion
from bench.lookups import measure_lookup_figure
from bench.pooler import measure_pooled_gets
from bench.profiling import profile_all
from bench.purge import measure_purge
from bench.scale import measure_late, measure_mixed
from bench.servers import Services, free_port, proc_memory
from bench.state_reads import get_script, measure_gets
from bench.webhooks import measure_webhooks, server_env


def start(
    services: Services,
    args: argparse.Namespace,
    wrk: str,
    run: str,
    started: datetime,
    *,
    lookups: bool,
) -> Bench:
    """Start gunicorn, and the Celery worker when (g) runs; return the run's context."""
    port = free_port()
    # (w) signs its callbacks with the bench's Twilio auth token.
    gunicorn = services.start_gunicorn(port, args, env=server_env())
    if lookups:
        services.start_worker(run)
    scripts = Path(tempfile.mkdtemp(prefix="twosv-bench-lua-"))
    return Bench(
        args=args,
        wrk=wrk,
        port=port,
        gunicorn=gunicorn,
        run=run,
        base_now=int(started.timestamp()),
        scripts=scripts,
        get_script=get_script(scripts, keepalive=args.keepalive),
    )


def measure(bench: Bench, ats: AtsStub, lookup_skip: str | None, services: Services) -> None:
    """Every selected figure into bench.results, then --py-spy's profiles and the workers'
    memory; with --keep-server, wait for Enter before returning."""
    args, results = bench.args, bench.results
    bench.snapshot("boot")
    get_keys = "".join(key for key in "cabs" if key in args.only)
    if get_keys:
        log(f"({') ('.join(get_keys)}) in {args.rounds} interleaved rounds ...")
        measure_gets(bench, get_keys)
        bench.snapshot("abc")
    if "j" in args.only:
        measure_pooled_gets(bench, services, services.logdir)
    measure_ingestion(bench)
    if "d" in args.only:
        # (w) beside (d): callbacks per second through the webhook, one a request.
        measure_webhooks(bench)
    if "g" in args.only:
        measure_lookup_figure(bench, ats, lookup_skip)
    if "h" in args.only:
        log("(h) a late event against an in-order one on the 100,000-event method ...")
        results["h"] = measure_late(bench)
        log(f"(h) {results['h']}")
    if "i" in args.only:
        log("(i) state p99 under full-rate batch ingestion against idle ...")
        results["i"] = measure_mixed(bench, services)
    if "l" in args.only:
        log("(l) retention purge of aged events ...")
        results["l"] = measure_purge(bench.run)
        log(f"(l) {results['l']}")
    if args.py_spy:
        results["profiles"] = profile_all(bench)
    memory = {str(pid): proc_memory(pid) for pid in bench.gunicorn.children()}
    results["gunicorn_workers_kb"] = memory
    results["worker_peak_rss_kb_after"] = bench.memory_after
    if args.keep_server:
        log(f"--keep-server: gunicorn stays on port {bench.port}; press Enter to stop")
        input()
