"""Figures (a), (b), (c) and (s): the GET figures, measured in interleaved rounds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import load_average, log
from bench.context import Bench
from bench.load import add_cpu, lua_script, merge_rounds, run_wrk
from bench.servers import CpuMeter


def get_paths() -> dict[str, str]:
    """The path each GET figure reads (Django set up: the seed's customers)."""
    from bench import seed

    return {
        "c": "/bench/floor/",
        "a": f"/api/v1/customers/{seed.TYPICAL_CUSTOMER}/twosv/",
        "b": f"/api/v1/customers/{seed.BIG_CUSTOMER}/twosv/",
        "s": f"/bench/state-without-audit/{seed.TYPICAL_CUSTOMER}/",
    }


def get_script(scripts: Path, *, keepalive: bool) -> Path:
    """Write the GET figures' wrk script into `scripts`; return its path."""
    from bench import seed

    return lua_script(
        scripts,
        "get",
        # A connection per request: with keep-alive each wrk connection stays on the worker
        # that accepted it, and 4 connections rarely land one per single-threaded worker,
        # so a round's p50 depended on that draw ((a) 8.7 to 31 ms between rounds).
        "" if keepalive else 'wrk.headers["Connection"] = "close"\n',
        TOKEN=seed.AGENT_TOKEN,
    )


def measure_gets(
    bench: Bench,
    keys: str,
    *,
    port: int | None = None,
    app_pids: Callable[[], list[int]] | None = None,
    suffix: str = "",
) -> None:
    """Measure the GET figures in interleaved rounds (c a b c a b ...), so that a load change
    on the machine during the run hits all of them alike; store them in bench.results.

    By default against the bench's gunicorn; `port` and `app_pids` (whose CPU counts as the
    app's) measure another server, whose figures are stored as ``<key><suffix>``.
    """
    args = bench.args
    paths = get_paths()
    port = bench.port if port is None else port
    app_pids = bench.gunicorn.children if app_pids is None else app_pids

    def wrk(key: str, seconds: float) -> dict[str, Any]:
        return run_wrk(
            bench.wrk,
            port,
            paths[key],
            bench.get_script,
            seconds=seconds,
            connections=bench.threads,
        )

    for key in keys:
        wrk(key, args.warmup)
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    meters = {key: CpuMeter(app_pids) for key in keys}
    for n in range(args.rounds):
        for key in keys:
            with meters[key]:
                rounds[key].append(wrk(key, max(1, round(args.duration / args.rounds))))
        log(
            f"round {n + 1}/{args.rounds}: "
            + ", ".join(f"({k}{suffix}) p50 {rounds[k][-1]['p50_ms']} ms" for k in keys)
            + f"; load {load_average()}"
        )
    for key in keys:
        result = merge_rounds(rounds[key])
        add_cpu(result, meters[key], result["requests"])
        bench.results[key + suffix] = result
        log(f"({key}{suffix}) {json.dumps(result)}")
