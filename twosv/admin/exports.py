"""CSV export of troubleshooting sessions and the audit trail (django-import-export)."""

from __future__ import annotations

from typing import Any

from import_export import resources
from import_export.admin import ExportActionMixin
from import_export.fields import Field
from import_export.formats import base_formats

from twosv.masking import redact_phone_numbers
from twosv.models import AuditEntry, TroubleshootingSession


class _CsvSafeResource(resources.ModelResource):  # type: ignore[misc]
    """A resource whose text cells can't be read as formulas by a spreadsheet."""

    def export_field(self, field: Field, instance: Any, **kwargs: Any) -> Any:
        value = super().export_field(field, instance, **kwargs)
        if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
            return "'" + value
        return value


class TroubleshootingSessionResource(_CsvSafeResource):
    customer = Field(attribute="customer__customer_id", column_name="customer_id")
    agent = Field(attribute="agent__username", column_name="agent")
    method = Field(attribute="method__method_id", column_name="method_id")
    method_kind = Field(attribute="method__kind", column_name="method_kind")
    comment = Field(column_name="comment")

    class Meta:
        model = TroubleshootingSession
        fields = (
            "id",
            "created_at",
            "closed_at",
            "customer",
            "agent",
            "method",
            "method_kind",
            "has_device_access",
            "has_backup_device_access",
            "phone_number_matches",
            "phone_verify_tries",
            "outcome",
            "helpful",
            "final_step_code",
            "comment",
        )
        export_order = fields

    def dehydrate_comment(self, session: TroubleshootingSession) -> str:
        return redact_phone_numbers(session.comment)


class AuditEntryResource(_CsvSafeResource):
    class Meta:
        model = AuditEntry
        fields = (
            "id",
            "created_at",
            "actor_username",
            "action",
            "customer_ref",
            "object_type",
            "object_id",
            "result",
            "details",
            "request_id",
            "client_ip",
        )
        export_order = fields


class CsvExportMixin(ExportActionMixin):  # type: ignore[misc]
    """Export to CSV only (button and action); nothing is ever imported."""

    export_formats = [base_formats.CSV]
    # The change page is read-only: an export button there would POST to a refused form.
    show_change_form_export = False
