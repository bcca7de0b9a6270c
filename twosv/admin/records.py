"""The read-only records (event log, lookups, sessions, audit trail) and the reference data."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from twosv.admin.auditing import AuditedAdminMixin
from twosv.admin.common import (
    PhoneTailSearchMixin,
    ReadOnlyAdminMixin,
    method_short,
    one_line,
    short_time,
)
from twosv.admin.exports import AuditEntryResource, CsvExportMixin, TroubleshootingSessionResource
from twosv.admin.insights_page import insights_page
from twosv.insights import step_title
from twosv.masking import masked_event_data, masked_recipient, redact_phone_numbers
from twosv.models import (
    AuditEntry,
    DeliveryAttempt,
    DeliveryLookup,
    Event,
    LocalDeliveryRecord,
    RegionalAdvisory,
    SenderNumber,
    TroubleshootingSession,
)

# ---------------------------------------------------------------------------------------------
# The event log and the insights page
# ---------------------------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Short columns, to fit 1280 px beside the filter (the method's id, not its description).
    list_display = [
        "event_id",
        "type",
        "customer_ref",
        "method_ref",
        "occurred",
        "outcome",
        "actor",
    ]
    list_filter = ["type", "outcome"]
    list_select_related = ["customer", "method", "actor"]
    search_fields = ["=event_id", "=customer__customer_id", "=method__method_id"]
    search_help_text = _("Exact event id, customer id or method id.")
    date_hierarchy = "occurred_at"
    show_full_result_count = False
    readonly_fields = (
        "event_id",
        "type",
        "customer",
        "method",
        "occurred_at",
        "received_at",
        "outcome",
        "actor",
        "data_masked",
    )
    fields = readonly_fields

    @admin.display(description=_("customer"), ordering="customer__customer_id")
    def customer_ref(self, event: Event) -> str:
        return event.customer.customer_id

    @admin.display(description=_("method"), ordering="method__method_id")
    def method_ref(self, event: Event) -> str:
        return event.method.method_id if event.method is not None else "—"

    @admin.display(description=_("occurred"), ordering="occurred_at")
    def occurred(self, event: Event) -> str:
        return short_time(event.occurred_at)

    @admin.display(description=_("data"))
    def data_masked(self, event: Event) -> str:
        data = json.dumps(masked_event_data(event.data), indent=2, ensure_ascii=False)
        return format_html("<pre>{}</pre>", data)

    def get_urls(self) -> list[URLPattern]:
        insights_url = path(
            "insights/",
            self.admin_site.admin_view(self.insights_view),
            name="twosv_insights",
        )
        return [insights_url, *super().get_urls()]

    def insights_view(self, request: HttpRequest) -> HttpResponse:
        """Show locks, lookup verdicts and next-step outcomes over 7, 30 or 90 days."""
        return insights_page(self, request)


# ---------------------------------------------------------------------------------------------
# Lookups, sessions, audit
# ---------------------------------------------------------------------------------------------


class DeliveryAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeliveryAttempt
    readonly_fields = (
        "sent_at",
        "status",
        "error_code",
        "provider",
        "sender",
        "updated_at",
        "external_id",
    )
    fields = readonly_fields
    extra = 0


class ListColumnsMixin:
    """Short columns shared by the lists of lookups and sessions (the id is on the change page)."""

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: DeliveryLookup | TroubleshootingSession) -> str:
        return short_time(obj.created_at)

    @admin.display(description=_("customer"), ordering="customer__customer_id")
    def customer_ref(self, obj: DeliveryLookup | TroubleshootingSession) -> str:
        return obj.customer.customer_id

    @admin.display(description=_("method"), ordering="method__method_id")
    def method_ref(self, obj: DeliveryLookup | TroubleshootingSession) -> str:
        return method_short(obj.method)


@admin.register(DeliveryLookup)
class DeliveryLookupAdmin(ListColumnsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    # Key columns that fit 1280 px beside the filter; id, tries and times on the change page.
    list_display = ["created", "customer_ref", "method_ref", "status", "verdict", "finished"]
    list_display_links = ["created"]
    list_filter = ["status", "verdict"]
    list_select_related = ["customer", "method"]
    search_fields = ["=id", "=customer__customer_id", "=method__method_id"]
    date_hierarchy = "created_at"
    inlines = [DeliveryAttemptInline]
    readonly_fields = (
        "id",
        "customer",
        "method",
        "requested_by",
        "status",
        "verdict",
        "period_start",
        "tries",
        "failure_reason",
        "created_at",
        "enqueued_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields

    @admin.display(description=_("finished"), ordering="finished_at")
    def finished(self, lookup: DeliveryLookup) -> str:
        return short_time(lookup.finished_at)


class FinalStepFilter(admin.SimpleListFilter):
    """The sessions' final steps by title, as agents saw them."""

    title = _("final step")
    parameter_name = "final_step_code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        codes = (
            TroubleshootingSession.objects.exclude(final_step_code="")
            .values_list("final_step_code", flat=True)
            .distinct()
            .order_by("final_step_code")
        )
        return sorted(((code, step_title(code)) for code in codes), key=lambda item: item[1])

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[TroubleshootingSession]
    ) -> QuerySet[TroubleshootingSession]:
        if self.value():
            return queryset.filter(final_step_code=self.value())
        return queryset


@admin.register(TroubleshootingSession)
class TroubleshootingSessionAdmin(
    ListColumnsMixin, CsvExportMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    resource_classes = [TroubleshootingSessionResource]
    # Key columns that fit 1280 px beside the filter; id, closing time, answers on the page.
    list_display = ["created", "customer_ref", "agent", "method_ref", "outcome", "helpful", "step"]
    list_display_links = ["created"]
    list_filter = ["outcome", "helpful", FinalStepFilter]
    list_select_related = ["customer", "agent", "method"]
    search_fields = ["=id", "=customer__customer_id", "=agent__username"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "customer",
        "agent",
        "method",
        "has_device_access",
        "has_backup_device_access",
        "phone_number_changed",
        "phone_number_matches",
        "phone_check_misses",
        "phone_verify_tries",
        "created_at",
        "updated_at",
        "closed_at",
        "outcome",
        "helpful",
        "step",
        "final_step_code",
        "comment_redacted",
    )
    fields = readonly_fields

    @admin.display(description=_("comment"))
    def comment_redacted(self, session: TroubleshootingSession) -> str:
        return redact_phone_numbers(session.comment)

    @admin.display(description=_("final step"), ordering="final_step_code")
    def step(self, session: TroubleshootingSession) -> str:
        if not session.final_step_code:
            return "—"
        return format_html(
            '<span title="{}">{}</span>',
            session.final_step_code,
            step_title(session.final_step_code),
        )


@admin.register(AuditEntry)
class AuditEntryAdmin(CsvExportMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    resource_classes = [AuditEntryResource]
    list_display = [
        "created_at",
        "actor_username",
        "action",
        "result",
        "customer_ref",
        "object_type",
        "object_id",
        "client_ip",
    ]
    list_filter = ["action", "result"]
    search_fields = ["=customer_ref", "=actor_username", "=object_id", "=request_id"]
    search_help_text = _("Exact customer id, username, object id or request id.")
    date_hierarchy = "created_at"
    show_full_result_count = False


# ---------------------------------------------------------------------------------------------
# Editable reference data
# ---------------------------------------------------------------------------------------------


@admin.register(SenderNumber)
class SenderNumberAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["phone_number", "label", "active"]
    list_filter = ["active"]


@admin.register(RegionalAdvisory)
class RegionalAdvisoryAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["region", "message", "active", "created_at"]
    list_filter = ["active"]


@admin.register(LocalDeliveryRecord)
class LocalDeliveryRecordAdmin(AuditedAdminMixin, PhoneTailSearchMixin, admin.ModelAdmin):
    """Messages of the local ATS backend (demo and development data)."""

    phone_tail_lookup = "to__endswith"
    # The key columns, to fit 1280 px beside the filter; the provider is on the change page.
    list_display = ["created", "recipient", "status", "error", "sender"]
    list_display_links = ["created"]
    list_filter = ["status", "provider"]
    search_fields = ["=external_id"]
    search_help_text = _("Exact external id, or the last 4 digits of the recipient's number.")

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, record: LocalDeliveryRecord) -> str:
        return short_time(record.created_at)

    @admin.display(description=_("error"), ordering="error_code")
    def error(self, record: LocalDeliveryRecord) -> int | None:
        return record.error_code

    @admin.display(description=_("to"), ordering="to")
    def recipient(self, record: LocalDeliveryRecord) -> str:
        # Masked, email addresses too (j•••@example.com); the change form edits the record.
        return one_line(masked_recipient(record.to))
