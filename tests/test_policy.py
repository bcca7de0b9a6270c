"""The lock fold, as the article states it: more than 200 resends in 24 h lock a method for 24 h."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twosv.policy import (
    EMPTY,
    EventType,
    FoldEvent,
    Lock,
    LockPolicy,
    Outcome,
    Projection,
    apply,
    fold,
    fold_rows,
    is_in_order,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
US = timedelta(microseconds=1)
DEFAULT = LockPolicy()
SMALL = LockPolicy(threshold=3, lock_duration=timedelta(minutes=10), window=timedelta(hours=1))

# Ids only break ties between events at the same instant; a global counter keeps them unique
# and increasing in creation order, so "later in the test" is also "later in the fold".
_ids = itertools.count()


def ev(type_: EventType | str, at: datetime, event_id: str | None = None) -> FoldEvent:
    return FoldEvent(
        event_id=event_id if event_id is not None else f"e{next(_ids):08d}",
        type=str(type_),
        occurred_at=at,
    )


def resends(n: int, start: datetime, step: timedelta = timedelta(seconds=1)) -> list[FoldEvent]:
    return [ev(EventType.CODE_RESEND_REQUESTED, start + i * step) for i in range(n)]


def run(
    events: Iterable[FoldEvent], policy: LockPolicy = DEFAULT
) -> tuple[Projection, list[Outcome]]:
    projection, outcomes = fold(events, policy)
    return projection, [outcome for _, outcome in outcomes]


def last_time(events: Sequence[FoldEvent]) -> datetime:
    return max(e.occurred_at for e in events)


# --- the threshold ---------------------------------------------------------------------------


def test_200th_resend_does_not_lock() -> None:
    events = resends(200, T0)
    projection, outcomes = run(events)

    assert outcomes == [Outcome.COUNTED] * 200
    assert projection.lock is None
    assert not projection.is_locked(last_time(events))
    assert projection.resend_count(last_time(events), DEFAULT) == 200


def test_201st_resend_locks_for_exactly_24_hours() -> None:
    events = resends(201, T0)
    t201 = events[-1].occurred_at
    projection, outcomes = run(events)

    assert outcomes[-1] is Outcome.LOCKED
    assert outcomes.count(Outcome.LOCKED) == 1
    assert projection.lock == Lock(locked_at=t201, locked_until=t201 + DAY)
    assert projection.is_locked(t201)
    assert projection.resend_count(t201, DEFAULT) == 0


def test_201_resends_at_the_same_instant_lock_once_at_the_201st_by_event_id() -> None:
    # Concurrent requests share a timestamp; the event_id decides which one is the 201st.
    events = [ev(EventType.CODE_RESEND_REQUESTED, T0, event_id=f"c{i:03d}") for i in range(201)]
    _, outcomes = fold(reversed(events), DEFAULT)

    assert [(e.event_id, o) for e, o in outcomes if o is Outcome.LOCKED] == [
        ("c200", Outcome.LOCKED)
    ]


def test_resends_during_a_lock_are_blocked_and_do_not_extend_it() -> None:
    lock_events = resends(201, T0)
    locked_at = lock_events[-1].occurred_at
    during = [
        ev(EventType.CODE_RESEND_REQUESTED, at)
        for at in (locked_at, locked_at + timedelta(hours=1), locked_at + DAY - US)
    ]
    projection, outcomes = run([*lock_events, *during])

    assert outcomes[-3:] == [Outcome.BLOCKED] * 3
    assert projection.lock == Lock(locked_at=locked_at, locked_until=locked_at + DAY, blocked=3)
    assert projection.resend_count(locked_at + DAY - US, DEFAULT) == 0


def test_after_expiry_a_resend_counts_again_from_zero() -> None:
    lock_events = resends(201, T0)
    locked_until = lock_events[-1].occurred_at + DAY
    projection, outcomes = run([*lock_events, ev(EventType.CODE_RESEND_REQUESTED, locked_until)])

    assert outcomes[-1] is Outcome.COUNTED
    assert not projection.is_locked(locked_until)
    assert projection.resend_count(locked_until, DEFAULT) == 1


def test_after_expiry_it_takes_another_201_resends_to_lock_again() -> None:
    first = resends(201, T0)
    locked_until = first[-1].occurred_at + DAY
    second = resends(201, locked_until)
    projection, outcomes = run([*first, *second])

    assert outcomes.count(Outcome.LOCKED) == 2
    assert outcomes[-2] is Outcome.COUNTED
    assert outcomes[-1] is Outcome.LOCKED
    assert projection.lock is not None
    assert projection.lock.locked_at == second[-1].occurred_at


# --- resets and lifts ------------------------------------------------------------------------


def test_code_verified_resets_the_count() -> None:
    before = resends(200, T0)
    verified_at = last_time(before) + timedelta(seconds=1)
    after = resends(200, verified_at + timedelta(seconds=1))
    projection, outcomes = run([*before, ev(EventType.CODE_VERIFIED, verified_at), *after])

    assert outcomes[200] is Outcome.RESET
    assert Outcome.LOCKED not in outcomes
    assert projection.resend_count(last_time(after), DEFAULT) == 200


def test_code_verified_alone_reads_as_zero_resends() -> None:
    events = [*resends(5, T0), ev(EventType.CODE_VERIFIED, T0 + timedelta(minutes=1))]
    projection, _ = run(events)

    assert projection.resend_count(T0 + timedelta(minutes=1), DEFAULT) == 0


def test_a_lift_ends_the_lock_at_its_time_and_a_resend_right_after_counts() -> None:
    lock_events = resends(201, T0)
    lifted_at = lock_events[-1].occurred_at + timedelta(hours=2)
    resend_after = ev(EventType.CODE_RESEND_REQUESTED, lifted_at + US)
    projection, outcomes = run([*lock_events, ev(EventType.LOCK_LIFTED, lifted_at), resend_after])

    assert outcomes[-2:] == [Outcome.LIFTED, Outcome.COUNTED]
    assert projection.lock is not None
    assert projection.lock.lifted_at == lifted_at
    assert projection.is_locked(lifted_at - US)
    assert not projection.is_locked(lifted_at)
    assert projection.lock.seconds_remaining(lifted_at) == 0
    assert projection.resend_count(lifted_at + US, DEFAULT) == 1


def test_a_resend_at_the_instant_of_the_lift_but_sorted_after_it_counts() -> None:
    lock_events = resends(201, T0)
    lifted_at = lock_events[-1].occurred_at + timedelta(hours=2)
    _, outcomes = run(
        [
            *lock_events,
            ev(EventType.LOCK_LIFTED, lifted_at, event_id="x-lift"),
            ev(EventType.CODE_RESEND_REQUESTED, lifted_at, event_id="y-resend"),
        ]
    )

    assert outcomes[-2:] == [Outcome.LIFTED, Outcome.COUNTED]


def test_a_lift_resets_the_count_even_without_a_lock() -> None:
    events = [*resends(150, T0), ev(EventType.LOCK_LIFTED, T0 + timedelta(hours=1))]
    projection, outcomes = run(events)

    assert outcomes[-1] is Outcome.LIFTED
    assert projection.lock is None
    assert projection.resend_count(T0 + timedelta(hours=1), DEFAULT) == 0


def test_a_lift_after_expiry_leaves_the_lock_as_it_ended() -> None:
    lock_events = resends(201, T0)
    locked_at = lock_events[-1].occurred_at
    projection, _ = run([*lock_events, ev(EventType.LOCK_LIFTED, locked_at + DAY)])

    assert projection.lock == Lock(locked_at=locked_at, locked_until=locked_at + DAY)


def test_a_second_lift_keeps_the_first_lift_time() -> None:
    lock_events = resends(201, T0)
    first_lift = lock_events[-1].occurred_at + timedelta(hours=1)
    projection, _ = run(
        [
            *lock_events,
            ev(EventType.LOCK_LIFTED, first_lift),
            ev(EventType.LOCK_LIFTED, first_lift + timedelta(hours=1)),
        ]
    )

    assert projection.lock is not None
    assert projection.lock.lifted_at == first_lift


@pytest.mark.parametrize(
    "type_",
    [
        EventType.METHOD_ENROLLED,
        EventType.METHOD_REMOVED,
        EventType.PHONE_NUMBER_CHANGED,
        EventType.CODE_SENT,
        EventType.CODE_REJECTED,
        "some_future_type",
    ],
)
def test_other_events_are_recorded_and_change_neither_count_nor_lock(
    type_: str,
) -> None:
    lock_events = resends(201, T0)
    locked_at = lock_events[-1].occurred_at
    counted_after = resends(2, locked_at + DAY)
    other = ev(type_, locked_at + DAY + timedelta(minutes=1))
    before, _ = run([*lock_events, *counted_after])
    after, outcomes = run([*lock_events, *counted_after, other])

    assert outcomes[-1] is Outcome.RECORDED
    assert after.lock == before.lock
    assert after.resend_times == before.resend_times
    assert after.last_key == other.key


# --- the window ------------------------------------------------------------------------------


def test_resends_older_than_the_window_drop_out() -> None:
    old = resends(150, T0)
    recent = resends(60, last_time(old) + DAY + timedelta(seconds=1))
    projection, outcomes = run([*old, *recent])

    assert Outcome.LOCKED not in outcomes
    assert projection.resend_count(last_time(recent), DEFAULT) == 60


def test_resends_inside_the_window_add_up() -> None:
    old = resends(150, T0)
    recent = resends(51, T0 + timedelta(hours=12))
    _, outcomes = run([*old, *recent])

    assert outcomes[-1] is Outcome.LOCKED
    assert outcomes.count(Outcome.LOCKED) == 1


@pytest.mark.parametrize(
    ("fourth_at", "expected"),
    [
        # The first request sits exactly at t - window: it is out, so three remain.
        (T0 + SMALL.window, Outcome.COUNTED),
        (T0 + SMALL.window - US, Outcome.LOCKED),
    ],
)
def test_a_request_exactly_at_t_minus_window_is_dropped(
    fourth_at: datetime, expected: Outcome
) -> None:
    events = [*resends(3, T0, step=US), ev(EventType.CODE_RESEND_REQUESTED, fourth_at)]
    _, outcomes = run(events, SMALL)

    assert outcomes == [Outcome.COUNTED] * 3 + [expected]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0 - timedelta(hours=1), 2),  # both requests are after `now`: they still count
        (T0, 2),
        (T0 + DAY - US, 2),
        (T0 + DAY, 1),  # the first request is exactly at now - window
        (T0 + timedelta(hours=25) - US, 1),
        (T0 + timedelta(hours=25), 0),
        (T0 + timedelta(days=30), 0),
    ],
)
def test_resend_count_at_read_time_excludes_requests_older_than_the_window(
    now: datetime, expected: int
) -> None:
    projection, _ = run(
        [
            ev(EventType.CODE_RESEND_REQUESTED, T0),
            ev(EventType.CODE_RESEND_REQUESTED, T0 + timedelta(hours=1)),
        ]
    )

    assert projection.resend_count(now, DEFAULT) == expected


# --- the lock at a given time ----------------------------------------------------------------

LOCK = Lock(locked_at=T0, locked_until=T0 + DAY)
LIFTED = Lock(locked_at=T0, locked_until=T0 + DAY, lifted_at=T0 + timedelta(hours=3))


@pytest.mark.parametrize(
    ("lock", "x", "active"),
    [
        (LOCK, T0 - US, False),
        (LOCK, T0, True),
        (LOCK, T0 + DAY - US, True),
        (LOCK, T0 + DAY, False),
        (LIFTED, T0 + timedelta(hours=3) - US, True),
        (LIFTED, T0 + timedelta(hours=3), False),
        (LIFTED, T0 + timedelta(hours=4), False),
    ],
)
def test_lock_is_active_from_locked_at_until_just_before_locked_until_or_the_lift(
    lock: Lock, x: datetime, active: bool
) -> None:
    assert lock.active_at(x) is active
    assert Projection(lock=lock).is_locked(x) is active


@pytest.mark.parametrize(
    ("lock", "x", "seconds"),
    [
        (LOCK, T0 - US, 0),
        (LOCK, T0, 86_400),
        (LOCK, T0 + US, 86_400),
        (LOCK, T0 + timedelta(milliseconds=500), 86_400),
        (LOCK, T0 + timedelta(seconds=1), 86_399),
        (LOCK, T0 + timedelta(hours=23, minutes=59, seconds=59), 1),
        (LOCK, T0 + DAY - US, 1),
        (LOCK, T0 + DAY, 0),
        (LOCK, T0 + timedelta(days=2), 0),
        (LIFTED, T0 + timedelta(hours=2), 79_200),
        (LIFTED, T0 + timedelta(hours=3), 0),
    ],
)
def test_seconds_remaining_rounds_up_and_is_zero_when_not_locked(
    lock: Lock, x: datetime, seconds: int
) -> None:
    assert lock.seconds_remaining(x) == seconds


def test_empty_projection_is_unlocked_with_no_resends() -> None:
    assert not EMPTY.is_locked(T0)
    assert EMPTY.resend_count(T0, DEFAULT) == 0
    assert fold([], DEFAULT) == (EMPTY, [])


# --- custom policy ---------------------------------------------------------------------------


def test_a_custom_policy_locks_after_its_own_threshold_for_its_own_duration() -> None:
    events = resends(4, T0, step=timedelta(minutes=1))
    fourth = events[-1].occurred_at
    projection, outcomes = run(events, SMALL)

    assert outcomes == [Outcome.COUNTED] * 3 + [Outcome.LOCKED]
    assert projection.lock == Lock(locked_at=fourth, locked_until=fourth + timedelta(minutes=10))
    assert projection.is_locked(fourth + timedelta(minutes=10) - US)
    assert not projection.is_locked(fourth + timedelta(minutes=10))


def test_threshold_zero_locks_on_the_first_resend() -> None:
    policy = LockPolicy(threshold=0)
    _, outcomes = run(resends(1, T0), policy)

    assert outcomes == [Outcome.LOCKED]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": -1},
        {"lock_duration": timedelta(0)},
        {"window": timedelta(seconds=-1)},
    ],
)
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LockPolicy(**kwargs)  # type: ignore[arg-type]


# --- order, duplicates, time zones -----------------------------------------------------------


def test_fold_sorts_by_time_then_event_id() -> None:
    at = T0 + timedelta(hours=1)
    lock_events = resends(4, T0, step=timedelta(minutes=1))
    # Same instant: the lift ("a") sorts before the resend ("b") whatever the arrival order.
    lift = ev(EventType.LOCK_LIFTED, at - timedelta(minutes=50), event_id="a")
    resend = ev(EventType.CODE_RESEND_REQUESTED, at - timedelta(minutes=50), event_id="b")
    _, folded = fold([resend, lift, *reversed(lock_events)], SMALL)

    assert [e.event_id for e, _ in folded][-2:] == ["a", "b"]
    assert [o for _, o in folded][-2:] == [Outcome.LIFTED, Outcome.COUNTED]


def test_fold_keeps_the_first_event_seen_for_a_duplicate_id() -> None:
    first = ev(EventType.CODE_VERIFIED, T0, event_id="dup")
    second = ev(EventType.CODE_RESEND_REQUESTED, T0 + timedelta(minutes=1), event_id="dup")
    _, folded = fold([first, second, first], DEFAULT)

    assert folded == [(first, Outcome.RESET)]


def test_apply_refuses_an_event_that_does_not_sort_after_the_last_one() -> None:
    later = ev(EventType.CODE_RESEND_REQUESTED, T0 + timedelta(minutes=1), event_id="b")
    projection, _ = apply(EMPTY, later, DEFAULT)
    earlier = ev(EventType.CODE_RESEND_REQUESTED, T0, event_id="z")
    same_time_smaller_id = ev(EventType.CODE_RESEND_REQUESTED, later.occurred_at, event_id="a")
    same_time_larger_id = ev(EventType.CODE_RESEND_REQUESTED, later.occurred_at, event_id="c")

    assert is_in_order(EMPTY, earlier)
    assert is_in_order(projection, same_time_larger_id)
    for event in (earlier, later, same_time_smaller_id):
        assert not is_in_order(projection, event)
        with pytest.raises(ValueError, match="re-fold"):
            apply(projection, event, DEFAULT)


def test_applying_one_by_one_gives_the_fold() -> None:
    events = [
        *resends(201, T0),
        ev(EventType.LOCK_LIFTED, T0 + timedelta(hours=1)),
        *resends(3, T0 + timedelta(hours=2)),
    ]
    projection = EMPTY
    outcomes = []
    for event in events:
        projection, outcome = apply(projection, event, DEFAULT)
        outcomes.append(outcome)

    assert (projection, outcomes) == run(events)


def test_times_in_any_zone_fold_by_instant() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    in_utc = resends(4, T0, step=timedelta(minutes=1))
    in_india = [FoldEvent(e.event_id, e.type, e.occurred_at.astimezone(india)) for e in in_utc]

    assert run(in_india, SMALL) == run(in_utc, SMALL)
    projection, _ = run(in_india, SMALL)
    assert projection.is_locked(T0 + timedelta(minutes=3))


def test_naive_datetimes_are_refused() -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        FoldEvent("e", EventType.CODE_SENT, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        Lock(locked_at=naive, locked_until=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        EMPTY.is_locked(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        EMPTY.resend_count(naive, DEFAULT)
    with pytest.raises(ValueError, match="timezone-aware"):
        LOCK.seconds_remaining(naive)


# --- any arrival order -----------------------------------------------------------------------

LOCK_RELEVANT = [
    # Resends dominate so that small thresholds are actually reached.
    *[EventType.CODE_RESEND_REQUESTED] * 8,
    EventType.CODE_VERIFIED,
    EventType.LOCK_LIFTED,
    EventType.CODE_SENT,
    EventType.CODE_REJECTED,
]
# Gaps in minutes; 0 makes ties that only the event_id breaks, and the multiples of the
# windows and durations below land events exactly on their boundaries.
GAPS = [0, 0, 1, 1, 1, 2, 5, 10, 30, 60, 180, 720]
DURATIONS = [timedelta(minutes=m) for m in (10, 30, 60, 180, 1440)]


@st.composite
def policies(draw: st.DrawFn) -> LockPolicy:
    return LockPolicy(
        threshold=draw(st.integers(min_value=3, max_value=5)),
        lock_duration=draw(st.sampled_from(DURATIONS)),
        window=draw(st.sampled_from(DURATIONS)),
    )


@st.composite
def histories(draw: st.DrawFn) -> list[FoldEvent]:
    types = draw(st.lists(st.sampled_from(LOCK_RELEVANT), min_size=15, max_size=80))
    gaps = draw(st.lists(st.sampled_from(GAPS), min_size=len(types), max_size=len(types)))
    # Ids in an order unrelated to time, so ties are broken differently from creation order.
    ids = draw(st.permutations(range(len(types))))
    events = []
    at = T0
    for type_, gap, id_ in zip(types, gaps, ids, strict=True):
        at += timedelta(minutes=gap)
        events.append(FoldEvent(f"e{id_:03d}", str(type_), at))
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[FoldEvent]) -> list[FoldEvent]:
    """Draw the events as a producer might deliver them: shuffled, some more than once."""
    repeats = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    return draw(st.permutations([*events, *repeats]))


def ingest_as_a_service(arrivals: Iterable[FoldEvent], policy: LockPolicy) -> Projection:
    """Ingest like the event endpoint: skip duplicates, apply in-order events, re-fold late ones."""
    seen: dict[str, FoldEvent] = {}
    projection = EMPTY
    for event in arrivals:
        if event.event_id in seen:
            continue
        seen[event.event_id] = event
        if is_in_order(projection, event):
            projection, _ = apply(projection, event, policy)
        else:
            projection, _ = fold(seen.values(), policy)
    return projection


@settings(max_examples=200, deadline=None)
@given(policy=policies(), data=st.data())
def test_any_arrival_order_and_duplication_gives_the_same_projection(
    policy: LockPolicy, data: st.DataObject
) -> None:
    events = data.draw(histories())
    arrivals = data.draw(deliveries(events))
    expected, _ = fold(sorted(events, key=lambda e: e.key), policy)

    assert ingest_as_a_service(arrivals, policy) == expected
    assert fold(arrivals, policy)[0] == expected


@settings(max_examples=200, deadline=None)
@given(policy=policies(), events=histories())
def test_fold_outcomes_follow_the_lock_policy(policy: LockPolicy, events: list[FoldEvent]) -> None:
    """Replay the outcomes against docs/SPEC.md, knowing only the events and the policy."""
    projection, folded = fold(events, policy)

    assert [e.key for e, _ in folded] == sorted(e.key for e in events)
    counted: list[datetime] = []  # counted requests since the last reset, lock or lift
    lock: tuple[datetime, datetime] | None = None  # (locked_at, end): end moves to a lift
    expected_lift: datetime | None = None
    for event, outcome in folded:
        t = event.occurred_at
        locked = lock is not None and lock[0] <= t < lock[1]
        if event.type == EventType.CODE_RESEND_REQUESTED:
            if locked:
                # One lock, one LOCKED: nothing counts or locks again while it holds.
                assert outcome is Outcome.BLOCKED
                continue
            in_window = [c for c in counted if c > t - policy.window]
            assert len(in_window) <= policy.threshold
            if len(in_window) == policy.threshold:
                assert outcome is Outcome.LOCKED
                lock, expected_lift, counted = (t, t + policy.lock_duration), None, []
            else:
                assert outcome is Outcome.COUNTED
                counted = [*in_window, t]
        elif event.type == EventType.CODE_VERIFIED:
            assert outcome is Outcome.RESET
            counted = []
        elif event.type == EventType.LOCK_LIFTED:
            assert outcome is Outcome.LIFTED
            counted = []
            if locked and lock is not None:
                lock, expected_lift = (lock[0], t), t
        else:
            assert outcome is Outcome.RECORDED

    locks = [o for _, o in folded].count(Outcome.LOCKED)
    if lock is None:
        assert projection.lock is None
        assert locks == 0
    else:
        assert projection.lock is not None
        assert projection.lock.locked_at == lock[0]
        assert projection.lock.locked_until == lock[0] + policy.lock_duration
        assert projection.lock.lifted_at == expected_lift
    if folded:
        last = folded[-1][0].occurred_at
        assert projection.last_key == folded[-1][0].key
        assert projection.resend_count(last, policy) == len(
            [c for c in counted if c > last - policy.window]
        )
        assert projection.is_locked(last) is (lock is not None and lock[0] <= last < lock[1])


@settings(max_examples=200, deadline=None)
@given(policy=policies(), data=st.data())
def test_fold_rows_from_any_checkpoint_gives_the_fold(
    policy: LockPolicy, data: st.DataObject
) -> None:
    """The retention horizon's fold (rows, projection only) from a checkpoint at any point, with
    the rows shuffled and repeated, gives the whole fold's projection."""
    events = data.draw(histories())
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    ordered = sorted(events, key=lambda e: e.key)
    start, _ = fold(ordered[:cut], policy)
    arrivals = data.draw(deliveries(events))
    rows = [(e.occurred_at, e.event_id, e.type) for e in arrivals]

    assert fold_rows(start, rows, policy) == fold(events, policy)[0]


def test_fold_rows_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fold_rows(EMPTY, [(T0.replace(tzinfo=None), "e", EventType.CODE_SENT)], DEFAULT)
