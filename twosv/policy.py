"""The resend lock of a 2SV method, as a pure fold of the method's events.

The event log is the source of truth; a method's lock and resend count are the fold of its
events in ``(occurred_at, event_id)`` order (docs/SPEC.md §3, "Lock policy"). This module knows
nothing of Django or of the clock: callers pass plain dataclasses and the time of reading.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

# The fold has always called an event outcome `Outcome`; it is the vocabulary's EventOutcome.
from twosv.vocabulary import EventOutcome as Outcome
from twosv.vocabulary import EventType

__all__ = [
    "EMPTY",
    "EventType",
    "FoldEvent",
    "Lock",
    "LockPolicy",
    "Outcome",
    "Projection",
    "apply",
    "fold",
    "fold_from",
    "fold_rows",
    "is_in_order",
]

_ONE_SECOND_US = 1_000_000


def _require_aware(value: datetime, name: str) -> None:
    """Raise ValueError unless `value` carries a time zone."""
    # A naive datetime would either raise TypeError deep inside a comparison or, worse, be read
    # in whatever zone the process runs in; refuse it at the boundary with a clear message.
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


@dataclass(frozen=True)
class LockPolicy:
    """When resends lock a method.

    More than `threshold` counted resends inside `window` lock the method for `lock_duration`.
    """

    threshold: int = 200
    lock_duration: timedelta = timedelta(hours=24)
    window: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        """Reject a policy that could never lock, or never unlock, as the article describes."""
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        if self.lock_duration <= timedelta(0):
            raise ValueError(f"lock_duration must be positive, got {self.lock_duration}")
        if self.window <= timedelta(0):
            raise ValueError(f"window must be positive, got {self.window}")


@dataclass(frozen=True)
class FoldEvent:
    """The part of a stored event that the lock fold reads."""

    event_id: str
    type: str
    occurred_at: datetime

    def __post_init__(self) -> None:
        """Reject a naive `occurred_at`."""
        _require_aware(self.occurred_at, "occurred_at")

    @property
    def key(self) -> tuple[datetime, str]:
        """Return the event's place in the fold order: ``(occurred_at, event_id)``."""
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True)
class Lock:
    """A lock on a method, from `locked_at` until `locked_until` unless lifted earlier.

    `blocked` counts the "resend code" requests refused while it held.
    """

    locked_at: datetime
    locked_until: datetime
    lifted_at: datetime | None = None
    blocked: int = 0

    def __post_init__(self) -> None:
        """Reject naive datetimes."""
        _require_aware(self.locked_at, "locked_at")
        _require_aware(self.locked_until, "locked_until")
        if self.lifted_at is not None:
            _require_aware(self.lifted_at, "lifted_at")

    def active_at(self, x: datetime) -> bool:
        """Return True when the lock holds at `x`.

        It holds from `locked_at` up to, not including, `locked_until`, unless lifted at or
        before `x`.
        """
        _require_aware(x, "x")
        if self.lifted_at is not None and self.lifted_at <= x:
            return False
        return self.locked_at <= x < self.locked_until

    def seconds_remaining(self, x: datetime) -> int:
        """Return the whole seconds left at `x`, rounded up; 0 when the lock is not active."""
        if not self.active_at(x):
            return 0
        # Integer microseconds, not total_seconds(): a float can round 86399.000001 s down to
        # 86399 and the panel would show a lock that ends a second before it does.
        micros = (self.locked_until - x) // timedelta(microseconds=1)
        return -(-micros // _ONE_SECOND_US)


@dataclass(frozen=True)
class Projection:
    """A method's lock state after folding its events in order.

    `resend_times` holds the counted resends since the last reset, oldest first; it is pruned to
    the window as of the latest counted resend and never holds more than the threshold, so
    applying one more event costs O(threshold) whatever the length of the history.
    """

    resend_times: tuple[datetime, ...] = ()
    lock: Lock | None = None
    last_key: tuple[datetime, str] | None = None

    def resend_count(self, now: datetime, policy: LockPolicy) -> int:
        """Return the counted resends inside the window at `now` (those after ``now - window``)."""
        _require_aware(now, "now")
        # Resends folded after `now` (a reader whose clock lags the producer's) still count:
        # hiding them would understate how close the method is to locking.
        return len(self.resend_times) - bisect_right(self.resend_times, now - policy.window)

    def is_locked(self, now: datetime) -> bool:
        """Return True when the method's latest lock is active at `now`."""
        _require_aware(now, "now")
        return self.lock is not None and self.lock.active_at(now)


EMPTY = Projection()


def is_in_order(projection: Projection, event: FoldEvent) -> bool:
    """Return True when `event` sorts after every event already folded.

    Such an event can be applied incrementally; any other one needs a re-fold.
    """
    return projection.last_key is None or event.key > projection.last_key


class _Folding:
    """A projection being folded: mutable, so a long fold copies nothing per event.

    The one place the lock rules are written; `apply`, `fold_from` and `fold_rows` drive it.
    """

    __slots__ = ("last_key", "lock", "resend_times")

    def __init__(self, start: Projection) -> None:
        self.resend_times = list(start.resend_times)
        self.lock = start.lock
        self.last_key = start.last_key

    def step(
        self, t: datetime, key: tuple[datetime, str], type_: str, policy: LockPolicy
    ) -> Outcome:
        """Fold one event (at `t`, sorting at `key`, after `last_key`) and return its outcome."""
        self.last_key = key
        if type_ == EventType.CODE_RESEND_REQUESTED:
            lock = self.lock
            if lock is not None and lock.active_at(t):
                # Blocked requests are kept in the log but neither count nor extend the lock, or
                # a customer hammering "resend" would stay locked forever; the lock counts them.
                self.lock = replace(lock, blocked=lock.blocked + 1)
                return Outcome.BLOCKED
            # Times are ascending (events arrive in key order), so the ones that fell out of the
            # window form a prefix; a request exactly at t - window is out.
            times = self.resend_times
            del times[: bisect_right(times, t - policy.window)]
            if len(times) + 1 > policy.threshold:
                times.clear()
                self.lock = Lock(locked_at=t, locked_until=t + policy.lock_duration)
                return Outcome.LOCKED
            times.append(t)
            return Outcome.COUNTED

        if type_ == EventType.CODE_VERIFIED:
            self.resend_times.clear()
            return Outcome.RESET

        if type_ == EventType.LOCK_LIFTED:
            lock = self.lock
            # Only an active lock gets a lifted_at: stamping an expired or already lifted lock
            # would rewrite when it really ended.
            if lock is not None and lock.active_at(t):
                self.lock = replace(lock, lifted_at=t)
            self.resend_times.clear()
            return Outcome.LIFTED

        # Enrolment, removal, number changes, first sends and rejected codes don't touch the
        # lock; unknown types are recorded too, so a new producer event can't break the fold.
        return Outcome.RECORDED

    def projection(self) -> Projection:
        return Projection(
            resend_times=tuple(self.resend_times), lock=self.lock, last_key=self.last_key
        )


def apply(
    projection: Projection, event: FoldEvent, policy: LockPolicy
) -> tuple[Projection, Outcome]:
    """Fold one event that sorts after the projection's last_key.

    Cost O(threshold) at most, independent of the history's length.

    Raise ValueError when `event` does not sort after `projection.last_key`: folding it would
    give a projection that depends on arrival order, so the caller must re-fold instead.
    """
    if not is_in_order(projection, event):
        raise ValueError(
            f"event {event.event_id!r} at {event.occurred_at.isoformat()} does not sort after "
            f"the last folded event {projection.last_key!r}; re-fold the history instead"
        )
    folding = _Folding(projection)
    outcome = folding.step(event.occurred_at, event.key, event.type, policy)
    return folding.projection(), outcome


def fold(
    events: Iterable[FoldEvent], policy: LockPolicy
) -> tuple[Projection, list[tuple[FoldEvent, Outcome]]]:
    """Fold a method's whole history.

    Drop duplicate event_ids (keep the first seen), sort by key, apply in order; return the
    projection and each event's outcome in fold order.
    """
    projection, outcomes, _ = fold_from(EMPTY, events, policy)
    return projection, outcomes


def fold_from(
    start: Projection, events: Iterable[FoldEvent], policy: LockPolicy, checkpoint_every: int = 0
) -> tuple[Projection, list[tuple[FoldEvent, Outcome]], list[Projection]]:
    """Fold the events that sort after `start` (a checkpoint of the projection) onto it.

    As `fold` from `start` instead of EMPTY: duplicates dropped, events at or before
    ``start.last_key`` (already in it) skipped. Also return the projection after every
    `checkpoint_every`-th event folded (none when 0): the checkpoints to store on the way.
    """
    unique: dict[str, FoldEvent] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    after = sorted(
        (e for e in unique.values() if start.last_key is None or e.key > start.last_key),
        key=lambda e: e.key,
    )
    folding = _Folding(start)
    outcomes: list[tuple[FoldEvent, Outcome]] = []
    checkpoints: list[Projection] = []
    for event in after:
        key = event.key
        outcomes.append((event, folding.step(key[0], key, event.type, policy)))
        if checkpoint_every and len(outcomes) % checkpoint_every == 0:
            checkpoints.append(folding.projection())
    return folding.projection(), outcomes, checkpoints


def fold_rows(
    start: Projection, rows: Iterable[tuple[datetime, str, str]], policy: LockPolicy
) -> Projection:
    """Return the projection of `fold_from(start, events, policy)` for events given as
    ``(occurred_at, event_id, type)`` rows, without the outcomes.

    For folds that only keep the result, such as moving a retention horizon over a day of
    events: no FoldEvent per row and no outcome list. Naive times are refused as FoldEvent
    refuses them (a mix of naive and aware ones can't be sorted).
    """
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row[1] not in seen:
            seen.add(row[1])
            unique.append(row)
    unique.sort()
    if unique:
        _require_aware(unique[0][0], "occurred_at")
    folding = _Folding(start)
    last = start.last_key
    for occurred_at, event_id, type_ in unique:
        key = (occurred_at, event_id)
        if last is None or key > last:
            folding.step(occurred_at, key, type_, policy)
    return folding.projection()
