"""Audited reads: the agent reads that leave a row in the audit trail.

The reads themselves are selectors; these record them (and load what only one read needs).
"""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User

from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_read
from twosv.errors import NotFound
from twosv.models import Customer, DeliveryLookup, TroubleshootingSession
from twosv.selectors import access_customer


def customer_state_read_audit(
    *,
    customer: Customer,
    actor: User,
    step_code: str,
    session: TroubleshootingSession | None = None,
    context: AuditContext = NO_CONTEXT,
) -> None:
    """Record that an agent read a customer's 2SV state (and which step it showed).

    Reading a session shows the same state, so it is recorded too, against the session.
    """
    audit_read(
        actor=actor,
        action=AuditAction.STATE_READ if session is None else AuditAction.SESSION_READ,
        customer_ref=customer.customer_id,
        obj=customer if session is None else session,
        details={"next_step": step_code},
        context=context,
    )


def lookup_read(
    *, lookup_id: str, actor: User, context: AuditContext = NO_CONTEXT
) -> DeliveryLookup:
    """Return the lookup with its method, customer and attempts, and audit the agent's read.

    Raise NotFound for an unknown or malformed id. (A read, but an audited one: it lives here
    beside `customer_state_read_audit`.)
    """
    try:
        pk = uuid.UUID(str(lookup_id))
    except ValueError:
        raise NotFound("No delivery lookup with this id.") from None
    lookup = (
        DeliveryLookup.objects.select_related("customer", "method")
        .prefetch_related("attempts")
        .filter(pk=pk)
        .first()
    )
    if lookup is None:
        raise NotFound("No delivery lookup with this id.")
    # The one way in to a customer, as for every other agent read.
    access_customer(customer_id=lookup.customer.customer_id)
    audit_read(
        actor=actor,
        action=AuditAction.LOOKUP_READ,
        customer_ref=lookup.customer.customer_id,
        obj=lookup,
        details={"method_id": lookup.method.method_id, "status": lookup.status},
        context=context,
    )
    return lookup
