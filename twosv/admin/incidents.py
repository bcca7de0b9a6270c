"""Delivery incidents in the admin: read-only figures; confirm, dismiss and resolve, audited.

The detection task opens, updates and resolves incidents (twosv/services/incidents.py); admins
with `twosv.manage_incident` confirm one (it is real), dismiss one (a false alarm: no new
incident opens for that region for TWOSV_INCIDENT_QUIET_PERIOD) or resolve one (it is over).
Each action goes through a service that writes the audit entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from twosv import services
from twosv.admin.common import acting_user, audit_context
from twosv.models import Incident


class IncidentReasonForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Recorded on the incident and in the audit trail."),
    )


def _report(
    modeladmin: admin.ModelAdmin, request: HttpRequest, done: int, total: int, verb: str
) -> None:
    message = ngettext("%(verb)s %(n)d incident.", "%(verb)s %(n)d incidents.", done) % {
        "verb": verb,
        "n": done,
    }
    if total - done:
        message += " " + ngettext(
            "%(n)d selected incident was no longer open; nothing changed for it.",
            "%(n)d selected incidents were no longer open; nothing changed for them.",
            total - done,
        ) % {"n": total - done}
    modeladmin.message_user(request, message, messages.SUCCESS if done else messages.WARNING)


def _with_reason(
    modeladmin: IncidentAdmin,
    request: HttpRequest,
    queryset: QuerySet[Incident],
    *,
    action_name: str,
    title: str,
    explanation: str,
    verb: str,
    apply: Callable[..., bool],
) -> HttpResponse | None:
    """Ask for a reason, then apply the service to each selected incident."""
    if not modeladmin.has_manage_incident_permission(request):
        raise PermissionDenied
    incidents = list(queryset)
    form = IncidentReasonForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        actor, audit = acting_user(request), audit_context(request)
        done = sum(
            apply(
                incident=incident,
                actor=actor,
                reason=form.cleaned_data["reason"],
                context=audit,
            )
            for incident in incidents
        )
        _report(modeladmin, request, done, len(incidents), verb)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "explanation": explanation,
        "opts": modeladmin.opts,
        "form": form,
        "incidents": incidents,
        "action_name": action_name,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/twosv/incident/reason.html", context)


@admin.action(description=_("Confirm incident"), permissions=["manage_incident"])
def confirm_incidents(
    modeladmin: IncidentAdmin, request: HttpRequest, queryset: QuerySet[Incident]
) -> None:
    """Mark the selected incidents as real: agents keep seeing them until they are over."""
    actor, context = acting_user(request), audit_context(request)
    incidents = list(queryset)
    done = sum(
        services.incident_confirm(incident=incident, actor=actor, context=context)
        for incident in incidents
    )
    _report(modeladmin, request, done, len(incidents), str(_("Confirmed")))


@admin.action(description=_("Dismiss incident (false alarm)"), permissions=["manage_incident"])
def dismiss_incidents(
    modeladmin: IncidentAdmin, request: HttpRequest, queryset: QuerySet[Incident]
) -> HttpResponse | None:
    return _with_reason(
        modeladmin,
        request,
        queryset,
        action_name="dismiss_incidents",
        title=str(_("Dismiss delivery incidents")),
        explanation=str(
            _(
                "Agents stop seeing these incidents at once, and no new incident opens for "
                "their regions for the quiet period."
            )
        ),
        verb=str(_("Dismissed")),
        apply=services.incident_dismiss,
    )


@admin.action(description=_("Resolve incident"), permissions=["manage_incident"])
def resolve_incidents(
    modeladmin: IncidentAdmin, request: HttpRequest, queryset: QuerySet[Incident]
) -> HttpResponse | None:
    return _with_reason(
        modeladmin,
        request,
        queryset,
        action_name="resolve_incidents",
        title=str(_("Resolve delivery incidents")),
        explanation=str(
            _(
                "Agents stop seeing these incidents at once. If a region's deliveries still "
                "fail as much, the next detection run opens a new incident there."
            )
        ),
        verb=str(_("Resolved")),
        apply=services.incident_resolve,
    )


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Read-only figures; the three actions are the only way to change an incident."""

    list_display = [
        "region",
        "status",
        "opened_at",
        "updated_at",
        "failures",
        "attempts",
        "share_percent",
        "baseline_percent",
        "resolved_at",
    ]
    list_filter = ["status", "region"]
    search_fields = ["=region"]
    search_help_text = _("Exact ISO region, e.g. IN.")
    date_hierarchy = "opened_at"
    actions = [confirm_incidents, dismiss_incidents, resolve_incidents]
    readonly_fields = (
        "region",
        "status",
        "attempts",
        "failures",
        "share_percent",
        "baseline_percent",
        "error_codes",
        "opened_at",
        "updated_at",
        "below_since",
        "confirmed_at",
        "confirmed_by",
        "dismissed_at",
        "dismissed_by",
        "quiet_until",
        "resolved_at",
        "resolved_by",
        "reason",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_manage_incident_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("twosv.manage_incident")

    @admin.display(description=_("failed share"), ordering="share")
    def share_percent(self, incident: Incident) -> str:
        return f"{incident.share:.0%}"

    @admin.display(description=_("baseline (7 days)"), ordering="baseline")
    def baseline_percent(self, incident: Incident) -> str:
        return f"{incident.baseline:.1%}"

    @admin.display(description=_("top error codes"))
    def error_codes(self, incident: Incident) -> str:
        codes = [
            (item.get("code") if item.get("code") is not None else "none", item.get("count", 0))
            for item in incident.top_error_codes
            if isinstance(item, dict)
        ]
        if not codes:
            return "-"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {}</li>", codes))
