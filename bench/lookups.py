"""Figure (g): forced delivery lookups, request to result, against the local ATS over HTTP."""

from __future__ import annotations

import http.client
import json
import statistics
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from bench.ats_stub import AtsStub
from bench.config import BROKER_URL, LOOKUP_CUSTOMER, LOOKUP_PHONE, NAMES, ROOT, log
from bench.context import Bench


def add_ats_history(ats: AtsStub, started: datetime) -> None:
    """What the ATS knows about the lookup customer's number: a filtered send, then a delivery."""
    history = ((300, "failed", 30007), (120, "sent", None), (30, "delivered", None))
    for minutes_ago, status, error_code in history:
        ats.add_message(
            to=LOOKUP_PHONE,
            status=status,
            error_code=error_code,
            created_at=started - timedelta(minutes=minutes_ago),
        )


def lookups_available() -> str | None:
    """Return why figure (g) can't run, or None when the lookup API and task exist."""
    import redis

    try:
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis is not answering at {BROKER_URL} ({type(exc).__name__})"
    tasks = ROOT / "twosv" / "tasks.py"
    if not tasks.exists() or "delivery_lookup_run" not in tasks.read_text():
        return "twosv/tasks.py has no delivery_lookup_run yet"
    from django.urls import Resolver404, resolve

    try:
        resolve(f"/api/v1/customers/{LOOKUP_CUSTOMER}/twosv/delivery-lookups/")
        resolve(f"/api/v1/twosv/delivery-lookups/{uuid.uuid4()}/")
    except Resolver404:
        return "the delivery-lookup endpoints are not routed yet"
    return None


def _json_request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    from bench import seed

    headers = {"Authorization": f"Token {seed.AGENT_TOKEN}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    return response.status, json.loads(payload) if payload else None


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def measure_lookups(port: int, ats: AtsStub, count: int) -> dict[str, Any]:
    """Run `count` forced lookups one after another; time POST -> GET that shows it finished."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    post_path = f"/api/v1/customers/{LOOKUP_CUSTOMER}/twosv/delivery-lookups/"
    totals: list[float] = []
    ats_times: list[float] = []
    server_times: list[float] = []
    statuses: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    polls: list[int] = []
    post_times: list[float] = []
    queue_waits: list[float] = []
    run_times: list[float] = []
    body = {"method_id": f"{LOOKUP_CUSTOMER}-primary", "force": True}
    for _ in range(3):
        # Warm-up, not timed: the worker may still be starting, and each process's first
        # lookup pays for imports and connections.
        status, created = _json_request(conn, "POST", post_path, body)
        deadline = time.perf_counter() + 120
        while created and time.perf_counter() < deadline:
            _, lookup = _json_request(
                conn, "GET", f"/api/v1/twosv/delivery-lookups/{created['id']}/"
            )
            if lookup.get("status") in ("succeeded", "failed"):
                break
            time.sleep(0.01)
    ats_base = ats.request_count()
    for i in range(count):
        before = ats.request_count()
        started = time.perf_counter()
        status, created = _json_request(conn, "POST", post_path, body)
        post_times.append(time.perf_counter() - started)
        if status not in (200, 201, 202) or not created or "id" not in created:
            raise RuntimeError(f"lookup request {i} answered {status}: {created}")
        path = f"/api/v1/twosv/delivery-lookups/{created['id']}/"
        n_polls = 0
        while True:
            status, lookup = _json_request(conn, "GET", path)
            n_polls += 1
            if status != 200:
                raise RuntimeError(f"lookup {created['id']} answered {status}: {lookup}")
            if lookup.get("status") in ("succeeded", "failed"):
                break
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"lookup {created['id']} not finished after 60 s: {lookup}")
            time.sleep(0.002)
        totals.append(time.perf_counter() - started)
        polls.append(n_polls)
        ats_times.append(sum(ats.timings_since(before)))
        statuses[lookup["status"]] = statuses.get(lookup["status"], 0) + 1
        verdict = lookup.get("verdict") or "-"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        stamps = {
            key: datetime.fromisoformat(lookup[key].replace("Z", "+00:00"))
            for key in ("created_at", "started_at", "finished_at")
            if lookup.get(key)
        }
        if len(stamps) == 3:
            server_times.append((stamps["finished_at"] - stamps["created_at"]).total_seconds())
            queue_waits.append((stamps["started_at"] - stamps["created_at"]).total_seconds())
            run_times.append((stamps["finished_at"] - stamps["started_at"]).total_seconds())
    conn.close()

    return {
        "lookups": count,
        "p50_ms": round(statistics.median(totals) * 1000, 2),
        "p99_ms": _ms(totals, 0.99),
        "mean_ms": round(statistics.fmean(totals) * 1000, 2),
        "ats_p50_ms": round(statistics.median(ats_times) * 1000, 3),
        "ats_p99_ms": _ms(ats_times, 0.99),
        "ats_requests": ats.request_count() - ats_base,
        "post_p50_ms": _ms(post_times, 0.5),
        "server_created_to_finished_p50_ms": _ms(server_times, 0.5),
        "server_created_to_started_p50_ms": _ms(queue_waits, 0.5),
        "server_started_to_finished_p50_ms": _ms(run_times, 0.5),
        "polls_p50": statistics.median(polls),
        "statuses": statuses,
        "verdicts": verdicts,
    }


def measure_lookup_figure(bench: Bench, ats: AtsStub, skip: str | None) -> None:
    """Figure (g) into bench.results, or why it was skipped."""
    if skip is None:
        log(f"(g) {NAMES['g']}: {bench.args.lookups} forced lookups ...")
        bench.results["g"] = measure_lookups(bench.port, ats, bench.args.lookups)
        log(f"(g) {json.dumps(bench.results['g'])}")
        bench.snapshot("g")
    else:
        log(f"(g) skipped: {skip}")
        bench.results["g"] = {"skipped": skip}
