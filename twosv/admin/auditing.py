"""Every change made in the admin writes an audit entry, with what changed (docs/SPEC.md §6).

One mixin, `AuditedAdminMixin`, on every model admin that can add, change or delete: the
twosv admins and the user, group and token admins (`audit_auth_admins`). The entry names
the admin, the object and, per changed field, its value before and after: phone numbers
masked as admins see them, secrets (password hashes, token keys) never written, only said to
have changed. The actions on methods (Lift lock, Run delivery lookup) are audited by the
services they call.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.contrib.auth.models import Group, User
from django.db import models, router, transaction
from django.http import HttpRequest

from twosv.admin.common import acting_user, audit_context
from twosv.audit import AuditAction, audit_record
from twosv.masking import mask_phone_numbers, mask_phone_numbers_in, masked_phone
from twosv.models import Customer, Method

# Fields holding a phone number (or, for a local ATS record, an email): kept masked.
PHONE_FIELDS = frozenset({"phone_number", "to"})
# Fields whose values never enter the trail: only that they changed.
SECRET_FIELDS = frozenset({"password", "key"})
HIDDEN = "(secret, not recorded)"

_BEFORE = "_admin_audit_before"

Snapshot = dict[str, Any]


class AuditedAdminMixin:
    """Write one audit entry per admin addition, change and deletion, with before and after.

    Django's admin calls `save_model` before saving (the row is read back from the database
    as `before`), then `log_addition` / `log_change` once the object and its relations are
    saved (`after`), and `log_deletions` just before it deletes; for one object all of it runs
    in the admin's transaction, so the entry and the change commit together, and the bulk
    delete action runs in one of its own.
    """

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change and obj.pk is not None:
            current = type(obj)._base_manager.filter(pk=obj.pk).first()
            if current is not None:
                setattr(obj, _BEFORE, snapshot(current))
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        _audit(request, obj, AuditAction.ADMIN_ADD, None, snapshot(obj), message)
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        before = obj.__dict__.pop(_BEFORE, None)
        _audit(request, obj, AuditAction.ADMIN_CHANGE, before, snapshot(obj), message)
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        for obj in queryset:
            _audit(request, obj, AuditAction.ADMIN_DELETE, snapshot(obj), None, None)
        return super().log_deletions(request, queryset)  # type: ignore[misc]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)  # type: ignore[misc]
        if "delete_selected" in actions:
            _func, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_delete_selected_atomically, name, description)
        return actions


def _delete_selected_atomically(modeladmin: Any, request: HttpRequest, queryset: Any) -> Any:
    """Django's bulk delete runs outside the admin's transaction: its audit entries
    (`log_deletions`) would commit even if the delete after them failed. One transaction for
    both."""
    with transaction.atomic(using=router.db_for_write(modeladmin.model)):
        return delete_selected(modeladmin, request, queryset)


_RESULTS = {
    AuditAction.ADMIN_ADD: "added",
    AuditAction.ADMIN_CHANGE: "changed",
    AuditAction.ADMIN_DELETE: "deleted",
}


def snapshot(obj: models.Model) -> Snapshot:
    """Return the object's field values as stored (foreign keys as ids, many-to-many sorted)."""
    values: Snapshot = {
        field.name: field.value_from_object(obj)
        for field in obj._meta.concrete_fields
        if not field.primary_key
    }
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            values[field.name] = sorted(str(related) for related in getattr(obj, field.name).all())
    return values


def changes(before: Snapshot | None, after: Snapshot | None) -> dict[str, dict[str, Any]]:
    """Return {field: {before, after}} for the fields that differ, values safe to store."""
    names = list(after or before or {})
    found = {}
    for name in names:
        old = before.get(name) if before is not None else None
        new = after.get(name) if after is not None else None
        if before is not None and after is not None and old == new:
            continue
        if before is None and new in (None, "", []):
            continue  # an addition lists what it set
        if after is None and old in (None, "", []):
            continue  # a deletion lists what was there
        found[name] = {"before": safe_value(name, old), "after": safe_value(name, new)}
    return found


def safe_value(name: str, value: Any) -> Any:
    """Return a value as the trail may keep it: JSON, numbers masked, no secret."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if name in SECRET_FIELDS:
        return HIDDEN
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | dict):
        return mask_phone_numbers_in(value)
    text = str(value)
    if name in PHONE_FIELDS and text and "@" not in text:
        return masked_phone(text)
    return mask_phone_numbers(text)


def customer_ref(obj: Any) -> str:
    if isinstance(obj, Customer):
        return obj.customer_id
    if isinstance(obj, Method):
        return obj.customer.customer_id
    return ""


def _changed_field_names(message: Any) -> list[str]:
    """The field names of Django's change message, for a change whose values went unseen."""
    names: list[str] = []
    for part in message if isinstance(message, list) else []:
        if isinstance(part, dict) and "changed" in part and "name" not in part["changed"]:
            names.extend(str(name) for name in part["changed"].get("fields", []))
    return names


def _audit(
    request: HttpRequest,
    obj: Any,
    action: AuditAction,
    before: Snapshot | None,
    after: Snapshot | None,
    message: Any,
) -> None:
    secret_pk = obj._meta.pk.name in SECRET_FIELDS  # a token: its key is its primary key
    details: dict[str, Any] = {
        "model": obj._meta.label_lower,
        "object": HIDDEN if secret_pk else mask_phone_numbers(str(obj)),
    }
    if action == AuditAction.ADMIN_CHANGE and before is None:
        # Saved without passing save_model (the user admin's password form): names only.
        details["changes"] = {}
        details["fields"] = _changed_field_names(message)
    else:
        details["changes"] = changes(before, after)
    audit_record(
        actor=acting_user(request),
        action=action,
        result=_RESULTS[action],
        customer_ref=customer_ref(obj),
        obj=_secret_keyed(obj) if secret_pk else obj,
        details=details,
        context=audit_context(request),
    )


def _secret_keyed(obj: Any) -> Any:
    """Stand in for an object whose primary key is a secret: its type is recorded, its key not."""
    return type(type(obj).__name__, (), {"pk": ""})()


def audit_auth_admins(site: admin.AdminSite = admin.site) -> None:
    """Re-register the user, group and token admins with the audit mixin (roles are groups).

    Their modules are imported here first, so they are registered whatever the app order.
    """
    import django.contrib.auth.admin  # noqa: F401
    import rest_framework.authtoken.admin  # noqa: F401
    from rest_framework.authtoken.models import TokenProxy

    for model in (User, Group, TokenProxy):
        if not site.is_registered(model):
            continue
        current = type(site.get_model_admin(model))
        if issubclass(current, AuditedAdminMixin):
            continue
        audited = type(f"Audited{current.__name__}", (AuditedAdminMixin, current), {})
        site.unregister(model)
        site.register(model, audited)
