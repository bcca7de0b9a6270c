"""Row locks: every `select_for_update()` of the services is written here, once.

Locks are taken in one order across all services, so two transactions never wait on each
other in a circle: **methods** (several at once in pk order), then **the troubleshooting
session**, then **the delivery lookup**, then **the customer**. A service that needs rows of two
kinds takes them in that order; today only the phone check locks two (its session, then its
customer, to count the customer's checks), and writes to the others (the sessions' phone check,
a new lookup) come after the method's lock.

``of=("self",)`` wherever a related row is joined in: it locks the row named and not the
joined ones (locking a customer would serialize all of its methods for nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from twosv.models import Customer, DeliveryLookup, Method, TroubleshootingSession


def methods_for_update(*, method_ids: Iterable[str]) -> list[Method]:
    """Lock the methods with these method_ids, in pk order, and return them with customers.

    One query; pk order so that two writers naming the same methods can't deadlock. Every
    event of one method then serializes here, and what is read afterwards (its events, its
    projection) includes whatever a concurrent writer committed.
    """
    return list(
        Method.objects.select_for_update(of=("self",))
        .select_related("customer")
        .filter(method_id__in=set(method_ids))
        .order_by("pk")
    )


def method_for_update(*, pk: int) -> Method:
    """Lock the method and return it with its customer; raise DoesNotExist if it is gone."""
    return Method.objects.select_for_update(of=("self",)).select_related("customer").get(pk=pk)


def method_lock(*, pk: int) -> None:
    """Lock the method row without loading it: to serialize requests that concern it."""
    Method.objects.select_for_update().filter(pk=pk).values_list("pk").first()


def session_for_update(*, pk: uuid.UUID) -> TroubleshootingSession:
    """Lock the troubleshooting session and return it with its customer and method."""
    return (
        TroubleshootingSession.objects.select_for_update(of=("self",))
        .select_related("customer", "method")
        .get(pk=pk)
    )


def lookup_for_update(*, pk: uuid.UUID) -> DeliveryLookup | None:
    """Lock the delivery lookup and return it; None if it doesn't exist."""
    return DeliveryLookup.objects.select_for_update().filter(pk=pk).first()


def lookup_with_method_for_update(*, pk: uuid.UUID) -> DeliveryLookup | None:
    """Lock the delivery lookup (not its method) and return it with its method; None if none."""
    return (
        DeliveryLookup.objects.select_for_update(of=("self",))
        .select_related("method")
        .filter(pk=pk)
        .first()
    )


def customer_lock(*, pk: int) -> None:
    """Lock the customer row to serialize its phone checks, whatever the session or agent.

    FOR NO KEY UPDATE (PostgreSQL): two phone checks of one customer wait on each other, while
    rows that merely reference the customer (events, methods, sessions, audit) are still
    inserted, since their foreign-key checks take FOR KEY SHARE, which this doesn't block.
    """
    Customer.objects.select_for_update(no_key=True).filter(pk=pk).values_list("pk").first()
