"""The run's summary: ratios, the four goals, the printed table and bench/results.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import UTC, datetime
from typing import Any

from bench import report_scale, webhooks
from bench.config import BATCH, DB_NAME, EVENTS, GOALS, NAMES, POOLED, RESULTS, ROOT, TABLE


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def paired_ratio(x: dict[str, Any], y: dict[str, Any], key: str = "p50_ms") -> float | None:
    """Return the median over rounds of x's figure over y's in the same round.

    Rounds interleave the GET figures a few seconds apart, so a slow spell of the machine (a
    shared VM here) hits both sides of a round's ratio alike, where it would skew one pooled
    percentile: the goals are judged on these paired ratios.
    """
    pairs = [
        rx[key] / ry[key]
        for rx, ry in zip(x.get("rounds", []), y.get("rounds", []), strict=False)
        if rx.get(key) and ry.get(key)
    ]
    return round(statistics.median(pairs), 3) if pairs else None


def _goal(value: float | None, target: float, op: str) -> dict[str, Any]:
    if value is None:
        return {"status": "not measured", "value": None, "target": target}
    met = {"le": value <= target, "ge": value >= target, "lt": value < target}[op]
    return {"status": "met" if met else "MISSED", "value": value, "target": target}


def ratios_of(results: dict[str, Any]) -> dict[str, float | None]:
    a, b, c = results.get("a", {}), results.get("b", {}), results.get("c", {})
    e, f = results.get("e", {}), results.get("f", {})
    s = results.get("s", {})
    ap, bp, cp = (results.get(key, {}) for key in POOLED)
    return {
        # Paired: the median over rounds of the ratio within a round (see paired_ratio).
        "a_over_c_p50": paired_ratio(a, c),
        "a_over_c_p99": paired_ratio(a, c, "p99_ms"),
        "b_over_a_p50": paired_ratio(b, a),
        "b_over_a_p99": paired_ratio(b, a, "p99_ms"),
        # The same from the pooled percentiles of the table, for comparison.
        "a_over_c_p50_pooled": ratio(a.get("p50_ms"), c.get("p50_ms")),
        "b_over_a_p50_pooled": ratio(b.get("p50_ms"), a.get("p50_ms")),
        "e_over_f_events": paired_ratio(e, f, "events_per_s")
        or ratio(e.get("events_per_s"), f.get("events_per_s")),
        "e_over_f_events_pooled": ratio(e.get("events_per_s"), f.get("events_per_s")),
        # The same comparisons in server CPU per request (app + database), which a busy
        # machine hardly distorts; the goals are judged on latency.
        "a_over_c_cpu": ratio(a.get("cpu_ms_per_request"), c.get("cpu_ms_per_request")),
        "b_over_a_cpu": ratio(b.get("cpu_ms_per_request"), a.get("cpu_ms_per_request")),
        # Diagnostic: how far the state read is from the floor without its audit write.
        "s_over_c_p50": paired_ratio(s, c),
        "s_over_c_cpu": ratio(s.get("cpu_ms_per_request"), c.get("cpu_ms_per_request")),
        # (j): the same ratios through PgBouncer in transaction mode, and what the pooler adds
        # to each figure (its p50 over the direct one's; measured in rounds of their own).
        "a_over_c_p50_pgbouncer": paired_ratio(ap, cp),
        "a_over_c_p99_pgbouncer": paired_ratio(ap, cp, "p99_ms"),
        "b_over_a_p50_pgbouncer": paired_ratio(bp, ap),
        "a_over_c_cpu_pgbouncer": ratio(ap.get("cpu_ms_per_request"), cp.get("cpu_ms_per_request")),
        "a_pgbouncer_over_a_p50": ratio(ap.get("p50_ms"), a.get("p50_ms")),
        "c_pgbouncer_over_c_p50": ratio(cp.get("p50_ms"), c.get("p50_ms")),
    }


def lookup_overhead_of(results: dict[str, Any]) -> float | None:
    """(g)'s p50 less the ATS's own p50, in ms, when (g) ran."""
    g = results.get("g", {})
    if g.get("p50_ms") is None:
        return None
    overhead: float = round(g["p50_ms"] - g["ats_p50_ms"], 2)
    return overhead


def pooled_errors_of(results: dict[str, Any]) -> int | None:
    """Errors and non-2xx answers of the (j) figures, when they ran."""
    if not any(results.get(key) for key in POOLED):
        return None
    return sum(int(results.get(key, {}).get("errors", 0)) for key in POOLED)


def goals_of(
    ratios: dict[str, float | None], lookup_overhead: float | None, pooled_errors: int | None
) -> dict[str, Any]:
    return {
        "a_over_c_p50_le_1.5": _goal(ratios["a_over_c_p50"], GOALS["state_vs_floor_p50"], "le"),
        "b_over_a_p50_le_1.1": _goal(ratios["b_over_a_p50"], GOALS["big_vs_typical_p50"], "le"),
        "e_over_f_ge_0.25": _goal(ratios["e_over_f_events"], GOALS["batch_vs_raw_insert"], "ge"),
        "lookup_p50_lt_100ms_plus_ats": _goal(
            lookup_overhead, GOALS["lookup_p50_overhead_ms"], "lt"
        ),
        # SPEC §8: every statement works through PgBouncer in transaction mode.
        "pgbouncer_errors_eq_0": _goal(pooled_errors, 0, "le"),
    }


def table_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row a figure: name, req/s, events/s, p50, p99, CPU ms and notes."""
    rows: list[tuple[str, ...]] = []
    for key in TABLE:
        label = f"({key})" if len(key) == 1 else key
        r = results.get(key)
        if not r or r.get("skipped"):
            rows.append((label, NAMES[key], "-", "-", "-", "-", "-", (r or {}).get("skipped", "")))
            continue
        rps = "-"
        if "rps" in r:
            rps = f"{r['rps']:,.0f}" if r["rps"] >= 10 else f"{r['rps']:.1f}"
        eps = f"{r['events_per_s']:,.0f}" if "events_per_s" in r else "-"
        note = ""
        if r.get("errors") or key in POOLED:
            note = f"{r['errors']} errors ({r['non_2xx']} non-2xx)"
        if key == "g":
            note = f"ATS p50 {r['ats_p50_ms']} ms; {r['statuses']}"
        if key == "f":
            note = f"COPY: {results['f_copy']['events_per_s']:,.0f} events/s"
        if key in "de":
            note = (note + " " if note else "") + f"{r['accepted_events']:,} stored"
            if r.get("one_batch_alone_s"):
                note += f"; one batch alone: {r['one_batch_alone_s']} s"
        rows.append(
            (
                label,
                NAMES[key],
                rps,
                eps,
                str(r.get("p50_ms") or "-"),
                str(r.get("p99_ms") or "-"),
                str(r.get("cpu_ms_per_request", r.get("cpu_ms_per_event", "-"))),
                note,
            )
        )
    return rows


def report(
    results: dict[str, Any],
    args: argparse.Namespace,
    seed_info: dict[str, Any],
    seconds: float,
    cleanup: dict[str, int],
) -> None:
    """Print the table, the ratios and the goals; write bench/results.json."""
    ratios = ratios_of(results)
    lookup_overhead = lookup_overhead_of(results)
    goals = goals_of(ratios, lookup_overhead, pooled_errors_of(results))
    # Issue 19: (h), (i), (l), and (k) on a run with --events 10000000.
    scale_ratios = report_scale.ratios_of(results)
    goals.update(report_scale.goals_of(scale_ratios, ratios, _goal))
    ratios.update(scale_ratios)
    workers = results.get("gunicorn_workers_kb", {})
    peak_kb = max((m.get("VmHWM", 0) for m in workers.values()), default=0)

    rows = table_rows(results) + report_scale.table_rows(results)
    webhook_row = webhooks.table_row(results)
    if webhook_row is not None:
        rows.append(webhook_row)
    header = ("", "figure", "req/s", "events/s", "p50 ms", "p99 ms", "CPU ms", "notes")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for name, value in ratios.items():
        print(f"{name:>20}: {value}")
    if lookup_overhead is not None:
        print(f"{'lookup p50 - ATS':>20}: {lookup_overhead} ms")
    print(f"{'peak worker RSS':>20}: {peak_kb / 1024:.1f} MiB (VmHWM, max over gunicorn workers)")
    for name, goal in goals.items():
        print(f"{name:>30}: {goal['status']} ({goal['value']})")
    load = results.get("load_average", {})
    print(
        f"\nwhole run: {seconds:.0f} s; load average {load.get('start')} -> {load.get('end')}; "
        f"CPU stolen by the hypervisor: {results.get('cpu_steal_s')} s"
    )

    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_1_5_15min": results.get("load_average"),
            "cpu_steal_s_during_run": results.get("cpu_steal_s"),
        },
        "config": {
            "database": DB_NAME,
            "events": EVENTS,
            "gunicorn_workers": args.workers,
            "gunicorn_worker_class": args.worker_class,
            "wrk_connections": args.connections,
            "wrk_threads": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "batch_size": BATCH,
            "lookups": args.lookups,
            "ats_delay_ms": args.ats_delay_ms,
        },
        "seed": seed_info,
        "figures": {key: results.get(key) for key in TABLE},
        # (w): Twilio status callbacks through the webhook, beside (d) (bench/webhooks.py).
        "webhooks": results.get("w"),
        "pgbouncer": results.get("pgbouncer"),
        # Issue 19: (h) late events, (i) reads under ingestion, (l) the retention purge.
        "late_events": results.get("h"),
        "state_under_ingestion": results.get("i"),
        "purge": results.get("l"),
        "raw_insert_copy": results.get("f_copy"),
        "ratios": ratios,
        "lookup_p50_minus_ats_ms": lookup_overhead,
        "goals": goals,
        "gunicorn_workers_memory_kb": workers,
        "profiles": results.get("profiles"),
        "gunicorn_worker_peak_rss_mib": round(peak_kb / 1024, 1),
        "gunicorn_worker_peak_rss_kb_after_each_phase": results.get("worker_peak_rss_kb_after"),
        "run_seconds": round(seconds, 1),
        "cleanup": cleanup,
    }
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(ROOT)}")
