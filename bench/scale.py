"""Figures (h) and (i): a late event against an in-order one on the 100,000-event method, and
the state read's p99 while batch ingestion runs at full rate against idle.

(h) times ``services.event_ingest`` in this process (the service a request runs, without
HTTP), in pairs: an in-order ``code_sent`` after the method's last event, then one that
occurred a minute before it (it re-folds from the latest checkpoint before it). The goal is
judged on the medians; the same pairs through ``POST /api/v1/events/`` are reported beside.

(i) reads the typical customer's state with wrk in rounds, alone and while a second wrk sends
batches of 500 events as fast as the server takes them, to a gunicorn of its own (producers
and agents don't share a worker pool: a batch takes a worker for a few hundred milliseconds,
and reads queued behind it would measure the queue, not the database or the machine).
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.config import BATCH, log
from bench.context import Bench
from bench.load import LUA_BATCH, LUA_EVENTS, lua_script
from bench.rundata import count_accepted, enrol
from bench.servers import Services, free_port

LATE_BY = timedelta(minutes=1)
PAIRS = 15
GOAL_LATE = 2.0
GOAL_MIXED = 3.0


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def _post(port: int, body: dict[str, Any]) -> float:
    """POST one event as the bench's producer; return the milliseconds it took."""
    from bench import seed

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Token {seed.PRODUCER_TOKEN}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conn.request("POST", "/api/v1/events/", json.dumps(body), headers)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"(h) event answered {response.status}")
    return elapsed


def measure_late(bench: Bench) -> dict[str, Any]:
    """Figure (h): PAIRS in-order and late events on the big method, in process and over HTTP."""
    from django.db import connection

    from bench import seed
    from twosv import services
    from twosv.models import Method, MethodCheckpoint

    method_id = f"{seed.BIG_CUSTOMER}-primary"
    method = Method.objects.get(method_id=method_id)
    assert method.last_event_at is not None
    checkpoints = MethodCheckpoint.objects.filter(method=method).count()
    # In order: after the method's last event (earlier runs added some) and near now.
    at = max(method.last_event_at + timedelta(seconds=1), datetime.now(UTC) - timedelta(hours=1))
    timings: dict[str, list[float]] = {
        "in_order": [],
        "late": [],
        "api_in_order": [],
        "api_late": [],
    }

    def body(event_id: str, occurred_at: datetime) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "type": "code_sent",
            "customer_id": seed.BIG_CUSTOMER,
            "occurred_at": occurred_at.isoformat(),
            "data": {"method_id": method_id},
        }

    for n in range(PAIRS * 2 + 2):
        api = n >= PAIRS + 1
        kinds = (("api_in_order", at), ("api_late", at - LATE_BY))
        if not api:
            kinds = (("in_order", at), ("late", at - LATE_BY))
        for kind, occurred_at in kinds:
            event = body(f"bench-h-{bench.run}-{n}-{kind}", occurred_at)
            if api:
                elapsed = _post(bench.port, event)
            else:
                started = time.perf_counter()
                ingested = services.event_ingest(
                    event_id=event["event_id"],
                    event_type=event["type"],
                    customer_id=event["customer_id"],
                    occurred_at=occurred_at,
                    data=event["data"],
                )
                elapsed = (time.perf_counter() - started) * 1000
                assert ingested.status == "accepted", ingested.status
            # The first pair of each kind warms the path up and is not counted.
            if n not in (0, PAIRS + 1):
                timings[kind].append(elapsed)
        at += timedelta(seconds=2)
    connection.close()
    medians = {kind: _median(values) for kind, values in timings.items()}
    pairs = [
        late / in_order for in_order, late in zip(timings["in_order"], timings["late"], strict=True)
    ]
    result = {
        "method_events": method.events.count(),
        "checkpoints_before": checkpoints,
        "pairs": PAIRS,
        "late_by_s": LATE_BY.total_seconds(),
        **{f"{kind}_p50_ms": value for kind, value in medians.items()},
        "late_over_in_order": round(medians["late"] / medians["in_order"], 3),
        "late_over_in_order_paired": round(statistics.median(pairs), 3),
        "api_late_over_in_order": round(medians["api_late"] / medians["api_in_order"], 3),
        "timings_ms": {kind: [round(v, 2) for v in values] for kind, values in timings.items()},
    }
    return result


def _start_wrk(bench: Bench, port: int, path: str, script: Any, seconds: float) -> Any:
    argv = [
        bench.wrk,
        f"-t{bench.threads}",
        f"-c{bench.threads}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# The producers' pool runs at a lower CPU priority than the agents', as the README deploys it.
PRODUCER_NICE = 10


def measure_mixed(bench: Bench, services: Services) -> dict[str, Any]:
    """Figure (i): the state read's p99 under full-rate batch ingestion over its idle p99."""
    from django.db import connections

    from bench import seed
    from bench.state_reads import get_paths
    from bench.webhooks import server_env

    args, run = bench.args, bench.run
    started = datetime.fromtimestamp(bench.base_now, UTC)
    for tid in range(bench.threads):
        customer = f"bench-run-{run}-i{tid}"
        enrol(customer, f"{customer}-m", "+14152370000", started - timedelta(hours=3))
    connections.close_all()
    port = free_port()
    ingest = services.start_gunicorn(
        port, args, name="gunicorn-ingest", env=server_env(), nice=PRODUCER_NICE
    )
    path = get_paths()["a"]
    seconds = max(4, round(args.duration / 2))
    rounds: list[dict[str, Any]] = []
    try:
        common = {"TOKEN": seed.PRODUCER_TOKEN, "RUN": run, "PHASE": "i", "BATCH": BATCH}
        warm = lua_script(
            bench.scripts,
            "i-warm",
            LUA_EVENTS + LUA_BATCH,
            BASE=bench.base_now - 5400,
            TAG="w",
            **common,
        )
        _start_wrk(bench, port, "/api/v1/events/batch/", warm, args.warmup).wait()
        bench.wrk_run(path, bench.get_script, seconds=args.warmup)
        for n in range(3):
            idle = bench.wrk_run(path, bench.get_script, seconds=seconds)
            script = lua_script(
                bench.scripts,
                f"i-{n}",
                LUA_EVENTS + LUA_BATCH,
                BASE=bench.base_now - 5000 + 400 * n,
                TAG=f"t{n}",
                **common,
            )
            began = time.perf_counter()
            # Ingestion starts first and outlasts the reads by a second at each end.
            loader = _start_wrk(bench, port, "/api/v1/events/batch/", script, seconds + 3)
            time.sleep(1.5)
            loaded = bench.wrk_run(path, bench.get_script, seconds=seconds)
            loader.wait()
            ingest_s = time.perf_counter() - began
            accepted = count_accepted(run, "i", f"t{n}")
            rounds.append(
                {
                    "idle_p50_ms": idle["p50_ms"],
                    "idle_p99_ms": idle["p99_ms"],
                    "loaded_p50_ms": loaded["p50_ms"],
                    "loaded_p99_ms": loaded["p99_ms"],
                    "loaded_errors": loaded["errors"],
                    "ingest_events_per_s": round(accepted / ingest_s, 1),
                }
            )
            log(f"(i) round {n + 1}/3: {json.dumps(rounds[-1])}")
    finally:
        services.stop(ingest)
    ratios = [r["loaded_p99_ms"] / r["idle_p99_ms"] for r in rounds if r["idle_p99_ms"]]
    return {
        "idle_p99_ms": _median([r["idle_p99_ms"] for r in rounds]),
        "loaded_p99_ms": _median([r["loaded_p99_ms"] for r in rounds]),
        "idle_p50_ms": _median([r["idle_p50_ms"] for r in rounds]),
        "loaded_p50_ms": _median([r["loaded_p50_ms"] for r in rounds]),
        "ingest_events_per_s": _median([r["ingest_events_per_s"] for r in rounds]),
        "loaded_over_idle_p99": round(statistics.median(ratios), 3) if ratios else None,
        "errors": sum(r["loaded_errors"] for r in rounds),
        "rounds": rounds,
    }
