"""Seed the bench database: 10,000 customers, 1,000,000 events, one with 100,000 on one method
(``--events N``: N events and N/100 customers, in a database of their own; the big method keeps
100,000).

Rows are generated in Python and loaded with COPY; nothing goes through the API. Every method's
projection (resend_times, lock, last event key), every event's outcome and the method's
checkpoints (one every ``TWOSV_CHECKPOINT_EVERY`` events, and ``checkpoint_lag``) come from
folding that method's generated events (`bench.seed_fold`, checked against
``twosv.policy.fold_from``), exactly what live ingestion would have stored. A marker table
(``bench_seed``) records a finished seed, so a re-run skips it.

Call with Django set up on the bench database (bench/run.py does).
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from rest_framework.authtoken.models import Token

from bench.config import EVENTS
from bench.seed_fold import (
    CHECKPOINT_COLUMNS,
    SECOND,
    Folded,
    check_fold,
    checkpoint_lines,
    fast_fold,
    micros,
    moment,
    ts,
)
from twosv import policy
from twosv.selectors import lock_policy

# 2: checkpoints and checkpoint_lag seeded as live ingestion writes them; lock_blocked.
SEED_VERSION = 2
N_EVENTS = EVENTS
N_CUSTOMERS = max(10_000, N_EVENTS // 100)
BIG_EVENTS = 100_000
BIG_CUSTOMER = "bench-big"
# A regular customer with the big one's shape (SMS primary, hidden authenticator backup) and
# a typical history (~90 events): figure (a) reads it, figure (b) reads the big one.
TYPICAL_CUSTOMER = "bench-typical"
AGENT = "bench-agent"
PRODUCER = "bench-producer"
AGENT_TOKEN = "bench0agent0token000000000000000000000001"[:40]
PRODUCER_TOKEN = "bench0producer0token00000000000000000002"[:40]
MARKER_TABLE = "bench_seed"

CODE_KINDS = ("sms", "voice", "email")
EVENT_COLUMNS = (
    "event_id",
    "type",
    "customer_id",
    "method_id",
    "occurred_at",
    "received_at",
    "data",
    "outcome",
)
METHOD_COLUMNS = (
    "id",
    "customer_id",
    "method_id",
    "kind",
    "role",
    "phone_number",
    "email",
    "label",
    "visible_in_crm",
    "enrolled_at",
    "phone_changed_at",
    "resend_times",
    "locked_at",
    "locked_until",
    "lock_lifted_at",
    "last_event_at",
    "last_event_id",
    "lock_blocked",
    "checkpoint_lag",
)
FLUSH_BYTES = 32 * 1024 * 1024


@dataclass
class MethodSeed:
    pk: int
    customer_pk: int
    method_id: str
    kind: str
    role: str
    quota: int
    start: datetime
    phone_number: str = ""
    email: str = ""
    label: str = ""
    bursts: list[datetime] = field(default_factory=list)


def seeded() -> dict | None:
    """Return the marker row of a finished seed of this version, or None."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [MARKER_TABLE])
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(
            f"SELECT version, seeded_at, params FROM {MARKER_TABLE} ORDER BY seeded_at DESC LIMIT 1"
        )
        row = cursor.fetchone()
    if row is None or row[0] != SEED_VERSION:
        return None
    params = json.loads(row[2]) if isinstance(row[2], str) else row[2]
    # Seeded checkpoints are spaced as live ingestion spaces them: a new spacing is a new seed.
    if params.get("events") != N_EVENTS or params.get("checkpoint_every") != checkpoint_every():
        return None
    return {"version": row[0], "seeded_at": row[1].isoformat(), "params": params}


def clear_outdated(*, log: Callable[[str], None] = print) -> None:
    """Empty the seeded tables when an older seed (or another size) left rows in them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM twosv_customer)")
        if not cursor.fetchone()[0]:
            return
        log("seed: the database holds an outdated seed; emptying it")
        cursor.execute(
            "TRUNCATE twosv_customer, twosv_method, twosv_event, twosv_methodcheckpoint "
            "RESTART IDENTITY CASCADE"
        )
        cursor.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")


def ensure_users() -> None:
    """Create the bench's agent and producer with fixed tokens (idempotent)."""
    for username, group, key in (
        (AGENT, "support_agent", AGENT_TOKEN),
        (PRODUCER, "event_producer", PRODUCER_TOKEN),
    ):
        user, _ = User.objects.get_or_create(username=username)
        user.groups.set([Group.objects.get(name=group)])
        Token.objects.filter(user=user).exclude(key=key).delete()
        Token.objects.get_or_create(user=user, defaults={"key": key})


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return f"+9198{rng.randrange(10**8):08d}"
    area = rng.choice((415, 212, 303, 617, 206))
    return f"+1{area}{rng.randrange(2, 10)}{rng.randrange(10**6):06d}"


def _quotas(rng: random.Random, n: int, total: int) -> list[int]:
    """Split `total` events over `n` customers: ~total/n each, +-40, summing exactly to total."""
    base, extra = divmod(total, n)
    quotas = [base + (1 if i < extra else 0) for i in range(n)]
    for i in range(0, n - 1, 2):
        shift = rng.randint(-40, 40)
        quotas[i] += shift
        quotas[i + 1] -= shift
    return quotas


def _plan(now: datetime, rng: random.Random) -> tuple[list[tuple[int, str, str]], list[MethodSeed]]:
    """Return the customers (pk, customer_id, display_name) and their methods with quotas."""
    customers: list[tuple[int, str, str]] = []
    methods: list[MethodSeed] = []
    regular = N_CUSTOMERS - 1
    quotas = _quotas(rng, regular, N_EVENTS - BIG_EVENTS)

    def add_methods(pk: int, customer_id: str, quota: int, shape: str | None, days: int) -> None:
        start = now - timedelta(days=days, seconds=rng.randrange(86400))
        backup_kind: str | None
        if shape == "sms+app":
            primary_kind, backup_kind = "sms", "authenticator_app"
        else:
            primary_kind = rng.choices(
                ("sms", "voice", "email", "authenticator_app"), (70, 5, 10, 15)
            )[0]
            backup_kind = (
                rng.choice(("sms", "authenticator_app", "security_key"))
                if rng.random() < 0.4
                else None
            )
        backup_quota = max(1, quota // 10) if backup_kind else 0
        for role, kind, q in (
            ("primary", primary_kind, quota - backup_quota),
            ("backup", backup_kind, backup_quota),
        ):
            if kind is None:
                continue
            seed = MethodSeed(
                pk=len(methods) + 1,
                customer_pk=pk,
                method_id=f"{customer_id}-{role}",
                kind=kind,
                role=role,
                quota=q,
                start=start + timedelta(minutes=5 if role == "backup" else 0),
                label="Phone" if kind in ("sms", "voice") else kind.replace("_", " ").title(),
            )
            if kind in ("sms", "voice"):
                seed.phone_number = _phone(rng)
            elif kind == "email":
                seed.email = f"{customer_id}@example.com"
            methods.append(seed)

    for i in range(regular):
        pk = i + 1
        customer_id = TYPICAL_CUSTOMER if i == 0 else f"bench-c{i:05d}"
        customers.append((pk, customer_id, f"Bench customer {i}"))
        add_methods(pk, customer_id, quotas[i], "sms+app" if i == 0 else None, rng.randint(30, 730))
    big_pk = N_CUSTOMERS
    customers.append((big_pk, BIG_CUSTOMER, "Bench customer with 100,000 events"))
    start = now - timedelta(days=730)
    methods.append(
        MethodSeed(
            pk=len(methods) + 1,
            customer_pk=big_pk,
            method_id=f"{BIG_CUSTOMER}-primary",
            kind="sms",
            role="primary",
            quota=BIG_EVENTS - 1,
            start=start,
            phone_number=_phone(rng),
            label="Phone",
            # Historical resend storms: each locked the method for a day, long ago.
            bursts=[now - timedelta(days=d) for d in (400, 200, 90)],
        )
    )
    methods.append(
        MethodSeed(
            pk=len(methods) + 1,
            customer_pk=big_pk,
            method_id=f"{BIG_CUSTOMER}-backup",
            kind="authenticator_app",
            role="backup",
            quota=1,
            start=start + timedelta(minutes=5),
            label="Authenticator App",
        )
    )
    return customers, methods


def _session(rng: random.Random, kind: str) -> list[str]:
    """Return the event types of one sign-in: a code sent, maybe resends, usually verified."""
    if kind not in CODE_KINDS:
        return ["code_rejected", "code_verified"] if rng.random() < 0.1 else ["code_verified"]
    types = ["code_sent"]
    roll = rng.random()
    resends = 0 if roll < 0.6 else 1 if roll < 0.85 else rng.randint(2, 5)
    types += ["code_resend_requested"] * resends
    if rng.random() < 0.1:
        types.append("code_rejected")
    if rng.random() < 0.9:
        types.append("code_verified")
    return types


def _method_events(m: MethodSeed, now: datetime, rng: random.Random) -> list[tuple[str, int, str]]:
    """Return (type, occurred_at in epoch microseconds, data as JSON) for the method, in order:
    its enrolment, then sign-ins (and any resend storms) up to its quota."""
    enrol_data: dict = {"method_id": m.method_id, "kind": m.kind, "role": m.role}
    if m.phone_number:
        enrol_data["phone_number"] = m.phone_number
    if m.email:
        enrol_data["email"] = m.email
    enrol_data |= {"label": m.label, "visible_in_crm": m.role == "primary"}
    start = micros(m.start)
    events = [("method_enrolled", start, json.dumps(enrol_data))]

    remaining = m.quota - 1
    storms: list[list[str]] = []
    for _ in m.bursts:
        # More than the threshold: the 201st locks, the rest are blocked.
        storms.append(["code_sent"] + ["code_resend_requested"] * 230)
        remaining -= 231
    plain: list[list[str]] = []
    while remaining > 0:
        types = _session(rng, m.kind)[:remaining]
        if m.kind in ("sms", "voice") and rng.random() < 0.003:
            types = ["phone_number_changed", *types][:remaining]
        plain.append(types)
        remaining -= len(types)
    # Sign-ins spread from enrolment to two hours ago; storms at their own times.
    first, end = start + 60 * SECOND, micros(now) - 7200 * SECOND
    timeline = sorted(
        [(rng.randrange(first, end), types) for types in plain]
        + [(micros(t), types) for t, types in zip(m.bursts, storms, strict=True)],
        key=lambda pair: pair[0],
    )
    plain_data = json.dumps({"method_id": m.method_id})
    last = start
    for t, types in timeline:
        for step, event_type in enumerate(types):
            last = max(t + 15 * SECOND * step, last + 1000)
            if event_type == "phone_number_changed":
                data = json.dumps({"method_id": m.method_id, "phone_number": _phone(rng)})
            else:
                data = plain_data
            events.append((event_type, last, data))
    return events


_DAYS: dict[int, str] = {}
DAY = 86400 * SECOND


def _iso(micros: int) -> str:
    """Return ``moment(micros).isoformat()`` for COPY, about five times faster."""
    day, rest = divmod(micros, DAY)
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = _DAYS[day] = moment(day * DAY).strftime("%Y-%m-%dT")
    seconds, fraction = divmod(rest, SECOND)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{prefix}{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:06d}+00:00"


COPY_SECONDS = [0.0]


def _copy(cursor: Any, table: str, columns: tuple[str, ...], buffer: io.StringIO) -> None:
    started = time.perf_counter()
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
    COPY_SECONDS[0] += time.perf_counter() - started


def _drop_event_indexes(cursor: CursorWrapper) -> list[str]:
    """Drop twosv_event's indexes and unique constraints but its primary key; return the
    statements that recreate them."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'twosv_event'::regclass AND contype = 'u'"
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = 'twosv_event'::regclass AND NOT x.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
    )
    indexes = cursor.fetchall()
    for name, _ in constraints:
        cursor.execute(f'ALTER TABLE twosv_event DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    return [
        *(
            f'ALTER TABLE twosv_event ADD CONSTRAINT "{name}" {definition}'
            for name, definition in constraints
        ),
        *(definition for _, definition in indexes),
    ]


def checkpoint_every() -> int:
    from twosv.services.checkpoints import checkpoint_every as every

    return every()


def _method_line(
    m: MethodSeed,
    events: list[tuple[str, int, str]],
    fast: Folded,
    phone_number: str,
    phone_changed_at: int,
    every: int,
) -> str:
    """The method's row for COPY into twosv_method (METHOD_COLUMNS)."""
    lock = fast.lock
    values = (
        str(m.pk),
        str(m.customer_pk),
        m.method_id,
        m.kind,
        m.role,
        phone_number,
        m.email,
        m.label,
        "t" if m.role == "primary" else "f",
        m.start.isoformat(),
        ts(phone_changed_at),
        json.dumps([moment(t).isoformat() for t in fast.resends]),
        ts(lock[0] if lock else None),
        ts(lock[1] if lock else None),
        "\\N",
        ts(events[-1][1]),
        f"{m.method_id}-e{len(events) - 1:06d}",
        str(lock[2] if lock else 0),
        # Events folded since the last checkpoint, as ingestion counts them.
        str(len(events) % every if every else 0),
    )
    return "\t".join(values) + "\n"


def seed(*, log: Callable[[str], None] = print) -> dict:
    """Load the whole data set into an empty (just migrated) bench database; return its figures."""
    started = time.perf_counter()
    rng = random.Random(20240601)
    now = datetime.now(UTC).replace(microsecond=0)
    rules = lock_policy()
    customers, methods = _plan(now, rng)
    log(f"seed: {len(customers):,} customers, {len(methods):,} methods, {N_EVENTS:,} events")

    ensure_users()
    checked = 0
    with transaction.atomic(), connection.cursor() as cursor:
        pg = cursor.cursor  # the psycopg2 cursor, for copy_expert
        # The generated rows are consistent by construction; skip the per-row FK triggers.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        # Building the event table's indexes once after the load is several times faster than
        # maintaining them row by row; they come back exactly as the migrations defined them.
        rebuild = _drop_event_indexes(cursor)
        buffer = io.StringIO()
        for pk, customer_id, name in customers:
            buffer.write(f"{pk}\t{customer_id}\t{name}\t{now.isoformat()}\n")
        _copy(pg, "twosv_customer", ("id", "customer_id", "display_name", "created_at"), buffer)

        method_rows, checkpoint_rows = io.StringIO(), io.StringIO()
        buffer = io.StringIO()
        n_events = 0
        outcome_counts: dict[str, int] = {}
        every = checkpoint_every()
        for index, m in enumerate(methods):
            events = _method_events(m, now, rng)
            fast = fast_fold(events, rules, every)
            if m.bursts or index % 50 == 0:
                check_fold(m.method_id, events, rules, every, fast)
                checked += 1
            phone_number, phone_changed_at = m.phone_number, events[0][1]
            prefix = f"{m.method_id}-e"
            ids = f"\t{m.customer_pk}\t{m.pk}\t"
            for n, (event_type, t, data) in enumerate(events):
                if event_type == "phone_number_changed":
                    phone_number, phone_changed_at = json.loads(data)["phone_number"], t
                at = _iso(t)
                outcome = fast.outcomes[n]
                buffer.write(f"{prefix}{n:06d}\t{event_type}{ids}{at}\t{at}\t{data}\t{outcome}\n")
            for outcome in fast.outcomes:
                outcome_counts[outcome] = outcome_counts.get(outcome, 0) + 1
            if fast.checkpoints:
                event_ids = [f"{prefix}{n:06d}" for n in range(len(events))]
                times = [t for _, t, _ in events]
                checkpoint_rows.write(checkpoint_lines(m.pk, event_ids, times, fast))
            n_events += len(events)
            method_rows.write(_method_line(m, events, fast, phone_number, phone_changed_at, every))
            if buffer.tell() > FLUSH_BYTES:
                _copy(pg, "twosv_event", EVENT_COLUMNS, buffer)
                buffer = io.StringIO()
                log(
                    f"seed: {n_events:,} events loaded ({time.perf_counter() - started:.0f} s, "
                    f"{COPY_SECONDS[0]:.0f} s of it in COPY)"
                )
        _copy(pg, "twosv_event", EVENT_COLUMNS, buffer)
        _copy(pg, "twosv_method", METHOD_COLUMNS, method_rows)
        _copy(pg, "twosv_methodcheckpoint", CHECKPOINT_COLUMNS, checkpoint_rows)
        log(f"seed: rows loaded ({time.perf_counter() - started:.0f} s); rebuilding indexes ...")
        for statement in rebuild:
            cursor.execute(statement)
        for table in ("twosv_customer", "twosv_method"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        assert n_events == N_EVENTS, n_events
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} "
            "(version int NOT NULL, seeded_at timestamptz NOT NULL, params jsonb NOT NULL)"
        )
        params: dict = {
            "customers": len(customers),
            "methods": len(methods),
            "events": n_events,
            "big_customer_events": BIG_EVENTS,
            "outcomes": outcome_counts,
            "methods_checked_against_policy_fold": checked,
            "checkpoint_every": every,
            "checkpoints": checkpoint_rows.getvalue().count("\n"),
        }
        cursor.execute(
            f"INSERT INTO {MARKER_TABLE} VALUES (%s, now(), %s)", [SEED_VERSION, json.dumps(params)]
        )
    log(f"seed: loaded in {time.perf_counter() - started:.1f} s; vacuum analyze ...")
    connection.close()
    with connection.cursor() as cursor:  # autocommit outside atomic(): VACUUM may run
        cursor.execute(
            "VACUUM ANALYZE twosv_customer, twosv_method, twosv_event, twosv_methodcheckpoint"
        )
    for method_id in (f"{BIG_CUSTOMER}-primary", f"{TYPICAL_CUSTOMER}-primary"):
        verify_projection(method_id)
    log("seed: stored projections of the big and the typical method match a re-fold")
    params["seconds"] = round(time.perf_counter() - started, 1)
    log(f"seed: done in {params['seconds']} s")
    return params


def verify_projection(method_id: str) -> None:
    """Assert that the method's stored projection, its events' outcomes and its checkpoints
    are what policy.fold_from makes of the events stored in the database."""
    from twosv.models import Event, Method, MethodCheckpoint
    from twosv.selectors import method_projection
    from twosv.services.checkpoints import checkpoint_projection

    method = Method.objects.get(method_id=method_id)
    rows = list(
        Event.objects.filter(method=method).values_list(
            "event_id", "type", "occurred_at", "outcome"
        )
    )
    projection, outcomes, checkpoints = policy.fold_from(
        policy.EMPTY,
        (policy.FoldEvent(event_id, kind, at) for event_id, kind, at, _ in rows),
        lock_policy(),
        checkpoint_every(),
    )
    assert method_projection(method) == projection, method_id
    stored_checkpoints = MethodCheckpoint.objects.filter(method=method).order_by("event_at")
    assert [checkpoint_projection(c) for c in stored_checkpoints] == checkpoints, method_id
    assert method.checkpoint_lag == len(outcomes) % (checkpoint_every() or len(outcomes) + 1)
    stored = {event_id: outcome for event_id, _, _, outcome in rows}
    assert all(stored[e.event_id] == o.value for e, o in outcomes), method_id
