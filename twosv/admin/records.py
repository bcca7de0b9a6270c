"""The read-only records (event log, lookups, sessions, audit trail) and the reference data."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from twosv.admin.auditing import AuditedAdminMixin
from twosv.admin.common import PhoneTailSearchMixin, ReadOnlyAdminMixin
from twosv.admin.exports import AuditEntryResource, CsvExportMixin, TroubleshootingSessionResource
from twosv.admin.insights_page import insights_page
from twosv.masking import masked_event_data, masked_phone, redact_phone_numbers
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
    list_display = ["event_id", "type", "customer", "method", "occurred_at", "outcome", "actor"]
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


@admin.register(DeliveryLookup)
class DeliveryLookupAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "customer",
        "method",
        "status",
        "verdict",
        "tries",
        "created_at",
        "finished_at",
    ]
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


@admin.register(TroubleshootingSession)
class TroubleshootingSessionAdmin(CsvExportMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    resource_classes = [TroubleshootingSessionResource]
    list_display = [
        "id",
        "customer",
        "agent",
        "method",
        "created_at",
        "closed_at",
        "outcome",
        "helpful",
        "final_step_code",
    ]
    list_filter = ["outcome", "helpful", "final_step_code"]
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
        "phone_number_matches",
        "phone_verify_tries",
        "created_at",
        "updated_at",
        "closed_at",
        "outcome",
        "helpful",
        "final_step_code",
        "comment_redacted",
    )
    fields = readonly_fields

    @admin.display(description=_("comment"))
    def comment_redacted(self, session: TroubleshootingSession) -> str:
        return redact_phone_numbers(session.comment)


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
    list_display = ["created_at", "recipient", "sender", "provider", "status", "error_code"]
    list_filter = ["status", "provider"]
    search_fields = ["=external_id"]
    search_help_text = _("Exact external id, or the last 4 digits of the recipient's number.")

    @admin.display(description=_("to"), ordering="to")
    def recipient(self, record: LocalDeliveryRecord) -> str:
        return record.to if "@" in record.to else masked_phone(record.to)
