"""Figures (d), (e) and (f): ingestion one event a request, in batches, and the raw insert."""

from __future__ import annotations

import http.client
import json
import time
from datetime import UTC, datetime
from typing import Any

from bench.config import BATCH, NAMES, load_average, log
from bench.context import Bench
from bench.load import LUA_BATCH, LUA_EVENTS, LUA_SINGLE, add_cpu, lua_script, merge_ingest_rounds
from bench.raw_insert import raw_insert
from bench.rundata import count_accepted
from bench.servers import CpuMeter, wait_drained

# Each ingestion figure's wrk script body and path.
ENDPOINTS = {
    "d": (LUA_SINGLE, "/api/v1/events/"),
    "e": (LUA_BATCH, "/api/v1/events/batch/"),
}


def measure_ingest(
    bench: Bench,
    phase: str,
    *,
    tag: str = "t",
    base: int | None = None,
    seconds: float | None = None,
    warm_up: bool = True,
    alone: bool = True,
) -> dict[str, Any]:
    """One timed wrk run of (d) or (e); `tag` marks its events, which occur from `base` on (a
    later round needs a later base: each method's events arrive in order). By default an hour
    before the run started, for --duration seconds."""
    from bench import seed

    args, run, threads = bench.args, bench.run, bench.threads
    body, path = ENDPOINTS[phase]
    base = bench.base_now - 3600 if base is None else base
    seconds = args.duration if seconds is None else seconds
    common: dict[str, Any] = {"TOKEN": seed.PRODUCER_TOKEN, "RUN": run, "PHASE": phase}
    common["BATCH"] = BATCH
    timed = lua_script(
        bench.scripts, f"{phase}-{tag}", LUA_EVENTS + body, BASE=base, TAG=tag, **common
    )
    if warm_up:
        warm = lua_script(
            bench.scripts,
            f"{phase}-warm",
            LUA_EVENTS + body,
            BASE=bench.base_now - 7200,
            TAG="w",
            **common,
        )
        bench.wrk_run(path, warm, seconds=args.warmup)
    wait_drained(bench.gunicorn.children)
    per_request = BATCH if phase == "e" else 1
    began = time.perf_counter()
    with CpuMeter(bench.gunicorn.children) as meter:
        result = bench.wrk_run(path, timed, seconds=seconds)
        # Requests still running when wrk stops finish on the server: count what the database
        # holds once they are done, over the time until then. wrk stops with a request in
        # flight on each connection, as a rule.
        target = (result["requests"] + threads) * per_request
        result["drain_s"] = round(
            wait_drained(
                bench.gunicorn.children,
                lambda: count_accepted(run, phase, tag) >= target,
            ),
            2,
        )
    elapsed = time.perf_counter() - began
    if result["requests"] < 10:
        # A batch can take longer than the run: one or two samples make no p99.
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            result[key] = None
        result["latency_note"] = (
            f"{result['requests']} requests finished inside the {seconds:g} s "
            "run: too few for percentiles"
        )
    result["accepted_events"] = count_accepted(run, phase, tag)
    result["sent_events"] = result["requests"] * per_request
    result["events_per_s_wrk"] = round(result["rps"] * per_request, 1)
    result["elapsed_s"] = round(elapsed, 3)
    result["events_per_s"] = round(result["accepted_events"] / elapsed, 1)
    add_cpu(result, meter, result["accepted_events"], unit="event")
    if phase == "e" and alone:
        result["one_batch_alone_s"] = time_batches_alone(bench.port, run, bench.base_now - 600)
    return result


def time_batches_alone(port: int, run: str, base: int, count: int = 2) -> list[float]:
    """Send `count` batches one after another on an otherwise idle server; return their
    latencies in seconds (wrk's percentiles need more batches than a run can finish)."""
    from bench import seed

    customer = f"bench-run-{run}-e0"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Token {seed.PRODUCER_TOKEN}", "Content-Type": "application/json"}
    kinds = ("code_sent", "code_resend_requested", "code_verified")
    latencies = []
    for n in range(count):
        events = [
            {
                "event_id": f"{customer}-alone-{n}-{i}",
                "type": kinds[i % 3],
                "customer_id": customer,
                "occurred_at": datetime.fromtimestamp(base + n + i / 1000, UTC).isoformat(),
                "data": {"method_id": f"{customer}-m"},
            }
            for i in range(BATCH)
        ]
        started = time.perf_counter()
        conn.request("POST", "/api/v1/events/batch/", json.dumps({"events": events}), headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"batch answered {response.status}")
        latencies.append(round(time.perf_counter() - started, 2))
    conn.close()
    return latencies


def measure_single(bench: Bench, phase: str) -> None:
    """Figure (d) or (e) alone, in one timed run."""
    log(f"({phase}) {NAMES[phase]} ...")
    bench.results[phase] = measure_ingest(bench, phase)
    log(f"({phase}) {json.dumps(bench.results[phase])}")
    bench.snapshot(phase)


def measure_batch_and_raw(bench: Bench) -> None:
    """Figures (e) and (f) in interleaved rounds."""
    # Interleaved like the GET figures: measured one after the other, a spell of CPU steal
    # during (e) alone once halved its rate and the ratio (0.13 against 0.25-0.30).
    args, results = bench.args, bench.results
    count = args.ingest_rounds
    log(f"(e) {NAMES['e']} and (f) {NAMES['f']} in {count} interleaved rounds ...")
    e_rounds, f_rounds = [], []
    for n in range(count):
        e_rounds.append(
            measure_ingest(
                bench,
                "e",
                tag=f"t{n}",
                base=bench.base_now - 3600 + 600 * n,
                seconds=args.duration / count,
                warm_up=n == 0,
                alone=False,
            )
        )
        f_rounds.append(
            raw_insert(bench.run, bench.threads, args.raw_seconds / count, "execute_values", f"{n}")
        )
        log(
            f"round {n + 1}/{count}: (e) {e_rounds[-1]['events_per_s']:,.0f}, "
            f"(f) {f_rounds[-1]['events_per_s']:,.0f} events/s; load {load_average()}"
        )
    results["e"] = merge_ingest_rounds(e_rounds)
    results["e"]["one_batch_alone_s"] = time_batches_alone(
        bench.port, bench.run, bench.base_now - 600
    )
    results["f"] = merge_ingest_rounds(f_rounds)
    log(f"(e) {json.dumps(results['e'])}")
    log(f"(f) {json.dumps(results['f'])}")
    bench.snapshot("e")


def measure_ingestion(bench: Bench) -> None:
    """Whichever of (d), (e) and (f) --only selects; (f) adds the COPY variant."""
    only, args, results = bench.args.only, bench.args, bench.results
    if "d" in only:
        measure_single(bench, "d")
    if "e" in only and "f" in only:
        measure_batch_and_raw(bench)
    elif "e" in only:
        measure_single(bench, "e")
    elif "f" in only:
        log(f"(f) {NAMES['f']} ...")
        results["f"] = raw_insert(bench.run, bench.threads, args.raw_seconds, "execute_values")
    if "f" in only:
        results["f_copy"] = raw_insert(bench.run, bench.threads, args.raw_seconds, "copy")
        log(f"(f) COPY: {json.dumps(results['f_copy'])}")
