"""Reads: the one way in to a customer, and the facts the policy and engine work on."""

from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from django.conf import settings
from django.utils.dateparse import parse_datetime

from twosv import policy
from twosv.errors import NotFound
from twosv.models import Customer, Method, customer_id_validator


def lock_policy() -> policy.LockPolicy:
    """Return the lock policy configured in settings (TWOSV_RESEND_LOCK_THRESHOLD, ...)."""
    return policy.LockPolicy(
        threshold=settings.TWOSV_RESEND_LOCK_THRESHOLD,
        lock_duration=settings.TWOSV_LOCK_DURATION,
        window=settings.TWOSV_RESEND_WINDOW,
    )


def _parse(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:  # pragma: no cover - written by services only
        raise ValueError(f"bad stored timestamp {value!r}")
    return parsed


def method_projection(method: Method) -> policy.Projection:
    """Return the lock projection stored on the method row."""
    lock = None
    if method.locked_at is not None and method.locked_until is not None:
        lock = policy.Lock(
            locked_at=method.locked_at,
            locked_until=method.locked_until,
            lifted_at=method.lock_lifted_at,
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


def access_customer(*, customer_id: str) -> Customer:
    """Return the customer or raise NotFound: the only way a view reaches a customer.

    A malformed id answers exactly like an unknown one, so ids can't be probed by shape.
    """
    if not customer_is_valid_id(customer_id):
        raise NotFound("No customer with this id.", code="unknown_customer")
    customer = Customer.objects.filter(customer_id=customer_id).first()
    if customer is None:
        raise NotFound("No customer with this id.", code="unknown_customer")
    return customer


# ---------------------------------------------------------------------------------------------
# A method's state as agents see it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedPhone:
    masked: str
    country_code: int
    region: str | None


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
    phone: MaskedPhone | None

    @property
    def method_id(self) -> str:
        return self.method.method_id


def mask_phone(e164: str) -> MaskedPhone | None:
    """Return the number as agents may see it: country code and the last two digits only."""
    if not e164:
        return None
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code is None or parsed.national_number is None:
        return None
    national = str(parsed.national_number)
    hidden = "•" * max(len(national) - 2, 0)
    return MaskedPhone(
        masked=f"+{parsed.country_code} {hidden}{national[-2:]}",
        country_code=parsed.country_code,
        region=phonenumbers.region_code_for_number(parsed),
    )


def method_state(method: Method, *, now: datetime) -> MethodState:
    """Return the method's status, lock and resend count at `now`, from its stored projection."""
    lock_policy_ = lock_policy()
    projection = method_projection(method)
    lock_view = None
    if method.removed_at is not None and method.removed_at <= now:
        status = "removed"
    elif projection.lock is not None and projection.lock.active_at(now):
        status = "locked"
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
        phone=mask_phone(method.phone_number),
    )


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hours" if hours >= 1 else f"{delta.total_seconds() / 60:g} minutes"
