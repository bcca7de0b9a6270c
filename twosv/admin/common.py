"""What the model admins share: phone-tail search, read-only rows, request helpers, state."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

# The address as the API and the panel record it (NUM_PROXIES honoured), re-exported for actions.
from crm_plugin.http.context import audit_context as audit_context
from twosv.models import Method
from twosv.selectors import MethodState, method_state

_PUNCTUATION = re.compile(r"[\s().-]")
# Exactly four digits (docs/SPEC.md §6): with more, or with a varying number, an admin who may
# not see a number could rebuild it one digit at a time from which searches match.
PHONE_TAIL_DIGITS = 4
_PHONE_TAIL = re.compile(rf"^[0-9]{{{PHONE_TAIL_DIGITS}}}$")


def phone_tail(search_term: str) -> str | None:
    """Return the last four digits of a phone number to search by, if the term is exactly that.

    Spaces, dots, dashes and brackets between the digits are ignored; any other number of
    digits (or a leading +) is no phone search at all: id and name search still apply to it.
    """
    compact = _PUNCTUATION.sub("", search_term.strip())
    return compact if _PHONE_TAIL.match(compact) else None


class PhoneTailSearchMixin:
    """Let admins search by exactly the last four digits of a phone (`phone_tail_lookup`)."""

    phone_tail_lookup = ""
    # A lookup through a to-many relation can match one row several times.
    phone_tail_may_duplicate = False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        results, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        digits = phone_tail(search_term)
        if digits:
            results |= queryset.filter(**{self.phone_tail_lookup: digits})
            may_have_duplicates = may_have_duplicates or self.phone_tail_may_duplicate
        return results, may_have_duplicates


class ReadOnlyAdminMixin:
    """Nobody adds, changes or deletes these rows in the admin, superusers included."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def acting_user(request: HttpRequest) -> User:
    if not isinstance(request.user, User):  # pragma: no cover - the admin requires a login
        raise PermissionDenied
    return request.user


def locked_now(now: datetime) -> Q:
    """Match methods whose lock holds at `now` (same rule as policy.Lock.active_at)."""
    return (
        Q(locked_at__lte=now, locked_until__gt=now)
        & (Q(lock_lifted_at__isnull=True) | Q(lock_lifted_at__gt=now))
        & (Q(removed_at__isnull=True) | Q(removed_at__gt=now))
    )


def state(method: Method) -> MethodState:
    """Return the method's state, computed once per row of a page."""
    cached: MethodState | None = getattr(method, "_admin_state", None)
    if cached is None:
        cached = method_state(method, now=timezone.now())
        method._admin_state = cached  # type: ignore[attr-defined]
    return cached


def status_text(state: MethodState) -> str:
    if state.lock is not None:
        until = timezone.localtime(state.lock.locked_until)
        return f"locked until {until:%Y-%m-%d %H:%M %Z}"
    return state.status


def resends_text(state: MethodState) -> str:
    return f"{state.resend_count} / {state.resend_threshold}"


# ---------------------------------------------------------------------------------------------
# Compact list cells: a change list fits 1280 px with the filter beside it
# ---------------------------------------------------------------------------------------------

# Kinds as a list column names them (the change page keeps the full label).
KIND_SHORT = {
    "sms": "SMS",
    "voice": "voice",
    "email": "email",
    "authenticator_app": "app",
    "security_key": "key",
}


def short_time(value: datetime | None) -> SafeString | str:
    """Return a time as list columns show it: local, to the minute, date over time.

    The full time with seconds and offset shows on hover.
    """
    if value is None:
        return "—"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}"><span class="nowrap">{}</span> {}</time>',
        local.isoformat(timespec="seconds"),
        local.isoformat(timespec="seconds"),
        f"{local:%Y-%m-%d}",
        f"{local:%H:%M}",
    )


def one_line(text: str) -> SafeString:
    """Return `text` in a cell that doesn't wrap (a masked number, an id)."""
    return format_html('<span class="nowrap">{}</span>', text)


def method_short(method: Method | None) -> str:
    """Return a method as list columns name it: its id and kind ("cust-1-sms (SMS)")."""
    if method is None:
        return "—"
    return f"{method.method_id} ({KIND_SHORT.get(method.kind, method.kind)})"


def status_short(state: MethodState) -> str:
    """Return the method's status for a list column: the lock's end, without the zone."""
    if state.lock is not None:
        until = timezone.localtime(state.lock.locked_until)
        return f"locked until {until:%Y-%m-%d %H:%M}"
    return state.status
