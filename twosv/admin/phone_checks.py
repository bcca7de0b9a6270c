"""Phone checks in the admin: who checked which customer's number, and who is being guessed at.

Read-only. Each row is one check an agent ran (the result only: the number typed is never
stored). The "failed in 24 h" column counts the customer's failed checks (no match, or not a
number) in the per-customer window, and the list sorts by it, most first; the filter "Customers
with failed checks" lists each such customer once (by their latest failed check), so an admin
sees at a glance whose number someone may be trying to rebuild.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone

from twosv.admin.common import ReadOnlyAdminMixin
from twosv.models import PhoneCheck

FAILED = Q(matched=False) | Q(matched__isnull=True)


def _window_start(now: datetime) -> datetime:
    window: timedelta = settings.TWOSV_PHONE_VERIFY_CUSTOMER_WINDOW
    return now - window


def _failed_in_window(since: datetime) -> QuerySet[PhoneCheck]:
    """The failed checks since `since` of the outer row's customer."""
    return PhoneCheck.objects.filter(FAILED, customer=OuterRef("customer"), created_at__gt=since)


def with_customer_failed_count(queryset: QuerySet[PhoneCheck], now: datetime) -> QuerySet[Any]:
    """Annotate each check with its customer's failed checks in the window (`customer_failed`)."""
    counts = (
        _failed_in_window(_window_start(now))
        .order_by()
        .values("customer")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.annotate(
        customer_failed=Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))
    )


class CustomersWithFailedChecksFilter(admin.SimpleListFilter):
    """One row per customer with this many failed checks in the window (its latest failed one)."""

    title = "customers with failed checks in the window"
    parameter_name = "failed_at_least"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        limit: int = settings.TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER
        half = max(limit // 2, 1)
        choices = [
            ("1", "1 or more"),
            (str(half), f"{half} or more"),
            (str(limit), f"{limit} or more (the limit)"),
        ]
        return list(dict(choices).items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value or not value.isdigit():
            return queryset
        since = _window_start(timezone.now())
        latest = _failed_in_window(since).order_by("-created_at", "-pk").values("pk")[:1]
        return queryset.filter(
            FAILED, created_at__gt=since, customer_failed__gte=int(value), pk=Subquery(latest)
        )


@admin.register(PhoneCheck)
class PhoneCheckAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "customer", "result", "customer_failed_in_window", "actor"]
    list_filter = [CustomersWithFailedChecksFilter, "matched"]
    list_select_related = ["customer", "actor"]
    search_fields = ["customer__customer_id"]
    readonly_fields = ("created_at", "customer", "session", "actor", "result")
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # Annotated before ordering: the ordering names the annotation.
        queryset = with_customer_failed_count(self.model._default_manager.all(), timezone.now())
        return queryset.order_by(*self.get_ordering(request))

    def get_ordering(self, request: HttpRequest) -> list[str]:
        # The customers most guessed at first, then the newest checks.
        return ["-customer_failed", "-created_at", "-pk"]

    @admin.display(description="result")
    def result(self, check: PhoneCheck) -> str:
        if check.matched is None:
            return "not a number"
        return "match" if check.matched else "no match"

    @admin.display(description="customer's failed checks in the window", ordering="customer_failed")
    def customer_failed_in_window(self, check: PhoneCheck) -> int:
        return int(getattr(check, "customer_failed", 0))
