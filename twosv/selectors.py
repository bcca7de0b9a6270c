"""Reads: the one way in to a customer, and the facts the policy and engine work on."""

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import phonenumbers
from django.conf import settings
from django.core.cache import cache
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Cast

from twosv import engine, policy
from twosv.dependencies import CACHE_ERRORS, record_outage, skip_while_down
from twosv.errors import Conflict, ErrorCode, NotFound
from twosv.masking import MaskedPhone, mask_phone
from twosv.models import (
    Customer,
    DeliveryLookup,
    Incident,
    Method,
    RegionalAdvisory,
    SenderNumber,
    TroubleshootingSession,
    customer_id_validator,
)
from twosv.state_sql import state_rows
from twosv.vocabulary import INCIDENT_ACTIVE_STATUSES


def lock_policy() -> policy.LockPolicy:
    """Return the lock policy configured in settings (TWOSV_RESEND_LOCK_THRESHOLD, ...)."""
    return policy.LockPolicy(
        threshold=settings.TWOSV_RESEND_LOCK_THRESHOLD,
        lock_duration=settings.TWOSV_LOCK_DURATION,
        window=settings.TWOSV_RESEND_WINDOW,
    )


def _parse(value: str) -> datetime:
    # Written by services with isoformat(); fromisoformat reads it back exactly and, being C,
    # keeps reading up to a threshold's worth of resend times cheap on every state read.
    return datetime.fromisoformat(value)


def method_projection(method: Method) -> policy.Projection:
    """Return the lock projection stored on the method row."""
    lock = None
    if method.locked_at is not None and method.locked_until is not None:
        lock = policy.Lock(
            locked_at=method.locked_at,
            locked_until=method.locked_until,
            lifted_at=method.lock_lifted_at,
            blocked=method.lock_blocked,
        )
    last_key = None
    if method.last_event_at is not None:
        last_key = (method.last_event_at, method.last_event_id)
    return policy.Projection(
        resend_times=tuple(_parse(value) for value in method.resend_times),
        lock=lock,
        last_key=last_key,
    )


def customer_is_valid_id(customer_id: str) -> bool:
    try:
        customer_id_validator(customer_id)
    except Exception:  # noqa: BLE001 - any validation error means "not an id"
        return False
    return True


def _unknown_customer() -> NotFound:
    # One answer for malformed and unknown ids alike, so ids can't be probed by shape.
    return NotFound("No customer with this id.", code=ErrorCode.UNKNOWN_CUSTOMER)


def access_customer(*, customer_id: str) -> Customer:
    """Return the customer or raise NotFound: the only way a view reaches a customer.

    A malformed id answers exactly like an unknown one, so ids can't be probed by shape.
    """
    if not customer_is_valid_id(customer_id):
        raise _unknown_customer()
    customer = Customer.objects.filter(customer_id=customer_id).first()
    if customer is None:
        raise _unknown_customer()
    return customer


# ---------------------------------------------------------------------------------------------
# A method's state as agents see it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockView:
    locked_at: datetime
    locked_until: datetime
    seconds_remaining: int
    reason: str


@dataclass(frozen=True)
class MethodState:
    method: Method
    status: str  # active | locked | removed
    lock: LockView | None
    resend_count: int
    resend_threshold: int
    resends_blocked: int  # requests refused during the active lock; 0 without one
    phone: MaskedPhone | None

    @property
    def method_id(self) -> str:
        return self.method.method_id

    @property
    def phone_changed_at(self) -> datetime | None:
        """Return when the number on file last changed after enrolment, or None."""
        method = self.method
        changed = method.phone_changed_at
        if changed is None or not method.phone_number or changed <= method.enrolled_at:
            return None
        return changed


def method_state(method: Method, *, now: datetime) -> MethodState:
    """Return the method's status, lock and resend count at `now`, from its stored projection."""
    lock_policy_ = lock_policy()
    projection = method_projection(method)
    lock_view = None
    blocked = 0
    if method.removed_at is not None and method.removed_at <= now:
        status = "removed"
    elif projection.lock is not None and projection.lock.active_at(now):
        status = "locked"
        blocked = projection.lock.blocked
        lock_view = LockView(
            locked_at=projection.lock.locked_at,
            locked_until=projection.lock.locked_until,
            seconds_remaining=projection.lock.seconds_remaining(now),
            reason=(
                f"More than {lock_policy_.threshold} code resend requests within "
                f"{_human(lock_policy_.window)}."
            ),
        )
    else:
        status = "active"
    return MethodState(
        method=method,
        status=status,
        lock=lock_view,
        resend_count=projection.resend_count(now, lock_policy_),
        resend_threshold=lock_policy_.threshold,
        resends_blocked=blocked,
        phone=mask_phone(method.phone_number),
    )


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hours" if hours >= 1 else f"{delta.total_seconds() / 60:g} minutes"


# ---------------------------------------------------------------------------------------------
# The customer's 2SV state and the next step (the engine's input, built in a fixed few queries)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwosvState:
    customer: Customer
    server_time: datetime
    methods: tuple[MethodState, ...]
    latest_lookup: DeliveryLookup | None
    decision: engine.Decision


def _method_facts(state: MethodState, lookup: DeliveryLookup | None) -> engine.MethodFacts:
    method = state.method
    return engine.MethodFacts(
        method_id=method.method_id,
        kind=method.kind,
        role=method.role,
        active=state.status != "removed",
        locked=state.status == "locked",
        seconds_remaining=state.lock.seconds_remaining if state.lock else None,
        locked_until=state.lock.locked_until if state.lock else None,
        resend_count=state.resend_count,
        has_phone=bool(method.phone_number),
        phone_region=state.phone.region if state.phone else None,
        visible_in_crm=method.visible_in_crm,
        enrolled_at=method.enrolled_at,
        phone_changed_at=state.phone_changed_at,
        latest_verdict=(lookup.verdict or None) if lookup is not None else None,
    )


def _lookup_facts(lookup: DeliveryLookup) -> engine.LookupFacts:
    return engine.LookupFacts(
        lookup_id=str(lookup.id),
        method_id=lookup.method.method_id,
        status=lookup.status,
        verdict=lookup.verdict or None,
        created_at=lookup.created_at,
        finished_at=lookup.finished_at,
    )


def _readable(number: str) -> str:
    return phonenumbers.format_number(
        phonenumbers.parse(number, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )


ADVISORY_CACHE_KEY = "twosv:advisory-settings:v2"
# A safety net only: saves and deletes invalidate the entry at once (twosv/apps.py). Processes
# that don't share a cache (the default local-memory cache) may lag this long, and so may an
# entry whose invalidation failed because the cache was unreachable at the time.
ADVISORY_CACHE_SECONDS = 60


class AdvisorySettings(NamedTuple):
    """What every state read needs beside the customer's own rows."""

    sender_numbers: tuple[str, ...]  # active, formatted to read aloud
    regional: dict[str, str]  # region -> the active provider advisory's message
    incidents: dict[str, datetime]  # region -> when its open or confirmed incident opened


# Each process also keeps what it read for this long, so that a state read costs no cache round
# trip: a change made in another process shows within this long, one made in this process at
# once (advisory_settings_forget).
ADVISORY_LOCAL_SECONDS = 1.0
_local: tuple[float, AdvisorySettings] | None = None


def advisory_settings() -> AdvisorySettings:
    """Return the active sender numbers, regional advisories and delivery incident regions.

    Every state read needs these lists and they change rarely: they are cached (the incident
    detection and the admin's incident actions drop the entry when a region's incident opens
    or closes), and each process keeps them for ADVISORY_LOCAL_SECONDS. On a miss they come in
    one UNION query, so even a cold cache keeps the state endpoint within its budget of 8
    queries for a session-authenticated caller. A cache that is down is a miss: the lists come
    from the database (counted and logged, twosv.dependencies), and writing them back is not
    attempted, so the request pays for one failed cache call at most (none for a few seconds
    after a failure).
    """
    global _local
    now = time.monotonic()
    local = _local
    if local is not None and now - local[0] < ADVISORY_LOCAL_SECONDS:
        return local[1]
    read = _advisory_settings_shared()
    _local = (now, read)
    return read


def _advisory_settings_shared() -> AdvisorySettings:
    if skip_while_down("cache"):
        return _advisory_settings_query()
    try:
        cached: AdvisorySettings | None = cache.get(ADVISORY_CACHE_KEY)
    except CACHE_ERRORS as exc:
        record_outage("cache", exc, fallback="advisory settings read from the database")
        return _advisory_settings_query()
    if cached is None:
        cached = _advisory_settings_query()
        try:
            cache.set(ADVISORY_CACHE_KEY, cached, ADVISORY_CACHE_SECONDS)
        except CACHE_ERRORS as exc:
            record_outage("cache", exc, fallback="advisory settings not cached")
    return cached


def advisory_settings_forget() -> None:
    """Drop the cached advisory settings: an admin changed a sender number or an advisory.

    With the cache down there is nothing to drop that a reader could see now; an entry that
    survives the outage expires within ADVISORY_CACHE_SECONDS. The admin's change stands.
    """
    advisory_settings_forget_local()
    try:
        cache.delete(ADVISORY_CACHE_KEY)
    except CACHE_ERRORS as exc:
        record_outage("cache", exc, fallback="advisory settings not invalidated")


def advisory_settings_forget_local() -> None:
    """Drop this process's copy only (tests start each case with none)."""
    global _local
    _local = None


def _advisory_settings_query() -> AdvisorySettings:
    # Typed: PostgreSQL resolves an untyped NULL in the first branch of a UNION as text.
    no_time = Cast(Value(None), output_field=DateTimeField())
    senders = (
        SenderNumber.objects.filter(active=True)
        .order_by()
        .annotate(source=Value("sender"), key=F("phone_number"), text=Value(""), since=no_time)
        .values_list("source", "key", "text", "since")
    )
    regions = (
        RegionalAdvisory.objects.filter(active=True)
        .order_by()
        .annotate(source=Value("region"), key=F("region"), text=F("message"), since=no_time)
        .values_list("source", "key", "text", "since")
    )
    incidents = (
        Incident.objects.filter(status__in=sorted(INCIDENT_ACTIVE_STATUSES))
        .order_by()
        .annotate(source=Value("incident"), key=F("region"), text=Value(""), since=F("opened_at"))
        .values_list("source", "key", "text", "since")
    )
    numbers: list[str] = []
    advisories: dict[str, str] = {}
    incident_regions: dict[str, datetime] = {}
    for source, key, text, since in senders.union(regions, incidents, all=True):
        if source == "sender":
            numbers.append(key)
        elif source == "region":
            advisories[key] = text
        elif since is not None:
            incident_regions[key] = since
    return AdvisorySettings(
        tuple(_readable(number) for number in sorted(numbers)), advisories, incident_regions
    )


def access_customer_state(*, customer_id: str, now: datetime) -> TwosvState:
    """Return the customer's 2SV state or raise NotFound, in one query.

    access_customer and customer_twosv_state together, for the agents' most frequent read:
    a malformed id answers exactly like an unknown one.
    """
    if not customer_is_valid_id(customer_id):
        raise _unknown_customer()
    customer, methods, lookups = state_rows("customer_id", customer_id)
    if customer is None:
        raise _unknown_customer()
    return _twosv_state(customer, methods, lookups, now=now, session=None)


def customer_twosv_state(
    *,
    customer: Customer,
    now: datetime,
    session: TroubleshootingSession | None = None,
) -> TwosvState:
    """Return every method's state, the latest lookup for the subject method and the next step.

    A constant number of queries whatever the length of the event history: the projection is
    stored on each method row, so no event is read.
    """
    _, methods, lookups = state_rows("id", customer.pk, customer)
    return _twosv_state(customer, methods, lookups, now=now, session=session)


def _twosv_state(
    customer: Customer,
    methods: tuple[Method, ...],
    lookups: dict[int, DeliveryLookup],
    *,
    now: datetime,
    session: TroubleshootingSession | None,
) -> TwosvState:
    states = tuple(method_state(m, now=now) for m in methods)
    by_id = {state.method_id: state.method for state in states}
    by_pk = {state.method.pk: state.method for state in states}
    answers = engine.Answers()
    session_id = session_method_id = None
    if session is not None:
        answers = engine.Answers(
            has_device_access=session.has_device_access,
            has_backup_device_access=session.has_backup_device_access,
            phone_number_changed=session.phone_number_changed,
            phone_number_matches=session.phone_number_matches,
            phone_check_misses=session.phone_check_misses,
        )
        session_id = str(session.id)
        # The FK's pk, not session.method: the method is already loaded among the states.
        chosen = by_pk.get(session.method_id) if session.method_id is not None else None
        session_method_id = chosen.method_id if chosen is not None else None
    sender_numbers, regional, incidents = advisory_settings()
    facts = engine.Facts(
        now=now,
        customer_id=customer.customer_id,
        methods=tuple(_method_facts(state, lookups.get(state.method.pk)) for state in states),
        answers=answers,
        session_id=session_id,
        session_method_id=session_method_id,
        lock_threshold=settings.TWOSV_RESEND_LOCK_THRESHOLD,
        lookup_freshness=settings.TWOSV_LOOKUP_FRESHNESS,
        sender_numbers=sender_numbers,
        regional_advisories=regional,
        delivery_incidents=incidents,
        cancel_2sv_url=settings.TWOSV_CANCEL_2SV_URL,
    )
    subject = engine.subject_method(facts)
    lookup = lookups.get(by_id[subject.method_id].pk) if subject is not None else None
    if lookup is not None:
        facts = replace(facts, latest_lookup=_lookup_facts(lookup))
    return TwosvState(
        customer=customer,
        server_time=now,
        methods=states,
        latest_lookup=lookup,
        decision=engine.decide(facts),
    )


def access_session(*, session_id: str, user: Any) -> TroubleshootingSession:
    """Return the agent's own session (any session for a superuser) or raise NotFound."""
    sessions = TroubleshootingSession.objects.select_related("customer", "agent")
    if not user.is_superuser:
        # Another agent's session answers as if it didn't exist: ids can't be probed.
        sessions = sessions.filter(agent=user)
    session = sessions.filter(pk=session_id).first()
    if session is None:
        raise NotFound("No troubleshooting session with this id.", code=ErrorCode.UNKNOWN_SESSION)
    return session


def customer_method(*, customer: Customer, method_id: str, now: datetime) -> Method:
    """Return the customer's active method `method_id`.

    Raise NotFound for an id the customer doesn't have (another customer's method answers the
    same) and Conflict for a removed method.
    """
    method = Method.objects.filter(customer=customer, method_id=method_id).first()
    if method is None:
        raise NotFound(
            "This customer has no method with this id.",
            code=ErrorCode.UNKNOWN_METHOD,
            field="method_id",
        )
    if method.removed_at is not None and method.removed_at <= now:
        raise Conflict("This method was removed.", code=ErrorCode.METHOD_REMOVED, field="method_id")
    return method


def subject_method(*, customer: Customer, chosen: Method | None, now: datetime) -> Method | None:
    """Return the subject method (P in docs/SPEC.md: the method the customer is trying to use).

    It is `chosen` if active, else the active primary, else the oldest active method.

    The same choice as engine.subject_method (docs/SPEC.md section 4), for writes that need the row.
    """
    if chosen is not None and (chosen.removed_at is None or chosen.removed_at > now):
        return chosen
    active = list(
        Method.objects.filter(customer=customer)
        .filter(Q(removed_at__isnull=True) | Q(removed_at__gt=now))
        .order_by("enrolled_at", "id")
    )
    primary = [m for m in active if m.role == "primary"]
    candidates = primary or active
    return candidates[0] if candidates else None
