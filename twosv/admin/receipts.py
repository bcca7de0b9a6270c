"""Twilio's delivery receipts, read-only: each message's furthest status and every receipt.

Rows are written only by the status callback and the reconciliation task (docs/SPEC.md §10);
here admins read them. The method's number shows masked (country code and last two digits),
error codes in words next to the code.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from twosv.admin.common import (
    PhoneTailSearchMixin,
    ReadOnlyAdminMixin,
    method_short,
    one_line,
    short_time,
)
from twosv.masking import masked_recipient
from twosv.models import DeliveryReceipt, Method, TwilioMessage
from twosv.twilio_errors import error_code_meaning


def error_cell(code: int | None) -> SafeString | str:
    """Return an error code for a list column: the code, its meaning in words on hover."""
    if code is None:
        return "—"
    return format_html('<span title="{}">{}</span>', error_code_meaning(code), code)


def error_text(code: int | None) -> str:
    """Return an error code with its meaning, for a change page."""
    if code is None:
        return "—"
    return f"{code}: {error_code_meaning(code)}"


def masked_number(method: Method) -> str:
    """Return the number (or address) of the method, masked."""
    return masked_recipient(method.phone_number or method.email)


class ReceiptColumnsMixin:
    """The columns the two lists share: the method masked, the error code in words."""

    @admin.display(description=_("method"), ordering="method__method_id")
    def method_ref(self, obj: TwilioMessage | DeliveryReceipt) -> SafeString:
        return format_html(
            '{} <span class="nowrap">{}</span>',
            method_short(obj.method),
            masked_number(obj.method),
        )

    @admin.display(description=_("error"), ordering="error_code")
    def error(self, obj: TwilioMessage | DeliveryReceipt) -> SafeString | str:
        return error_cell(obj.error_code)

    @admin.display(description=_("error code"))
    def error_meaning(self, obj: TwilioMessage | DeliveryReceipt) -> str:
        return error_text(obj.error_code)

    @admin.display(description=_("number"))
    def number_masked(self, obj: TwilioMessage | DeliveryReceipt) -> SafeString:
        return one_line(masked_number(obj.method))


class DeliveryReceiptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeliveryReceipt
    readonly_fields = ("received_at", "status", "error_meaning", "via")
    fields = readonly_fields
    extra = 0

    @admin.display(description=_("error code"))
    def error_meaning(self, receipt: DeliveryReceipt) -> str:
        return error_text(receipt.error_code)


@admin.register(TwilioMessage)
class TwilioMessageAdmin(
    ReceiptColumnsMixin, PhoneTailSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    phone_tail_lookup = "method__phone_number__endswith"
    # The key columns, to fit 1280 px beside the filter; the SID and sender on the change page.
    list_display = ["sent", "status", "error", "method_ref", "updated"]
    list_display_links = ["sent"]
    list_filter = ["status", "error_code"]
    list_select_related = ["method"]
    search_fields = ["=message_sid", "=method__method_id"]
    search_help_text = _("Exact message SID or method id, or the last 4 digits of the number.")
    date_hierarchy = "sent_at"
    show_full_result_count = False
    inlines = [DeliveryReceiptInline]
    readonly_fields = (
        "message_sid",
        "method",
        "number_masked",
        "status",
        "error_meaning",
        "sender",
        "sent_at",
        "updated_at",
        "reconciled_at",
    )
    fields = readonly_fields

    @admin.display(description=_("sent"), ordering="sent_at")
    def sent(self, message: TwilioMessage) -> str:
        return short_time(message.sent_at)

    @admin.display(description=_("updated"), ordering="updated_at")
    def updated(self, message: TwilioMessage) -> str:
        return short_time(message.updated_at)


@admin.register(DeliveryReceipt)
class DeliveryReceiptAdmin(
    ReceiptColumnsMixin, PhoneTailSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    phone_tail_lookup = "method__phone_number__endswith"
    list_display = ["received", "status", "error", "method_ref", "via"]
    list_display_links = ["received"]
    list_filter = ["status", "error_code", "via"]
    list_select_related = ["method"]
    search_fields = ["=message__message_sid", "=method__method_id"]
    search_help_text = _("Exact message SID or method id, or the last 4 digits of the number.")
    date_hierarchy = "received_at"
    show_full_result_count = False
    readonly_fields = (
        "message",
        "method",
        "number_masked",
        "status",
        "error_meaning",
        "received_at",
        "via",
    )
    fields = readonly_fields

    @admin.display(description=_("received"), ordering="received_at")
    def received(self, receipt: DeliveryReceipt) -> str:
        return short_time(receipt.received_at)
