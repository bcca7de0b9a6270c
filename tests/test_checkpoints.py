"""Checkpoints of the projection: a late event re-folds from the latest one before it.

SPEC §3 and §8 ("Late events"): the cost of a late event grows with the events after its
occurred_at, not with the method's whole history; the projection stays exactly the sorted fold
whatever the arrival order, duplicates and checkpoint spacing.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import ENROLLED_AT, RESEND, T0, enroll, ingest
from twosv import policy, services
from twosv.models import Event, EventType, Method, MethodCheckpoint
from twosv.selectors import lock_policy, method_projection
from twosv.services.checkpoints import checkpoint_projection

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]

TYPES = [
    RESEND,
    RESEND,
    RESEND,
    EventType.CODE_VERIFIED,
    EventType.CODE_SENT,
    EventType.CODE_REJECTED,
]


def sorted_fold(method: Method) -> tuple[policy.Projection, dict[str, str]]:
    """The projection and outcomes of a fold of every stored event of the method, from EMPTY."""
    events = [
        policy.FoldEvent(e.event_id, e.type, e.occurred_at)
        for e in Event.objects.filter(method=method)
    ]
    projection, outcomes = policy.fold(events, lock_policy())
    return projection, {event.event_id: outcome.value for event, outcome in outcomes}


def assert_exact(method: Method) -> None:
    """Projection, outcomes and every checkpoint equal folds of the stored history."""
    projection, outcomes = sorted_fold(method)
    stored = Method.objects.get(pk=method.pk)
    assert method_projection(stored) == projection
    assert dict(Event.objects.filter(method=method).values_list("event_id", "outcome")) == outcomes
    events = [
        policy.FoldEvent(e.event_id, e.type, e.occurred_at)
        for e in Event.objects.filter(method=method)
    ]
    for checkpoint in MethodCheckpoint.objects.filter(method=method):
        key = (checkpoint.event_at, checkpoint.event_id)
        prefix, _ = policy.fold([e for e in events if e.key <= key], lock_policy())
        assert checkpoint_projection(checkpoint) == prefix, key


def batch_item(method_id: str, event_id: str, type_: str, at: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": type_,
        "customer_id": "c-1",
        "occurred_at": at,
        "data": {"method_id": method_id},
    }


_methods = itertools.count()


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str, Any]]]:
    """A history of up to 40 events (some at the same instant) and its arrival: shuffled, with
    duplicates."""
    n = draw(st.integers(min_value=1, max_value=40))
    gaps = draw(st.lists(st.sampled_from([0, 1, 30, 600]), min_size=n, max_size=n))
    types = draw(st.lists(st.sampled_from(TYPES), min_size=n, max_size=n))
    ids = draw(st.permutations(range(n)))
    at, history = T0 - timedelta(days=2), []
    for gap, type_, id_ in zip(gaps, types, ids, strict=True):
        at += timedelta(minutes=gap)
        history.append((f"e{id_:02d}", str(type_), at))
    repeats = draw(st.lists(st.sampled_from(history), max_size=n // 2))
    return history, draw(st.permutations([*history, *repeats]))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=arrivals(),
    every=st.integers(min_value=1, max_value=7),
    batch_sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=8),
)
def test_any_arrival_order_with_checkpoints_at_random_points_equals_the_sorted_fold(
    drawn: tuple[list[tuple[str, str, Any]], list[tuple[str, str, Any]]],
    every: int,
    batch_sizes: list[int],
) -> None:
    """Ingest a permutation with duplicates, single and in batches, checkpoints every `every`."""
    history, arrival = drawn
    method_id = f"m-prop-{next(_methods)}"
    with override_settings(TWOSV_RESEND_LOCK_THRESHOLD=3, TWOSV_CHECKPOINT_EVERY=every):
        method = enroll(method_id=method_id, event_id=f"enrol-{method_id}")
        position, sizes = 0, itertools.cycle(batch_sizes)
        while position < len(arrival):
            size = next(sizes)
            chunk = arrival[position : position + size]
            position += size
            if size == 1:
                event_id, type_, at = chunk[0]
                ingest(f"{method_id}-{event_id}", type_, at=at, method_id=method_id)
            else:
                services.events_ingest_batch(
                    events=[
                        batch_item(method_id, f"{method_id}-{event_id}", type_, at)
                        for event_id, type_, at in chunk
                    ]
                )
        assert Event.objects.filter(method=method).count() == len(history) + 1
        assert_exact(method)


def in_order_history(method: Method, count: int, start: Any) -> list[Any]:
    """Ingest `count` events in order through batches of 500; return their times."""
    times = [start + timedelta(seconds=10 * i) for i in range(count)]
    for first in range(0, count, 500):
        services.events_ingest_batch(
            events=[
                batch_item(method.method_id, f"h{i:05d}", TYPES[i % len(TYPES)], times[i])
                for i in range(first, min(first + 500, count))
            ]
        )
    return times


def test_in_order_events_write_a_checkpoint_every_n(settings):
    settings.TWOSV_CHECKPOINT_EVERY = 100
    method = enroll()
    in_order_history(method, 450, ENROLLED_AT + timedelta(hours=1))

    # 451 events with the enrolment: checkpoints after the 100th, 200th, 300th and 400th.
    assert MethodCheckpoint.objects.filter(method=method).count() == 4
    assert Method.objects.get(pk=method.pk).checkpoint_lag == 51
    assert_exact(method)


def test_a_late_event_on_thousands_of_events_reads_only_the_events_after_its_checkpoint(
    settings, monkeypatch
):
    settings.TWOSV_CHECKPOINT_EVERY = 200
    method = enroll()
    times = in_order_history(method, 3000, T0 - timedelta(days=1))
    assert MethodCheckpoint.objects.filter(method=method).count() == 3001 // 200

    folded: list[int] = []
    fold_from = policy.fold_from

    def counting_fold_from(start, events, rules, every=0):  # type: ignore[no-untyped-def]
        events = list(events)
        folded.append(len(events))
        return fold_from(start, events, rules, every)

    monkeypatch.setattr(policy, "fold_from", counting_fold_from)
    # One minute late: 6 events occurred after it.
    late_at = times[-1] - timedelta(minutes=1)
    with CaptureQueriesContext(connection) as ctx:
        result = ingest("late", at=late_at)

    assert result.status == "accepted"
    history_reads = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith("SELECT") and 'FROM "twosv_event"' in q["sql"]
    ]
    assert len(history_reads) == 1
    assert '"twosv_event"."occurred_at" >=' in history_reads[0]
    # The events after the checkpoint before it (at most 200) plus the late one: not 3,002.
    assert folded == [pytest.approx(folded[0])]
    assert 7 <= folded[0] <= 200 + 7
    rows_read = Event.objects.filter(
        method=method,
        occurred_at__gte=MethodCheckpoint.objects.filter(method=method)
        .order_by("-event_at")
        .values_list("event_at", flat=True)
        .exclude(event_at__gt=late_at)[0],
    ).count()
    assert rows_read <= 200 + 7
    assert_exact(method)


def test_a_method_without_checkpoints_is_folded_whole_once_and_gets_them(settings):
    settings.TWOSV_CHECKPOINT_EVERY = 100
    method = enroll()
    start = T0 - timedelta(days=1)
    ingest("newest", at=start + timedelta(minutes=400))
    # Written straight to the log, as a backfill from before checkpoints existed would be.
    Event.objects.bulk_create(
        Event(
            event_id=f"raw{i:04d}",
            type=RESEND,
            customer=method.customer,
            method=method,
            occurred_at=start + timedelta(minutes=i),
            data={"method_id": method.method_id},
        )
        for i in range(350)
    )
    assert not MethodCheckpoint.objects.filter(method=method).exists()

    ingest("late-1", at=start + timedelta(seconds=30))

    # 353 events re-folded from EMPTY: checkpoints after the 100th, 200th and 300th.
    assert MethodCheckpoint.objects.filter(method=method).count() == 3
    assert Method.objects.get(pk=method.pk).checkpoint_lag == 53
    assert_exact(method)


def test_a_late_event_drops_the_checkpoints_after_it_and_writes_them_again(settings):
    settings.TWOSV_CHECKPOINT_EVERY = 10
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 5
    method = enroll()
    times = in_order_history(method, 95, T0 - timedelta(hours=12))
    before = set(MethodCheckpoint.objects.filter(method=method).values_list("pk", flat=True))

    # A verified code early on resets the count: every later checkpoint's count changes.
    ingest("late-verify", EventType.CODE_VERIFIED, at=times[12] + timedelta(seconds=1))

    after = set(MethodCheckpoint.objects.filter(method=method).values_list("pk", flat=True))
    assert len(after) == 97 // 10
    assert before & after  # the checkpoints before the late event are kept
    assert after - before  # the ones after it are new
    assert_exact(method)
