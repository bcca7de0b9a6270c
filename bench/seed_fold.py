"""The seed's fold: twosv.policy's lock fold on integers, with the checkpoints live ingestion
writes on the way, checked against twosv.policy so the two can't drift apart."""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from twosv import policy

SECOND = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CHECKPOINT_COLUMNS = (
    "method_id",
    "event_at",
    "event_id",
    "resend_times",
    "locked_at",
    "locked_until",
    "lock_lifted_at",
    "lock_blocked",
)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def moment(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


@dataclass
class Folded:
    """What folding one method's events gives: the projection (resend times, lock as
    [locked_at, locked_until, blocked]), each event's outcome, and the checkpoints: (index of
    the event folded last, resend times, lock) after every `every`-th event."""

    resends: list[int]
    lock: list[int] | None
    outcomes: list[str]
    checkpoints: list[tuple[int, list[int], list[int] | None]] = field(default_factory=list)


def fast_fold(events: list[tuple[str, int, str]], rules: policy.LockPolicy, every: int) -> Folded:
    """Fold in-order events like twosv.policy.fold_from(EMPTY, ..., every), on integers.

    policy.fold takes ~10 s for a million events; this takes ~1 s. The seed checks it against
    policy on the big method and a sample of the others (`check_fold`).
    """
    window = rules.window // timedelta(microseconds=1)
    duration = rules.lock_duration // timedelta(microseconds=1)
    threshold = rules.threshold
    resends: list[int] = []
    lock: list[int] | None = None  # [locked_at, locked_until, blocked]; no lifts generated
    outcomes: list[str] = []
    checkpoints: list[tuple[int, list[int], list[int] | None]] = []
    for n, (event_type, t, _) in enumerate(events, start=1):
        if event_type == "code_resend_requested":
            if lock is not None and lock[0] <= t < lock[1]:
                lock = [lock[0], lock[1], lock[2] + 1]
                outcomes.append("blocked")
            else:
                kept = resends[bisect_right(resends, t - window) :]
                if len(kept) + 1 > threshold:
                    lock, resends = [t, t + duration, 0], []
                    outcomes.append("locked")
                else:
                    kept.append(t)
                    resends = kept
                    outcomes.append("counted")
        elif event_type == "code_verified":
            resends = []
            outcomes.append("reset")
        else:
            outcomes.append("recorded")
        if every and n % every == 0:
            checkpoints.append((n - 1, resends, lock))
    return Folded(resends, lock, outcomes, checkpoints)


def _projection(resends: list[int], lock: list[int] | None, last_key: tuple) -> policy.Projection:
    return policy.Projection(
        resend_times=tuple(moment(t) for t in resends),
        lock=None
        if lock is None
        else policy.Lock(locked_at=moment(lock[0]), locked_until=moment(lock[1]), blocked=lock[2]),
        last_key=last_key,
    )


def check_fold(
    method_id: str,
    events: list[tuple[str, int, str]],
    rules: policy.LockPolicy,
    every: int,
    fast: Folded,
) -> None:
    """Assert that policy.fold_from gives the projection, outcomes and checkpoints fast_fold
    gave."""
    fold_events = [
        policy.FoldEvent(f"{method_id}-e{n:06d}", event_type, moment(t))
        for n, (event_type, t, _) in enumerate(events)
    ]
    projection, outcomes, checkpoints = policy.fold_from(policy.EMPTY, fold_events, rules, every)
    assert [o.value for _, o in outcomes] == fast.outcomes, method_id
    assert projection == _projection(fast.resends, fast.lock, fold_events[-1].key), method_id
    expected = [
        _projection(resends, lock, fold_events[index].key)
        for index, resends, lock in fast.checkpoints
    ]
    assert checkpoints == expected, method_id


def ts(value: int | None) -> str:
    return "\\N" if value is None else moment(value).isoformat()


def checkpoint_lines(method_pk: int, event_ids: list[str], times: list[int], fast: Folded) -> str:
    """The method's checkpoint rows for COPY into twosv_methodcheckpoint (CHECKPOINT_COLUMNS)."""
    lines = []
    for index, resends, lock in fast.checkpoints:
        resend_times = json.dumps([moment(t).isoformat() for t in resends])
        locked = (ts(lock[0]), ts(lock[1]), "\\N", str(lock[2])) if lock else ("\\N",) * 3 + ("0",)
        row = (str(method_pk), ts(times[index]), event_ids[index], resend_times, *locked)
        lines.append("\t".join(row) + "\n")
    return "".join(lines)
