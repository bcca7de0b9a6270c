"""When each rule applies: one predicate per row of the table in twosv.engine.rules."""

from __future__ import annotations

from collections.abc import Callable

from twosv.engine.facts import KNOWN_VERDICTS, Situation
from twosv.vocabulary import (
    FINISHED_LOOKUP_STATUSES,
    IN_FLIGHT_LOOKUP_STATUSES,
    PHONE_KINDS,
    LookupStatus,
    Verdict,
)

_LOOKUP_STATUSES = frozenset(LookupStatus)


def no_active_methods(s: Situation) -> bool:
    return s.p is None


def locked_backup_ready(s: Situation) -> bool:
    return s.method.locked and s.backup is not None and s.answers.has_backup_device_access is True


def locked_backup_unknown(s: Situation) -> bool:
    return s.method.locked and s.backup is not None and s.answers.has_backup_device_access is None


def locked(s: Situation) -> bool:
    return s.method.locked


def device_access_unknown(s: Situation) -> bool:
    return s.answers.has_device_access is None


def lost_device_backup_ready(s: Situation) -> bool:
    return s.lost_device and s.backup is not None and s.answers.has_backup_device_access is True


def lost_device_backup_unknown(s: Situation) -> bool:
    return s.lost_device and s.backup is not None and s.answers.has_backup_device_access is None


def lost_device(s: Situation) -> bool:
    return s.lost_device


def phone_mismatch(s: Situation) -> bool:
    return s.answers.phone_number_matches is False


def phone_unverified(s: Situation) -> bool:
    return s.method.kind in PHONE_KINDS and s.answers.phone_number_matches is None


def receives_no_codes(s: Situation) -> bool:
    return not s.method.receives_codes


def needs_lookup(s: Situation) -> bool:
    """Return whether there is no usable lookup for P.

    A pending or running lookup is never stale (it waits, R9); a finished one is stale when
    it finished before the freshness window. A succeeded lookup without a known verdict
    can't be read, so it counts as missing too.
    """
    lookup = s.lookup
    if lookup is None or lookup.status not in _LOOKUP_STATUSES:
        return True
    if lookup.status in FINISHED_LOOKUP_STATUSES:
        finished_at = lookup.finished_at or lookup.created_at
        if finished_at < s.facts.now - s.facts.lookup_freshness:
            return True
    return lookup.status == LookupStatus.SUCCEEDED and lookup.verdict not in KNOWN_VERDICTS


def lookup_in_progress(s: Situation) -> bool:
    return s.lookup is not None and s.lookup.status in IN_FLIGHT_LOOKUP_STATUSES


def lookup_failed(s: Situation) -> bool:
    return s.lookup is not None and s.lookup.status == LookupStatus.FAILED


def verdict_is(*verdicts: Verdict) -> Callable[[Situation], bool]:
    """Return a predicate: P's latest lookup found one of `verdicts`."""

    def predicate(s: Situation) -> bool:
        return s.lookup is not None and s.lookup.verdict in verdicts

    return predicate
