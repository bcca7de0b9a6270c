"""Admin actions on methods: lift locks and run delivery lookups, both through services."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from twosv import services
from twosv.admin.common import acting_user, audit_context, state
from twosv.errors import DomainError
from twosv.masking import masked_phone
from twosv.models import DeliveryLookup, LookupStatus, Method
from twosv.services.lookups import LOOKUP_IN_FLIGHT

if TYPE_CHECKING:
    from twosv.admin.customers import MethodAdmin


class LiftLockForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Recorded on the lock_lifted event and in the audit trail."),
    )


@admin.action(description=_("Lift lock"), permissions=["lift_lock"])
def lift_lock(
    modeladmin: MethodAdmin, request: HttpRequest, queryset: QuerySet[Method]
) -> HttpResponse | None:
    """Ask for a reason, then lift each selected method's lock through the service."""
    if not modeladmin.has_lift_lock_permission(request):
        raise PermissionDenied
    methods = list(queryset.select_related("customer"))
    form = LiftLockForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        actor, audit = acting_user(request), audit_context(request)
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
        modeladmin.message_user(request, message, messages.SUCCESS if lifted else messages.WARNING)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Lift lock"),
        "opts": modeladmin.opts,
        "form": form,
        "rows": [(method, state(method), masked_phone(method.phone_number)) for method in methods],
        "action_name": "lift_lock",
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/twosv/method/lift_lock.html", context)


@admin.action(description=_("Run delivery lookup"), permissions=["run_lookup"])
def run_delivery_lookup(
    modeladmin: MethodAdmin, request: HttpRequest, queryset: QuerySet[Method]
) -> None:
    """Request a delivery lookup for each selected method that receives codes.

    The message says what happened to each: ran now (eager mode, or a worker already done),
    queued for a worker, or an existing one reused (still in flight, or fresh).
    """
    actor, context = acting_user(request), audit_context(request)
    ran: list[str] = []
    queued = in_flight = fresh = skipped = 0
    refused: list[str] = []
    for method in queryset.select_related("customer"):
        if not method.receives_codes:
            skipped += 1
            continue
        try:
            lookup, created = services.lookup_request(
                customer=method.customer,
                method_id=method.method_id,
                actor=actor,
                context=context,
            )
        except DomainError as exc:
            refused.append(f"{method.method_id}: {exc.message}")
            continue
        if created and lookup.status not in LOOKUP_IN_FLIGHT:
            ran.append(f"{method.method_id}: {_lookup_result(lookup)}")
        elif created:
            queued += 1
        elif lookup.status in LOOKUP_IN_FLIGHT:
            in_flight += 1
        else:
            fresh += 1
    parts = run_lookup_summary(
        ran=ran, queued=queued, in_flight=in_flight, fresh=fresh, skipped=skipped
    )
    if parts:
        modeladmin.message_user(request, " ".join(parts), messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, _("Refused: ") + "; ".join(refused), messages.ERROR)


def _lookup_result(lookup: DeliveryLookup) -> str:
    if lookup.status == LookupStatus.SUCCEEDED:
        return lookup.get_verdict_display() or lookup.verdict or str(_("no verdict"))
    return str(_("failed"))


def run_lookup_summary(
    *, ran: list[str], queued: int, in_flight: int, fresh: int, skipped: int
) -> list[str]:
    """Return the sentences of the action's message, one per outcome that happened."""
    parts: list[str] = []
    if ran:
        parts.append(
            ngettext(
                "Ran %(n)d delivery lookup now (%(results)s).",
                "Ran %(n)d delivery lookups now (%(results)s).",
                len(ran),
            )
            % {"n": len(ran), "results": "; ".join(ran)}
        )
    if queued:
        parts.append(
            ngettext(
                "Queued %(n)d delivery lookup for a worker.",
                "Queued %(n)d delivery lookups for a worker.",
                queued,
            )
            % {"n": queued}
        )
    if in_flight:
        parts.append(
            ngettext(
                "%(n)d lookup was already pending or running: no new one.",
                "%(n)d lookups were already pending or running: no new ones.",
                in_flight,
            )
            % {"n": in_flight}
        )
    if fresh:
        parts.append(
            ngettext(
                "%(n)d method has a fresh result (under %(minutes)d min old), reused.",
                "%(n)d methods have a fresh result (under %(minutes)d min old), reused.",
                fresh,
            )
            % {"n": fresh, "minutes": settings.TWOSV_LOOKUP_FRESHNESS // timedelta(minutes=1)}
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
    return parts
