"""The Django admin for 2SV: read what happened, lift locks, run lookups, see insights.

Admins never see a full customer phone number here: lists, inlines and read-only pages show
the masked form (country code and last two digits), and numbers change only through events.
The event log, lookups, sessions and the audit trail are read-only; actions call services.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import pygal
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from import_export import resources
from import_export.admin import ExportActionMixin
from import_export.fields import Field
from import_export.formats import base_formats
from pygal.style import Style

from twosv import insights, services
from twosv.audit import AuditContext
from twosv.errors import DomainError
from twosv.models import (
    AuditEntry,
    Customer,
    DeliveryAttempt,
    DeliveryLookup,
    Event,
    LocalDeliveryRecord,
    Method,
    RegionalAdvisory,
    SenderNumber,
    TroubleshootingSession,
)
from twosv.selectors import MethodState, mask_phone, method_state

# The main admin index links to the insights page (see the template).
admin.site.index_template = "admin/twosv/index.html"

# ---------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------

_DIGITS_ONLY = re.compile(r"[\s().-]")
_PHONE_TAIL = re.compile(r"^\+?\d{2,15}$")
# A run of 7+ digits, possibly broken up by spaces, dots, dashes or brackets: a phone number
# typed into free text.
_PHONE_IN_TEXT = re.compile(r"\+?\d(?:[\s().-]*\d){6,}")


def masked_phone(number: str) -> str:
    """Return the number as admins may see it; never the number itself."""
    if not number:
        return "—"
    masked = mask_phone(number)
    return masked.masked if masked is not None else "(unreadable number)"


def redact_phone_numbers(text: str) -> str:
    """Replace every phone-like run of digits in free text by its masked form."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "•" * (len(digits) - 2) + digits[-2:]

    return _PHONE_IN_TEXT.sub(_mask, text)


def phone_tail(search_term: str) -> str | None:
    """Return the digits to match the end of a phone number with, if the term looks like one."""
    compact = _DIGITS_ONLY.sub("", search_term.strip())
    return compact.removeprefix("+") if _PHONE_TAIL.match(compact) else None


class PhoneTailSearchMixin:
    """Let admins search by the last digits of a phone number (`phone_tail_lookup`)."""

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


def _audit_context(request: HttpRequest) -> AuditContext:
    return AuditContext(
        request_id=getattr(request, "request_id", ""),
        client_ip=request.META.get("REMOTE_ADDR") or None,
    )


def _actor(request: HttpRequest) -> User:
    if not isinstance(request.user, User):  # pragma: no cover - the admin requires a login
        raise PermissionDenied
    return request.user


def _locked_now(now: datetime) -> Q:
    """Match methods whose lock holds at `now` (same rule as policy.Lock.active_at)."""
    return (
        Q(locked_at__lte=now, locked_until__gt=now)
        & (Q(lock_lifted_at__isnull=True) | Q(lock_lifted_at__gt=now))
        & (Q(removed_at__isnull=True) | Q(removed_at__gt=now))
    )


def _state(method: Method) -> MethodState:
    """Return the method's state, computed once per row of a page."""
    cached: MethodState | None = getattr(method, "_admin_state", None)
    if cached is None:
        cached = method_state(method, now=timezone.now())
        method._admin_state = cached  # type: ignore[attr-defined]
    return cached


class ReadOnlyAdminMixin:
    """Nobody adds, changes or deletes these rows in the admin, superusers included."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# ---------------------------------------------------------------------------------------------
# CSV export
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Customers and methods
# ---------------------------------------------------------------------------------------------


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
        return _status_text(_state(method))

    @admin.display(description=_("resend count"))
    def resends(self, method: Method) -> str:
        return _resends_text(_state(method))


def _status_text(state: MethodState) -> str:
    if state.lock is not None:
        until = timezone.localtime(state.lock.locked_until)
        return f"locked until {until:%Y-%m-%d %H:%M %Z}"
    return state.status


def _resends_text(state: MethodState) -> str:
    return f"{state.resend_count} / {state.resend_threshold}"


@admin.register(Customer)
class CustomerAdmin(PhoneTailSearchMixin, admin.ModelAdmin):
    phone_tail_lookup = "methods__phone_number__endswith"
    phone_tail_may_duplicate = True
    list_display = ["customer_id", "display_name", "method_count", "created_at"]
    search_fields = ["customer_id", "display_name"]
    search_help_text = _("Customer id, name, or the last digits of a phone number.")
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
        locked = _locked_now(timezone.now())
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


class LiftLockForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Recorded on the lock_lifted event and in the audit trail."),
    )


@admin.register(Method)
class MethodAdmin(PhoneTailSearchMixin, admin.ModelAdmin):
    phone_tail_lookup = "phone_number__endswith"
    list_display = [
        "method_id",
        "customer",
        "kind",
        "role",
        "phone",
        "lock",
        "resends",
        "removed_at",
    ]
    list_filter = ["kind", "role", LockedNowFilter]
    list_select_related = ["customer"]
    search_fields = ["method_id", "customer__customer_id", "customer__display_name"]
    search_help_text = _("Method id, customer id or name, or the last digits of a phone number.")
    actions = ["lift_lock", "run_delivery_lookup"]
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
        return _status_text(_state(method))

    @admin.display(description=_("resend count"))
    def resends(self, method: Method) -> str:
        return _resends_text(_state(method))

    @admin.display(description=_("events"))
    def events_link(self, method: Method) -> str:
        url = reverse("admin:twosv_event_changelist") + f"?method__id__exact={method.pk}"
        return format_html('<a href="{}">{}</a>', url, _("Events of this method"))

    @admin.action(description=_("Lift lock"), permissions=["lift_lock"])
    def lift_lock(self, request: HttpRequest, queryset: QuerySet[Method]) -> HttpResponse | None:
        """Ask for a reason, then lift each selected method's lock through the service."""
        if not self.has_lift_lock_permission(request):
            raise PermissionDenied
        methods = list(queryset.select_related("customer"))
        form = LiftLockForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            actor, audit = _actor(request), _audit_context(request)
            lifted = sum(
                services.lock_lift(
                    method=method,
                    actor=actor,
                    reason=form.cleaned_data["reason"],
                    context=audit,
                )
                for method in methods
            )
            message = ngettext("Lifted %(n)d lock.", "Lifted %(n)d locks.", lifted) % {"n": lifted}
            not_locked = len(methods) - lifted
            if not_locked:
                message += " " + ngettext(
                    "%(n)d selected method wasn't locked; nothing changed for it.",
                    "%(n)d selected methods weren't locked; nothing changed for them.",
                    not_locked,
                ) % {"n": not_locked}
            self.message_user(request, message, messages.SUCCESS if lifted else messages.WARNING)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Lift lock"),
            "opts": self.opts,
            "form": form,
            "rows": [
                (method, _state(method), masked_phone(method.phone_number)) for method in methods
            ],
            "action_name": "lift_lock",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/twosv/method/lift_lock.html", context)

    @admin.action(description=_("Run delivery lookup"), permissions=["run_lookup"])
    def run_delivery_lookup(self, request: HttpRequest, queryset: QuerySet[Method]) -> None:
        """Request a delivery lookup for each selected method that receives codes."""
        actor, context = _actor(request), _audit_context(request)
        enqueued = reused = skipped = 0
        refused: list[str] = []
        for method in queryset.select_related("customer"):
            if not method.receives_codes:
                skipped += 1
                continue
            try:
                _lookup, created = services.lookup_request(
                    customer=method.customer,
                    method_id=method.method_id,
                    actor=actor,
                    context=context,
                )
            except DomainError as exc:
                refused.append(f"{method.method_id}: {exc.message}")
                continue
            if created:
                enqueued += 1
            else:
                reused += 1
        parts = [
            ngettext(
                "Enqueued %(n)d delivery lookup.", "Enqueued %(n)d delivery lookups.", enqueued
            )
            % {"n": enqueued}
        ]
        if reused:
            parts.append(
                ngettext(
                    "%(n)d was already running or fresh and is reused.",
                    "%(n)d were already running or fresh and are reused.",
                    reused,
                )
                % {"n": reused}
            )
        if skipped:
            parts.append(
                ngettext(
                    "%(n)d method receives no codes and was skipped.",
                    "%(n)d methods receive no codes and were skipped.",
                    skipped,
                )
                % {"n": skipped}
            )
        self.message_user(request, " ".join(parts), messages.SUCCESS)
        if refused:
            self.message_user(request, _("Refused: ") + "; ".join(refused), messages.ERROR)


# ---------------------------------------------------------------------------------------------
# The event log and the insights page
# ---------------------------------------------------------------------------------------------


def _masked_data(data: dict[str, Any]) -> dict[str, Any]:
    masked = dict(data)
    if isinstance(masked.get("phone_number"), str):
        masked["phone_number"] = masked_phone(masked["phone_number"])
    return masked


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
        data = json.dumps(_masked_data(event.data), indent=2, ensure_ascii=False)
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
        if not all(
            request.user.has_perm(f"twosv.view_{name}")
            for name in ("event", "deliverylookup", "troubleshootingsession")
        ):
            raise PermissionDenied
        days = insights.parse_period(request.GET.get("days"))
        figures = insights.insights_for(days=days)
        context = {
            **self.admin_site.each_context(request),
            "title": _("2SV insights"),
            "app_name": self.opts.app_config.verbose_name,
            "insights": figures,
            "periods": insights.PERIODS,
            "verdict_columns": insights.VERDICT_COLUMNS,
            "locks_chart": _locks_chart(figures),
            "verdicts_chart": _verdicts_chart(figures),
            "steps_chart": _steps_chart(figures),
        }
        return TemplateResponse(request, "admin/twosv/insights.html", context)


# ---------------------------------------------------------------------------------------------
# Charts: server-side SVG, no script, no CDN
# ---------------------------------------------------------------------------------------------

_FONT = '"Segoe UI", system-ui, Roboto, "Helvetica Neue", Arial, sans-serif, "Apple Color Emoji"'
VERDICT_COLOURS = {
    "not_sent": "#9e9e9e",
    "delivered": "#2e7d32",
    "recipient_blocked": "#ef6c00",
    "carrier_filtered": "#f9a825",
    "unreachable": "#6a1b9a",
    "regional_provider_issue": "#c62828",
    "provider_error": "#ad1457",
    insights.LOOKUP_FAILED: "#37474f",
}


def _style(colours: tuple[str, ...]) -> Style:
    return Style(
        background="transparent",
        plot_background="#ffffff",
        foreground="#333333",
        foreground_strong="#333333",
        foreground_subtle="#dddddd",
        font_family=_FONT,
        label_font_size=12,
        major_label_font_size=12,
        legend_font_size=13,
        title_font_size=15,
        colors=colours,
    )


def _drop_scripts(root: Any) -> Any:
    """Remove pygal's inline config script: the charts are static and the page runs no JS."""
    for parent in list(root.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


def _render(chart: Any) -> SafeString:
    # pygal builds the SVG with ElementTree, which escapes every label and title we pass in.
    chart.add_xml_filter(_drop_scripts)
    svg: str = chart.render(is_unicode=True)
    return mark_safe(svg)  # noqa: S308


def _chart_config(**overrides: Any) -> dict[str, Any]:
    return {
        "js": [],
        "disable_xml_declaration": True,
        "explicit_size": False,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 4,
        "no_data_text": str(_("Nothing in this period")),
        "print_zeroes": False,
        "truncate_label": -1,
        "truncate_legend": -1,
        "show_y_guides": True,
        "height": 360,
        "width": 1000,
        **overrides,
    }


def _count_ticks(highest: int) -> list[int]:
    """Return whole-number ticks from 0 past `highest`: counts have no halves."""
    step = max(1, math.ceil(highest / 5))
    return list(range(0, max(highest, 1) + step, step))


def _locks_chart(figures: insights.Insights) -> SafeString:
    days = figures.locks
    step = max(1, len(days) // 10)
    chart = pygal.Bar(
        style=_style(("#c62828", "#2e7d32")),
        x_label_rotation=0,
        show_minor_x_labels=False,
        x_labels_major=[f"{day.day:%b %d}" for day in days[::step]],
        **_chart_config(),
    )
    chart.x_labels = [f"{day.day:%b %d}" for day in days]
    if figures.locks_total or figures.lifts_total:
        # Set only with data: pygal can't place y labels on an empty chart.
        chart.y_labels = _count_ticks(max(max(day.locked, day.lifted) for day in days))
        chart.add(str(_("Methods locked")), [day.locked for day in days])
        chart.add(str(_("Locks lifted by admins")), [day.lifted for day in days])
    return _render(chart)


def _verdicts_chart(figures: insights.Insights) -> SafeString:
    groups = figures.regions[:10]
    verdicts = [value for value, _label in insights.VERDICT_COLUMNS]
    chart = pygal.HorizontalStackedBar(
        style=_style(tuple(VERDICT_COLOURS[value] for value in verdicts)),
        **_chart_config(height=max(240, 130 + 36 * len(groups)), legend_at_bottom_columns=3),
    )
    # pygal draws the first label at the bottom; list the largest group first, at the top.
    chart.x_labels = [group.label for group in reversed(groups)]
    if groups:
        for value, label in insights.VERDICT_COLUMNS:
            chart.add(label, [group.count(value) or None for group in reversed(groups)])
    return _render(chart)


def _steps_chart(figures: insights.Insights) -> SafeString:
    steps = figures.steps[:12]
    chart = pygal.HorizontalStackedBar(
        style=_style(("#2e7d32", "#ef6c00", "#c62828")),
        **_chart_config(height=max(220, 90 + 36 * len(steps)), legend_at_bottom_columns=3),
    )
    chart.x_labels = [step.step_code or "(no step)" for step in reversed(steps)]
    if steps:
        chart.add(str(_("Resolved")), [step.resolved or None for step in reversed(steps)])
        chart.add(str(_("Not resolved")), [step.not_resolved or None for step in reversed(steps)])
        chart.add(str(_("Escalated")), [step.escalated or None for step in reversed(steps)])
    return _render(chart)


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
class SenderNumberAdmin(admin.ModelAdmin):
    list_display = ["phone_number", "label", "active"]
    list_filter = ["active"]


@admin.register(RegionalAdvisory)
class RegionalAdvisoryAdmin(admin.ModelAdmin):
    list_display = ["region", "message", "active", "created_at"]
    list_filter = ["active"]


@admin.register(LocalDeliveryRecord)
class LocalDeliveryRecordAdmin(PhoneTailSearchMixin, admin.ModelAdmin):
    """Messages of the local ATS backend (demo and development data)."""

    phone_tail_lookup = "to__endswith"
    list_display = ["created_at", "recipient", "sender", "provider", "status", "error_code"]
    list_filter = ["status", "provider"]
    search_fields = ["=external_id"]
    search_help_text = _("Exact external id, or the last digits of the recipient's number.")

    @admin.display(description=_("to"), ordering="to")
    def recipient(self, record: LocalDeliveryRecord) -> str:
        return record.to if "@" in record.to else masked_phone(record.to)
