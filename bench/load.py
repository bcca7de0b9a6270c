"""The HTTP load generator: wrk, its Lua scripts, and merging the timed rounds' figures."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench.config import load_average
from bench.servers import CpuMeter

LUA_COMMON = r"""
wrk.headers["Authorization"] = "Token @TOKEN@"
wrk.headers["Content-Type"] = "application/json"
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"errors_connect\":%d," ..
    "\"errors_read\":%d,\"errors_write\":%d,\"errors_status\":%d,\"errors_timeout\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f,\"max_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

# Events in order on the thread's own method, one millisecond apart from @BASE@ (epoch seconds):
# a sign-in's code, a resend, the verification.
LUA_EVENTS = r"""
local counter = 0
local kinds = {"code_sent", "code_resend_requested", "code_verified"}
local function event()
  counter = counter + 1
  local customer = "bench-run-@RUN@-@PHASE@" .. tid
  local when = os.date("!%Y-%m-%dT%H:%M:%S", @BASE@ + math.floor(counter / 1000)) ..
    string.format(".%03dZ", counter % 1000)
  return string.format(
    "{\"event_id\":\"%s-@TAG@-%d-%d\",\"type\":\"%s\",\"customer_id\":\"%s\"," ..
    "\"occurred_at\":\"%s\",\"data\":{\"method_id\":\"%s-m\"}}",
    customer, tid, counter, kinds[(counter - 1) % 3 + 1], customer, when, customer)
end
"""

LUA_SINGLE = r"""
request = function()
  return wrk.format("POST", "/api/v1/events/", nil, event())
end
"""

LUA_BATCH = r"""
request = function()
  local parts = {}
  for i = 1, @BATCH@ do parts[i] = event() end
  return wrk.format("POST", "/api/v1/events/batch/", nil,
    "{\"events\":[" .. table.concat(parts, ",") .. "]}")
end
"""


def lua_script(directory: Path, name: str, body: str, **values: Any) -> Path:
    text = LUA_COMMON + body
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    path = directory / f"{name}.lua"
    path.write_text(text)
    return path


def run_wrk(
    wrk: str, port: int, path: str, script: Path, *, seconds: float, connections: int
) -> dict[str, Any]:
    argv = [
        wrk,
        f"-t{connections}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCHJSON "))
    stats = json.loads(line.removeprefix("BENCHJSON "))
    seconds_run = stats["duration_us"] / 1e6
    errors = sum(v for k, v in stats.items() if k.startswith("errors_"))
    return {
        "requests": stats["requests"],
        "seconds": round(seconds_run, 2),
        "rps": round(stats["requests"] / seconds_run, 1),
        "p50_ms": round(stats["p50_us"] / 1000, 2),
        "p90_ms": round(stats["p90_us"] / 1000, 2),
        "p99_ms": round(stats["p99_us"] / 1000, 2),
        "mean_ms": round(stats["mean_us"] / 1000, 2),
        "max_ms": round(stats["max_us"] / 1000, 2),
        "errors": errors,
        "non_2xx": stats["errors_status"],
        "load_after": load_average(),
    }


def add_cpu(result: dict[str, Any], meter: CpuMeter, count: int, unit: str = "request") -> None:
    """Add the app's and the database's CPU milliseconds per request (or event)."""
    if not count:
        return
    result[f"app_cpu_ms_per_{unit}"] = round(meter.app / count * 1000, 3)
    result[f"db_cpu_ms_per_{unit}"] = round(meter.db / count * 1000, 3)
    result[f"cpu_ms_per_{unit}"] = round((meter.app + meter.db) / count * 1000, 3)


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the rounds' requests; take the median of their percentiles."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    merged: dict[str, Any] = {"requests": requests, "seconds": round(seconds, 2)}
    merged["rps"] = round(requests / seconds, 1)
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        merged[key] = round(statistics.median(r[key] for r in rounds), 2)
    merged["max_ms"] = max(r["max_ms"] for r in rounds)
    merged["errors"] = sum(r["errors"] for r in rounds)
    merged["non_2xx"] = sum(r["non_2xx"] for r in rounds)
    merged["rounds"] = [{k: r[k] for k in ("requests", "rps", "p50_ms", "p99_ms")} for r in rounds]
    return merged


def merge_ingest_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the rounds' events and seconds; CPU per event weighted by events; the median of
    wrk's percentiles where there are any. Each round is kept under "rounds"."""
    merged: dict[str, Any] = {}
    events_key = "accepted_events" if "accepted_events" in rounds[0] else "events"
    events = sum(r[events_key] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    # Until the last event of a round was stored (wrk's seconds plus the drain), where known.
    elapsed = sum(r.get("elapsed_s", r["seconds"]) for r in rounds)
    merged[events_key] = events
    merged["seconds"] = round(seconds, 2)
    merged["events_per_s"] = round(events / elapsed, 1)
    if "requests" in rounds[0]:
        merged["requests"] = sum(r["requests"] for r in rounds)
        merged["rps"] = round(merged["requests"] / seconds, 1)
        merged["errors"] = sum(r["errors"] for r in rounds)
        merged["non_2xx"] = sum(r["non_2xx"] for r in rounds)
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            values = [r[key] for r in rounds if r.get(key) is not None]
            merged[key] = round(statistics.median(values), 2) if values else None
    for key in rounds[0]:
        if key.endswith("_ms_per_event") and events:
            merged[key] = round(sum(r[key] * r[events_key] for r in rounds) / events, 4)
    merged["rounds"] = rounds
    return merged
