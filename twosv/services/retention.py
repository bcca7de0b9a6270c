"""Retention (SPEC §8): purge old events after a checkpoint keeps their effect, old audit
entries, and the numbers of methods removed long ago.

One run (`retention_purge`, the periodic task's body) works within a time budget and leaves
the rest to the next run:

1. **Horizons.** For each method with events older than ``TWOSV_EVENT_RETENTION`` whose purge
   horizon lags by more than a day, under the method's row lock: fold from its latest
   checkpoint before the cutoff up to the cutoff, store that as the *horizon checkpoint* (the
   projection after every event that occurred before the cutoff), drop the older checkpoints,
   and set ``Method.purged_before`` to the cutoff. From then on an event that occurred before
   it is refused (``event_too_old``); any later one sorts after the horizon checkpoint, so
   a re-fold always finds a checkpoint to start from.
2. **Events** that occurred before their method's horizon, ``PURGE_BATCH`` rows a statement.
   They need no lock: nothing reads them any more (every re-fold starts at or after the
   horizon checkpoint).
3. **Audit entries** older than ``TWOSV_AUDIT_RETENTION``, in batches too.
4. **Numbers**: methods removed longer ago than the event retention lose their phone number
   and email (their events carrying them are purged by step 2).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.utils import timezone

from twosv import policy
from twosv.models import AuditEntry, Event, Method, MethodCheckpoint
from twosv.selectors import lock_policy, method_projection
from twosv.services import locking
from twosv.services.checkpoints import checkpoint_projection, checkpoint_row

# Rows deleted by one statement: big enough that a statement's overhead is small, small enough
# that one statement holds its row locks and WAL for well under a second (docs/performance.md).
PURGE_BATCH = 10_000
# Methods whose horizons move in one transaction (a handful of statements for all of them).
HORIZON_CHUNK = 500
# A method's horizon is moved only when it lags the cutoff by more than this: each method is
# re-folded up to its horizon about once a day, not at every run.
HORIZON_STEP = timedelta(days=1)
# A run stops starting new work after this; below CELERY_TASK_SOFT_TIME_LIMIT (45 s).
DEFAULT_BUDGET_S = 30.0


@dataclass
class PurgeReport:
    horizons_moved: int = 0
    events_purged: int = 0
    audit_purged: int = 0
    numbers_erased: int = 0
    # False when the budget ran out with work left (the next run goes on).
    complete: bool = True
    seconds: float = 0.0


def retention_purge(
    *, now: datetime | None = None, budget_s: float = DEFAULT_BUDGET_S, batch: int = PURGE_BATCH
) -> PurgeReport:
    """Run the four steps of retention within `budget_s` seconds; return what was done."""
    now = now or timezone.now()
    started = time.monotonic()
    deadline = started + budget_s
    cutoff = now - settings.TWOSV_EVENT_RETENTION
    report = PurgeReport()
    report.complete = horizons_move(cutoff, deadline, report)
    report.complete &= events_purge(deadline, report, batch=batch)
    report.complete &= audit_purge(now - settings.TWOSV_AUDIT_RETENTION, deadline, report, batch)
    report.numbers_erased = removed_numbers_erase(cutoff)
    report.seconds = time.monotonic() - started
    return report


def methods_due(cutoff: datetime) -> list[int]:
    """Return the pks of the methods whose horizon should move to `cutoff`."""
    old_events = Event.objects.filter(method=OuterRef("pk"), occurred_at__lt=cutoff)
    return list(
        Method.objects.filter(
            Q(purged_before__isnull=True) | Q(purged_before__lt=cutoff - HORIZON_STEP)
        )
        .filter(Exists(old_events))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def horizons_move(cutoff: datetime, deadline: float, report: PurgeReport) -> bool:
    """Move the horizon of every method due, `HORIZON_CHUNK` methods a transaction; False if
    out of time.

    At least one chunk moves per run, however short the budget, so every run makes progress.
    """
    due = methods_due(cutoff)
    for start in range(0, len(due), HORIZON_CHUNK):
        chunk = due[start : start + HORIZON_CHUNK]
        with transaction.atomic():
            method_ids = Method.objects.filter(pk__in=chunk).values_list("method_id", flat=True)
            methods = locking.methods_for_update(method_ids=list(method_ids))
            report.horizons_moved += horizons_chunk_move(methods, cutoff)
        if time.monotonic() > deadline and start + HORIZON_CHUNK < len(due):
            return False
    return True


def horizon_move(method: Method, cutoff: datetime) -> None:
    """Keep the effect of the method's events before `cutoff` in a checkpoint; horizon there.

    The caller holds the method's row lock.
    """
    horizons_chunk_move([method], cutoff)


def _start_checkpoints(pks: list[int], cutoff: datetime) -> dict[int, MethodCheckpoint]:
    """Return each method's latest checkpoint before `cutoff` (key before ``(cutoff, "")``)."""
    latest = (
        MethodCheckpoint.objects.filter(method=OuterRef("method"), event_at__lt=cutoff)
        .order_by("-event_at")
        .values("event_at")[:1]
    )
    found: dict[int, MethodCheckpoint] = {}
    for checkpoint in MethodCheckpoint.objects.filter(method_id__in=pks, event_at=Subquery(latest)):
        # Several at the latest instant: the key decides (event_id by code point, as the fold).
        held = found.get(checkpoint.method_id)
        if held is None or (held.event_at, held.event_id) < (
            checkpoint.event_at,
            checkpoint.event_id,
        ):
            found[checkpoint.method_id] = checkpoint
    return found


def _events_before(
    methods: list[Method], starts: dict[int, MethodCheckpoint], cutoff: datetime
) -> dict[int, list[tuple[datetime, str, str]]]:
    """Return the events before `cutoff` of each method, from its start checkpoint's time on,
    as ``(occurred_at, event_id, type)`` rows for `policy.fold_rows`.

    One query for all the methods without a checkpoint before the cutoff (most of them: a
    checkpoint comes every TWOSV_CHECKPOINT_EVERY events), one each for the others.
    """
    events: dict[int, list[tuple[datetime, str, str]]] = {m.pk: [] for m in methods}
    columns = ("method_id", "occurred_at", "event_id", "type")
    whole = [m.pk for m in methods if m.pk not in starts]
    queries = [Event.objects.filter(method_id__in=whole, occurred_at__lt=cutoff)] if whole else []
    queries += [
        Event.objects.filter(
            method_id=pk, occurred_at__gte=checkpoint.event_at, occurred_at__lt=cutoff
        )
        for pk, checkpoint in starts.items()
    ]
    for query in queries:
        for method_id, occurred_at, event_id, type_ in query.values_list(*columns).order_by():
            events[method_id].append((occurred_at, event_id, type_))
    return events


def horizons_chunk_move(methods: list[Method], cutoff: datetime) -> int:
    """Move the horizons of `methods` (row locks held by the caller) to `cutoff`: per method,
    fold from its latest checkpoint before the cutoff up to the cutoff, store that as the
    horizon checkpoint, drop the older ones. A handful of statements for the whole chunk;
    return the methods moved.

    A method whose last event is before the cutoff needs no fold: its stored projection is the
    horizon's.
    """
    methods = [m for m in methods if m.purged_before is None or m.purged_before < cutoff]
    if not methods:
        return 0
    pks = [m.pk for m in methods]
    starts = _start_checkpoints(pks, cutoff)
    dormant = {m.pk for m in methods if m.last_event_at is not None and m.last_event_at < cutoff}
    events = _events_before([m for m in methods if m.pk not in dormant], starts, cutoff)
    rules = lock_policy()
    new: list[MethodCheckpoint] = []
    horizons: dict[int, datetime] = {}
    for method in methods:
        start_checkpoint = starts.get(method.pk)
        start = (
            policy.EMPTY if start_checkpoint is None else checkpoint_projection(start_checkpoint)
        )
        if method.pk in dormant:
            projection = method_projection(method)
        else:
            projection = policy.fold_rows(start, events[method.pk], rules)
        if projection.last_key is None:
            continue
        if projection.last_key != start.last_key:
            new.append(checkpoint_row(method, projection))
        # Older checkpoints start re-folds of events that can no longer arrive.
        horizons[method.pk] = projection.last_key[0]
    MethodCheckpoint.objects.bulk_create(new)
    _older_checkpoints_delete(horizons)
    Method.objects.filter(pk__in=pks).update(purged_before=cutoff)
    return len(methods)


def _older_checkpoints_delete(horizons: dict[int, datetime]) -> None:
    """Delete each method's checkpoints before its horizon (method pk -> horizon's time)."""
    if not horizons:
        return
    if connection.vendor == "postgresql":
        # One statement, one index range per method; the ORM's OR of 500 filters cost more
        # to build than the whole fold of the chunk (docs/performance.md, "Retention").
        table = MethodCheckpoint._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} c "  # noqa: S608 - no input
                "USING unnest(%s::bigint[], %s::timestamptz[]) AS h(method_id, horizon) "
                "WHERE c.method_id = h.method_id AND c.event_at < h.horizon",
                [list(horizons), list(horizons.values())],
            )
        return
    for pk, at in horizons.items():
        MethodCheckpoint.objects.filter(method_id=pk, event_at__lt=at).delete()


def _delete_in_batches(
    table: str, select_ids: str, params: list[Any], deadline: float, batch: int
) -> tuple[int, bool]:
    """Run ``DELETE FROM table WHERE id IN (<select_ids> LIMIT batch)`` until none is left.

    Return the rows deleted and whether all were. Each statement commits on its own
    (autocommit), so its locks and WAL stay one batch's worth; once `deadline` passes the rest
    is left to the next run.
    """
    sql = f"DELETE FROM {table} WHERE id IN ({select_ids} LIMIT %s)"  # noqa: S608 - no input
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, batch])
            count = cursor.rowcount
        deleted += count
        if count < batch:
            return deleted, True
        if time.monotonic() > deadline:
            return deleted, False


def methods_with_purgeable_events() -> list[tuple[int, datetime, int]]:
    """Return (pk, horizon, how many) of the methods that still have events before their
    horizon, in pk order."""
    old_events = (
        Event.objects.filter(method=OuterRef("pk"), occurred_at__lt=OuterRef("purged_before"))
        .order_by()
        .values("method")
        .annotate(n=Count("pk"))
        .values("n")
    )
    rows = (
        Method.objects.filter(purged_before__isnull=False)
        .annotate(old=Subquery(old_events))
        .filter(old__gt=0)
        .order_by("pk")
        .values_list("pk", "purged_before", "old")
    )
    return [(pk, horizon, old) for pk, horizon, old in rows if horizon is not None]


def _windows(
    due: list[tuple[int, datetime, int]], batch: int
) -> Iterator[list[tuple[int, datetime, int]]]:
    """Group consecutive methods into windows of at most `batch` events (a bigger method is a
    window of its own) and at most DELETE_WINDOW methods."""
    window: list[tuple[int, datetime, int]] = []
    size = 0
    for item in due:
        if window and (size + item[2] > batch or len(window) == DELETE_WINDOW):
            yield window
            window, size = [], 0
        window.append(item)
        size += item[2]
    if window:
        yield window


# PostgreSQL, a window of methods holding at most a batch of old events together: one
# statement, an index range scan per method on (method, occurred_at), the rows found deleted by
# ctid (no second index lookup, no join of the method table, no sort).
_PG_DELETE = (
    "DELETE FROM {event} WHERE ctid = ANY(ARRAY("
    "SELECT e.ctid FROM unnest(%s::bigint[], %s::timestamptz[]) AS h(method_id, horizon) "
    "JOIN {event} e ON e.method_id = h.method_id AND e.occurred_at < h.horizon LIMIT %s))"
)
# One method with more than a batch: the oldest batch at a time, each statement starting where
# the last one stopped. Restarting from the method's first entry would walk every index entry
# deleted so far again: the k-th batch would cost k batches (measured, docs/performance.md).
_PG_DELETE_ONE = (
    "WITH gone AS (DELETE FROM {event} WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM {event} WHERE method_id = %s AND occurred_at >= %s AND occurred_at < %s "
    "ORDER BY occurred_at LIMIT %s)) RETURNING occurred_at) "
    "SELECT count(*), max(occurred_at) FROM gone"
)
# Methods a PostgreSQL statement covers at most.
DELETE_WINDOW = 2_000


def events_purge(deadline: float, report: PurgeReport, *, batch: int = PURGE_BATCH) -> bool:
    """Delete the events that occurred before their method's horizon; False if out of time.

    Each statement deletes up to `batch` rows by a plain range on the (method, occurred_at)
    index and commits on its own (autocommit): its locks and WAL stay one batch's worth.
    """
    due = methods_with_purgeable_events()
    if connection.vendor != "postgresql":
        return _events_purge_per_method(due, deadline, report, batch)
    table = Event._meta.db_table
    for window in _windows(due, batch):
        if len(window) == 1 and window[0][2] > batch:
            pk, horizon, _ = window[0]
            since = datetime.min.replace(tzinfo=UTC)
            while True:
                with connection.cursor() as cursor:
                    cursor.execute(_PG_DELETE_ONE.format(event=table), [pk, since, horizon, batch])
                    count, last = cursor.fetchone()
                report.events_purged += count
                if count < batch:
                    break
                since = last
                if time.monotonic() > deadline:
                    return False
        else:
            pks = [pk for pk, _, _ in window]
            horizons = [at for _, at, _ in window]
            while True:  # once, unless events were counted short
                with connection.cursor() as cursor:
                    cursor.execute(_PG_DELETE.format(event=table), [pks, horizons, batch])
                    count = cursor.rowcount
                report.events_purged += count
                if count < batch:
                    break
        if time.monotonic() > deadline:
            return False
    return True


def _events_purge_per_method(
    due: list[tuple[int, datetime, int]], deadline: float, report: PurgeReport, batch: int
) -> bool:
    """`events_purge` for the other databases (the SQLite tests): per method."""
    table = Event._meta.db_table
    sql = (
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "  # noqa: S608 - no input
        "WHERE method_id = %s AND occurred_at < %s LIMIT %s)"
    )
    adapt = connection.ops.adapt_datetimefield_value
    for pk, horizon, _ in due:
        while True:
            with connection.cursor() as cursor:
                cursor.execute(sql, [pk, adapt(horizon), batch])
                count = cursor.rowcount
            report.events_purged += count
            if count < batch:
                break
            if time.monotonic() > deadline:
                return False
    return True


def audit_purge(cutoff: datetime, deadline: float, report: PurgeReport, batch: int) -> bool:
    """Delete the audit entries created before `cutoff`, oldest first; False if out of time."""
    table = AuditEntry._meta.db_table
    select_ids = f"SELECT id FROM {table} WHERE created_at < %s ORDER BY created_at"  # noqa: S608
    adapted = connection.ops.adapt_datetimefield_value(cutoff)
    deleted, done = _delete_in_batches(table, select_ids, [adapted], deadline, batch)
    report.audit_purged += deleted
    return done


def removed_numbers_erase(cutoff: datetime) -> int:
    """Erase the phone number and email of methods removed before `cutoff`; rows changed."""
    return (
        Method.objects.filter(removed_at__lt=cutoff)
        .exclude(phone_number="", email="")
        .update(phone_number="", email="")
    )
