"""The panel's method timeline (docs/SPEC.md §10): the last 24 hours, as an HTML fragment.

The page (templates/panel/customer.html) has a collapsible section for the method the step is
about; static/panel/panel.js fetches this fragment while the section is open and the page shown,
every 3 seconds for 5 minutes at most, so that the agent sees a resend's receipt arrive. The same
selector as the API's timeline (twosv.timeline.method_timeline), reached through
access_customer, counted under the API's `agent_read` throttle and audited as the API's read is:
a GET that writes its audit row and nothing else. Numbers come masked from the selector.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from crm_plugin.http.context import acting_user, audit_context
from crm_plugin.panel import display
from crm_plugin.panel.views import READ, panel_agent_view
from twosv.audit import AuditAction, audit_read
from twosv.errors import ErrorCode, NotFound
from twosv.models import Method
from twosv.selectors import access_customer
from twosv.timeline import TimelineItem, method_timeline

TIMELINE_PERIOD = timedelta(hours=24)
# The panel shows this many of the newest items (the API pages through all of them).
TIMELINE_SHOWN = 50

STATUS_WORDS = {
    "delivered": "Delivered",
    "read": "Read",
    "undelivered": "Not delivered",
    "failed": "Failed",
    "sent": "Sent",
    "sending": "Sending",
    "queued": "Queued",
    "accepted": "Accepted",
    "scheduled": "Scheduled",
    "canceled": "Cancelled",
}
# Statuses that say a code did not reach the phone: shown in red.
FAILED_STATUSES = frozenset({"undelivered", "failed", "canceled"})


@dataclass(frozen=True)
class ShownItem:
    """A timeline item as the fragment shows it: a stable key, time, words and status."""

    key: str
    at: datetime
    type: str
    pieces: list[display.Piece]
    status: str | None
    status_words: str
    failed: bool
    error_code: int | None


def _shown(item: TimelineItem) -> ShownItem:
    status = item.status
    return ShownItem(
        key=f"{item.source}-{item.row}",
        at=item.at,
        type=item.type,
        pieces=display.pieces(item.detail),
        status=status,
        status_words=STATUS_WORDS.get(status, status.capitalize()) if status else "",
        failed=status in FAILED_STATUSES,
        error_code=item.error_code,
    )


@panel_agent_view(READ)
@require_GET
def method_timeline_fragment(
    request: HttpRequest, customer_id: str, method_id: str
) -> HttpResponse:
    """Render the method's last 24 hours, newest first, for the page to show and poll."""
    customer = access_customer(customer_id=customer_id)
    method = Method.objects.filter(customer=customer, method_id=method_id).first()
    if method is None:
        raise NotFound("This customer has no method with this id.", code=ErrorCode.UNKNOWN_METHOD)
    now = timezone.now()
    page = method_timeline(method=method, since=now - TIMELINE_PERIOD, limit=TIMELINE_SHOWN)
    audit_read(
        actor=acting_user(request),
        action=AuditAction.TIMELINE_READ,
        customer_ref=customer.customer_id,
        obj=method,
        details={"method_id": method.method_id, "items": len(page.items), "via": "panel"},
        context=audit_context(request),
    )
    return render(
        request,
        "panel/_timeline.html",
        {
            "items": [_shown(item) for item in page.items],
            "more": page.next_cursor is not None,
            "shown": TIMELINE_SHOWN,
            "now": now,
        },
    )
