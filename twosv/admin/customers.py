"""Customers and their methods: masked numbers, lock status, and the actions on methods."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from twosv.admin.actions import lift_lock, run_delivery_lookup
from twosv.admin.auditing import AuditedAdminMixin
from twosv.admin.common import (
    KIND_SHORT,
    PhoneTailSearchMixin,
    locked_now,
    one_line,
    resends_text,
    state,
    status_short,
    status_text,
)
from twosv.masking import masked_phone
from twosv.models import Customer, Method


class MethodInline(admin.TabularInline):
    model = Method
    readonly_fields = (
        "method_id",
        "kind",
        "role",
        "phone",
        "label",
        "visible_in_crm",
        "lock",
        "resends",
    )
    fields = readonly_fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("phone"))
    def phone(self, method: Method) -> str:
        return masked_phone(method.phone_number)

    @admin.display(description=_("status"))
    def lock(self, method: Method) -> str:
        return status_text(state(method))

    @admin.display(description=_("resend count"))
    def resends(self, method: Method) -> str:
        return resends_text(state(method))


@admin.register(Customer)
class CustomerAdmin(AuditedAdminMixin, PhoneTailSearchMixin, admin.ModelAdmin):
    phone_tail_lookup = "methods__phone_number__endswith"
    phone_tail_may_duplicate = True
    list_display = ["customer_id", "display_name", "method_count", "created_at"]
    search_fields = ["customer_id", "display_name"]
    search_help_text = _("Customer id, name, or the last 4 digits of a phone number.")
    inlines = [MethodInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        queryset: QuerySet[Customer] = super().get_queryset(request)
        return queryset.annotate(method_count=Count("methods"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The id links the CRM's customer to its events: it is set once.
        return ["customer_id", "created_at"] if obj is not None else ["created_at"]

    @admin.display(description=_("methods"), ordering="method_count")
    def method_count(self, customer: Customer) -> int:
        count: int = customer.method_count  # type: ignore[attr-defined]
        return count


class LockedNowFilter(admin.SimpleListFilter):
    title = _("locked now")
    parameter_name = "locked_now"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Locked")), ("no", _("Not locked"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        locked = locked_now(timezone.now())
        if self.value() == "yes":
            return queryset.filter(locked)
        if self.value() == "no":
            return queryset.exclude(locked)
        return queryset


# Only what the CRM shows may be edited on a method; everything else is written by events.
METHOD_EDITABLE = ("label", "visible_in_crm")
METHOD_FIELDS = (
    "customer",
    "method_id",
    "kind",
    "role",
    "phone",
    "email",
    "label",
    "visible_in_crm",
    "enrolled_at",
    "removed_at",
    "lock",
    "resends",
    "locked_at",
    "locked_until",
    "lock_lifted_at",
    "last_event_at",
    "events_link",
)


@admin.register(Method)
class MethodAdmin(AuditedAdminMixin, PhoneTailSearchMixin, admin.ModelAdmin):
    phone_tail_lookup = "phone_number__endswith"
    # The key columns only, short, so they fit 1280 px beside the filter; the change page has
    # the rest (full status with time zone, removal, lock times, events).
    list_display = [
        "method_id",
        "customer_ref",
        "kind_short",
        "role",
        "phone_short",
        "status_short",
        "resends",
    ]
    list_filter = ["kind", "role", LockedNowFilter]
    list_select_related = ["customer"]
    search_fields = ["method_id", "customer__customer_id", "customer__display_name"]
    search_help_text = _("Method id, customer id or name, or the last 4 digits of a phone number.")
    actions = [lift_lock, run_delivery_lookup]
    fields = METHOD_FIELDS
    readonly_fields = tuple(name for name in METHOD_FIELDS if name not in METHOD_EDITABLE)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Methods are created by method_enrolled events.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The event log refers to the method; removal is a method_removed event.
        return False

    def has_lift_lock_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("twosv.lift_lock")

    def has_run_lookup_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("twosv.add_deliverylookup")

    @admin.display(description=_("phone"))
    def phone(self, method: Method) -> str:
        return masked_phone(method.phone_number)

    @admin.display(description=_("status"), ordering="locked_until")
    def lock(self, method: Method) -> str:
        return status_text(state(method))

    @admin.display(description=_("customer"), ordering="customer__customer_id")
    def customer_ref(self, method: Method) -> str:
        return method.customer.customer_id

    @admin.display(description=_("kind"), ordering="kind")
    def kind_short(self, method: Method) -> str:
        return KIND_SHORT.get(method.kind, method.kind)

    @admin.display(description=_("phone"))
    def phone_short(self, method: Method) -> str:
        return one_line(masked_phone(method.phone_number))

    @admin.display(description=_("status"), ordering="locked_until")
    def status_short(self, method: Method) -> str:
        return status_short(state(method))

    @admin.display(description=_("resends"))
    def resends(self, method: Method) -> str:
        return resends_text(state(method))

    @admin.display(description=_("events"))
    def events_link(self, method: Method) -> str:
        url = reverse("admin:twosv_event_changelist") + f"?method__id__exact={method.pk}"
        return format_html('<a href="{}">{}</a>', url, _("Events of this method"))
