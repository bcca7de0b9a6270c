"""The issue-19 figures in the run's summary: (h), (i), (k) and (l), their ratios and goals,
and their rows of the printed table (bench/report.py calls these)."""

from __future__ import annotations

from typing import Any

from bench.config import EVENTS, GOALS, NAMES

# (k): the same goals as (b)/(a) and (e)/(f), judged on a run with ten times the events.
K_EVENTS = 10_000_000


def ratios_of(results: dict[str, Any]) -> dict[str, float | None]:
    h, i, l_ = results.get("h") or {}, results.get("i") or {}, results.get("l") or {}
    e = results.get("e") or {}
    purge, ingest = l_.get("events_per_s"), e.get("events_per_s")
    return {
        "h_late_over_in_order": h.get("late_over_in_order"),
        "h_api_late_over_in_order": h.get("api_late_over_in_order"),
        "i_state_p99_loaded_over_idle": i.get("loaded_over_idle_p99"),
        "l_purge_over_e_events": round(purge / ingest, 2) if purge and ingest else None,
    }


def goals_of(
    ratios: dict[str, float | None], base: dict[str, float | None], goal: Any
) -> dict[str, Any]:
    """The goals of (h), (i), (l), and (k) when this run has ten times the events; `goal` is
    report._goal and `base` the run's other ratios."""
    goals = {
        "h_late_over_in_order_le_2": goal(
            ratios["h_late_over_in_order"], GOALS["late_vs_in_order"], "le"
        ),
        "i_state_p99_loaded_over_idle_le_3": goal(
            ratios["i_state_p99_loaded_over_idle"], GOALS["state_p99_loaded_vs_idle"], "le"
        ),
        "l_purge_over_e_ge_10": goal(
            ratios["l_purge_over_e_events"], GOALS["purge_vs_batch_ingest"], "ge"
        ),
    }
    if EVENTS >= K_EVENTS:
        goals["k_b_over_a_p50_le_1.1_10m_events"] = goal(
            base["b_over_a_p50"], GOALS["big_vs_typical_p50"], "le"
        )
        goals["k_e_over_f_ge_0.25_10m_events"] = goal(
            base["e_over_f_events"], GOALS["batch_vs_raw_insert"], "ge"
        )
    return goals


def table_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows for (h), (i) and (l): name, req/s, events/s, p50, p99, CPU ms, notes."""
    rows: list[tuple[str, ...]] = []
    h, i, l_ = results.get("h"), results.get("i"), results.get("l")
    if h:
        note = (
            f"in-order p50 {h['in_order_p50_ms']} ms, late {h['late_p50_ms']} ms "
            f"(ratio {h['late_over_in_order']}); through the API {h['api_in_order_p50_ms']} / "
            f"{h['api_late_p50_ms']} ms"
        )
        rows.append(("(h)", NAMES["h"], "-", "-", str(h["late_p50_ms"]), "-", "-", note))
    if i:
        note = (
            f"idle p99 {i['idle_p99_ms']} ms, loaded {i['loaded_p99_ms']} ms "
            f"(ratio {i['loaded_over_idle_p99']}); {i['errors']} errors"
        )
        rows.append(
            (
                "(i)",
                NAMES["i"],
                "-",
                f"{i['ingest_events_per_s']:,.0f}",
                str(i["loaded_p50_ms"]),
                str(i["loaded_p99_ms"]),
                "-",
                note,
            )
        )
    if l_:
        note = (
            f"{l_['events_purged']:,} events of {l_['horizons_moved']:,} methods in "
            f"{l_['seconds']} s (horizons {l_['horizons_s']} s, deletes {l_['deletes_s']} s)"
        )
        rows.append(("(l)", NAMES["l"], "-", f"{l_['events_per_s']:,.0f}", "-", "-", "-", note))
    return rows
