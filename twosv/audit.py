"""The audit trail: one row per agent read or agent/admin action, written as data."""

import contextlib
import json
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from twosv.models import AuditEntry


@dataclass(frozen=True)
class AuditContext:
    """Where a request came from: set by the HTTP layer, carried into services."""

    request_id: str = ""
    client_ip: str | None = None


NO_CONTEXT = AuditContext()


class AuditAction(StrEnum):
    """Every action the audit trail records; the admin filters on these."""

    STATE_READ = "state_read"
    SESSION_READ = "session_read"
    SESSION_START = "session_start"
    SESSION_UPDATE = "session_update"
    SESSION_CLOSE = "session_close"
    PHONE_VERIFY = "phone_verify"
    LOCK_LIFT = "lock_lift"
    LOOKUP_REQUEST = "lookup_request"
    LOOKUP_READ = "lookup_read"
    TIMELINE_READ = "timeline_read"
    PANEL_LINK_CREATE = "panel_link_create"
    PANEL_LINK_OPEN = "panel_link_open"
    # A CRM's signed assertion (docs/SPEC.md §9): refused, exchanged for an access token, used
    # to launch the panel, or the first sight that provisioned its agent.
    CRM_ASSERTION_REFUSED = "crm_assertion_refused"
    CRM_TOKEN_EXCHANGE = "crm_token_exchange"  # noqa: S105 (an action name, no secret)
    CRM_PANEL_LAUNCH = "crm_panel_launch"
    CRM_AGENT_PROVISION = "crm_agent_provision"
    PERMISSION_DENIED = "permission_denied"
    ADMIN_ADD = "admin_add"
    ADMIN_CHANGE = "admin_change"
    ADMIN_DELETE = "admin_delete"
    # A late (re-folded) event ended, moved or created a method's active lock.
    LATE_EVENT_CHANGED_LOCK = "late_event_changed_lock"
    # Delivery incidents (docs/SPEC.md §11): opened and resolved by the detection task (no
    # actor), confirmed, dismissed or resolved by an admin.
    INCIDENT_OPEN = "incident_open"
    INCIDENT_AUTO_RESOLVE = "incident_auto_resolve"
    INCIDENT_CONFIRM = "incident_confirm"
    INCIDENT_DISMISS = "incident_dismiss"
    INCIDENT_RESOLVE = "incident_resolve"


def audit_record(
    *,
    actor: User | AnonymousUser | None,
    action: AuditAction,
    result: str,
    customer_ref: str = "",
    obj: Any = None,
    details: dict[str, Any] | None = None,
    context: AuditContext = NO_CONTEXT,
) -> int:
    """Write one audit row and return its id. ``details`` must never hold a phone number, code
    or secret."""
    values = _row(actor, action, result, customer_ref, obj, details, context)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, values)  # plain, not prepared: see twosv/sql.py
        return int(cursor.fetchone()[0])


def audit_read(
    *,
    actor: User | AnonymousUser | None,
    action: AuditAction,
    customer_ref: str,
    obj: Any = None,
    details: dict[str, Any] | None = None,
    context: AuditContext = NO_CONTEXT,
) -> None:
    """Write the audit row of an agent's read (result "ok"), committed without waiting for the
    disk.

    Reads are the agents' most frequent requests, and waiting for the WAL flush of each read's
    row was most of what the row cost a concurrent read (docs/performance.md). On PostgreSQL,
    outside a transaction, the row is inserted in a transaction of its own with
    ``synchronous_commit`` off for that transaction only (``SET LOCAL``), in one round trip:
    PostgreSQL flushes it with the next flush, within a fraction of a second; a crash of the
    database server in that fraction can lose it, never corrupt anything. Actions and
    refusals keep waiting for the disk (`audit_record`), and so does a read's row written
    inside a transaction, which the caller commits.
    """
    values = _row(actor, action, "ok", customer_ref, obj, details, context)
    with connection.cursor() as cursor:
        if cursor.db.vendor != "postgresql" or cursor.db.in_atomic_block:
            cursor.execute(_INSERT, values)
            return
        try:
            cursor.execute(_INSERT_READ, values)
        except Exception:
            # The failed statement left its transaction open and aborted: end it, or every
            # later statement on this connection would fail.
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise


def _row(
    actor: User | AnonymousUser | None,
    action: AuditAction,
    result: str,
    customer_ref: str,
    obj: Any,
    details: dict[str, Any] | None,
    context: AuditContext,
) -> list[Any]:
    user = actor if isinstance(actor, User) else None
    row = {
        "created_at": connection.ops.adapt_datetimefield_value(timezone.now()),
        "actor_id": user.pk if user is not None else None,
        "actor_username": user.get_username() if user is not None else "",
        "action": str(action),
        "result": result,
        "customer_ref": customer_ref,
        "object_type": type(obj).__name__ if obj is not None else "",
        "object_id": str(getattr(obj, "pk", "")) if obj is not None else "",
        "details": json.dumps(details or {}),
        "request_id": context.request_id,
        "client_ip": context.client_ip,
    }
    return [row[name] for name in AUDIT_COLUMNS]


# Refusals of one kind fold into one row per window: a flood can't fill the table.
REFUSAL_WINDOW = timedelta(minutes=1)
# What makes two refusals of one actor "of one kind": values our code sets, so few of them.
# Not the customer, the HTTP method or an event id: the caller writes those, and a flood that
# varied them would write a row each. The row keeps the first refusal's, and the customers.
REFUSAL_KEYS = ("view", "code")
# The customers one row names at most; more are counted, not listed.
REFUSAL_MAX_CUSTOMERS = 20


def audit_refusal(
    *,
    actor: User | AnonymousUser | None,
    customer_ref: str,
    details: dict[str, Any],
    context: AuditContext = NO_CONTEXT,
) -> int:
    """Record a request refused for the caller's role; return the row's id.

    Wrong-role calls are how a leaked producer or agent token shows itself, so the API, the
    event endpoints and the panel all write them here, in one shape. At a bounded rate: the
    first refusal of a kind (actor, view, code) writes a row with ``details.count`` 1; each
    further one inside ``REFUSAL_WINDOW`` of that row adds to its ``count``, sets ``last_at``
    and adds its customer to ``customers`` (up to ``REFUSAL_MAX_CUSTOMERS``, then
    ``customers_truncated``) instead of writing a row. The row is found and locked in the
    database (SELECT ... FOR UPDATE), so every process and worker adds to the same count; two
    first refusals racing may each write a row, never more than one per process at once.
    """
    user = actor if isinstance(actor, User) else None
    now = timezone.now()
    kind = {key: details[key] for key in REFUSAL_KEYS if key in details}
    with transaction.atomic():
        latest = (
            AuditEntry.objects.select_for_update()
            .filter(
                action=AuditAction.PERMISSION_DENIED,
                created_at__gt=now - REFUSAL_WINDOW,
                actor_id=user.pk if user is not None else None,
                **{f"details__{key}": value for key, value in kind.items()},
            )
            .exclude(
                Q.create(
                    [("details__has_key", key) for key in REFUSAL_KEYS if key not in kind],
                    connector=Q.OR,
                )
            )
            .order_by("-created_at", "-id")
            .only("id", "details")
            .first()
        )
        if latest is not None:
            folded = dict(latest.details)
            folded["count"] = int(folded.get("count", 1)) + 1
            folded["last_at"] = now.isoformat()
            customers = list(folded.get("customers", []))
            if customer_ref and customer_ref not in customers:
                if len(customers) < REFUSAL_MAX_CUSTOMERS:
                    folded["customers"] = [*customers, customer_ref]
                else:
                    folded["customers_truncated"] = True
            AuditEntry.objects.filter(pk=latest.pk).update(details=folded)
            return latest.pk
        return audit_record(
            actor=actor,
            action=AuditAction.PERMISSION_DENIED,
            result="refused",
            customer_ref=customer_ref,
            details={**details, "count": 1, "customers": [customer_ref] if customer_ref else []},
            context=context,
        )


# Every agent read writes a row, so the insert is hand-written (docs/performance.md has what the
# ORM's create() cost here). AuditEntry has no signal receivers to miss; tests/test_sql.py holds the
# columns below equal to the model's and the row read back equal to the one written.
AUDIT_COLUMNS = (
    "created_at",
    "actor_id",
    "actor_username",
    "action",
    "result",
    "customer_ref",
    "object_type",
    "object_id",
    "details",
    "request_id",
    "client_ip",
)
_COLUMN_OF = {field.attname: field.column for field in AuditEntry._meta.concrete_fields}
# Identifiers from the model, values as parameters: no input reaches the text.
_INSERT_ROW = "INSERT INTO {table} ({columns}) VALUES ({values})".format(  # noqa: S608
    table=AuditEntry._meta.db_table,
    columns=", ".join(_COLUMN_OF[name] for name in AUDIT_COLUMNS),
    values=", ".join(["%s"] * len(AUDIT_COLUMNS)),
)
_INSERT = f"{_INSERT_ROW} RETURNING {AuditEntry._meta.pk.column}"
# A read's row (`audit_read`): its own transaction, committed without waiting for the WAL flush.
# SET LOCAL ends with the transaction: nothing is left on the server connection for a pooler
# to hand on.
_INSERT_READ = f"BEGIN; SET LOCAL synchronous_commit TO OFF; {_INSERT_ROW}; COMMIT"
