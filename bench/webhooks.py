"""Figure (w): Twilio status callbacks per second through the webhook, next to (d).

`POST /webhooks/twilio/message-status/`, form-encoded and signed by the twilio library's
`RequestValidator` as Twilio signs them: wrk can't compute HMAC-SHA1, so every body and its
signature are made beforehand (each of the load threads' messages gets a `sent` and then a
`delivered` callback, to its own method's number) and each wrk thread replays its own list.
Runs right after (d) when (d) is selected; the run's receipts are deleted afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.config import log
from bench.context import Bench
from bench.load import add_cpu, lua_script
from bench.servers import CpuMeter, wait_drained

NAME = "Twilio status callback, one a request"
PATH = "/webhooks/twilio/message-status/"
AUTH_TOKEN = "bench-twilio-auth-token"
CALLBACK_URL = "https://twosv.example.com/webhooks/twilio/message-status/"
# Callbacks made ready per load thread: more than a --duration run sends at these rates; the
# warm-up gets a set of its own, so the timed run's callbacks are all new receipts.
PER_THREAD = 12_000
WARM_PER_THREAD = 2_000

LUA_WEBHOOK = r"""
local bodies, signatures, n = {}, {}, 0
function init(args)
  for line in io.lines("@DIR@/@SET@-" .. tid .. ".txt") do
    local tab = string.find(line, "\t", 1, true)
    signatures[#signatures + 1] = string.sub(line, 1, tab - 1)
    bodies[#bodies + 1] = string.sub(line, tab + 1)
  end
end
request = function()
  n = n % #bodies + 1
  return wrk.format("POST", "@PATH@", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = signatures[n],
    ["Host"] = "127.0.0.1",
  }, bodies[n])
end
"""


def server_env() -> dict[str, str]:
    """What gunicorn needs to check the callbacks' signatures, and no throttle in the way."""
    return {
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_STATUS_CALLBACK_URL": CALLBACK_URL,
        "TWOSV_THROTTLE_TWILIO_WEBHOOK": "1000000/s",
    }


def _phone(tid: int) -> str:
    return f"+1415238{tid:04d}"


def _prepare(bench: Bench) -> None:
    """Enrol one method a load thread; write its signed callbacks, `sent` then `delivered`, for
    the warm-up (w-warm-<tid>.txt) and the timed run (w-timed-<tid>.txt)."""
    from twilio.request_validator import RequestValidator

    from bench.rundata import enrol

    validator = RequestValidator(AUTH_TOKEN)
    started = time.perf_counter()
    for tid in range(bench.threads):
        customer = f"bench-run-{bench.run}-w{tid}"
        enrol(customer, f"{customer}-m", _phone(tid), _now_minus_hours(3))
        _write(bench, tid, "w-warm", validator, range(WARM_PER_THREAD // 2))
        first = WARM_PER_THREAD // 2
        _write(bench, tid, "w-timed", validator, range(first, first + PER_THREAD // 2))
    seconds = time.perf_counter() - started
    made = bench.threads * (PER_THREAD + WARM_PER_THREAD)
    log(f"(w) {made:,} signed callbacks in {seconds:.1f} s")


def _write(bench: Bench, tid: int, name: str, validator: Any, numbers: range) -> None:
    lines = []
    for i in numbers:
        sid = f"SM{bench.run}{tid:04x}{i:020x}"
        for status in ("sent", "delivered"):
            fields = {
                "AccountSid": "AC" + "b" * 32,
                "ApiVersion": "2010-04-01",
                "From": "+14803605516",
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": _phone(tid),
            }
            signature = validator.compute_signature(CALLBACK_URL, fields)
            lines.append(f"{signature}\t{urlencode(fields)}")
    Path(bench.scripts / f"{name}-{tid}.txt").write_text("\n".join(lines) + "\n")


def _now_minus_hours(hours: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(hours=hours)


def _stored(run: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM twosv_deliveryreceipt r JOIN twosv_twiliomessage m "
            "ON m.id = r.message_id WHERE m.message_sid LIKE %s",
            [f"SM{run}%"],
        )
        row = cursor.fetchone()
    connection.close()
    return int(row[0]) if row else 0


def cleanup() -> dict[str, int]:
    """Delete the receipts of every bench run (before the run's methods go)."""
    from django.db import connection, transaction

    deleted = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for name, table in (
            ("receipts", "twosv_deliveryreceipt"),
            ("messages", "twosv_twiliomessage"),
        ):
            cursor.execute(
                f"DELETE FROM {table} WHERE method_id IN "  # constant table names
                "(SELECT m.id FROM twosv_method m JOIN twosv_customer c ON c.id = m.customer_id "
                "WHERE c.customer_id LIKE 'bench-run-%%')"
            )
            deleted[name] = cursor.rowcount
    connection.close()
    return deleted


def measure_webhooks(bench: Bench) -> None:
    """Figure (w) into bench.results["w"], with its ratio to (d)'s events per second."""
    args = bench.args
    log(f"(w) {NAME} ...")
    cleanup()
    _prepare(bench)
    common = {"TOKEN": "-", "DIR": bench.scripts, "PATH": PATH}
    warm = lua_script(bench.scripts, "w-warm", LUA_WEBHOOK, SET="w-warm", **common)
    script = lua_script(bench.scripts, "w-timed", LUA_WEBHOOK, SET="w-timed", **common)
    bench.wrk_run(PATH, warm, seconds=args.warmup)
    wait_drained(bench.gunicorn.children)
    before = _stored(bench.run)
    began = time.perf_counter()
    with CpuMeter(bench.gunicorn.children) as meter:
        result = bench.wrk_run(PATH, script, seconds=args.duration)
        wait_drained(bench.gunicorn.children)
    elapsed = time.perf_counter() - began
    stored = _stored(bench.run) - before
    result["callbacks_per_s"] = result["rps"]
    result["stored_receipts"] = stored
    result["receipts_per_s"] = round(stored / elapsed, 1)
    result["elapsed_s"] = round(elapsed, 3)
    add_cpu(result, meter, result["requests"])
    d_rate = (bench.results.get("d") or {}).get("events_per_s")
    result["w_over_d"] = round(result["rps"] / d_rate, 3) if d_rate else None
    bench.results["w"] = result
    result["cleanup"] = cleanup()
    log(f"(w) {json.dumps(result)}")
    bench.snapshot("w")


def table_row(results: dict[str, Any]) -> tuple[str, ...] | None:
    """(w)'s row of the printed table, when it ran."""
    r = results.get("w")
    if not r:
        return None
    return (
        "(w)",
        NAME,
        f"{r['rps']:,.0f}",
        "-",
        str(r.get("p50_ms") or "-"),
        str(r.get("p99_ms") or "-"),
        str(r.get("cpu_ms_per_request", "-")),
        f"{r['stored_receipts']:,} stored; {r['errors']} errors ({r['non_2xx']} non-2xx); "
        f"(w)/(d) {r['w_over_d']}",
    )
