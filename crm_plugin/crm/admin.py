"""CRM identities in the admin: which user each CRM agent (issuer, sub) acts as.

Every addition, change and deletion is audited like the other admins (AuditedAdminMixin).
Unlinking an identity ends the access tokens it was exchanged for at once.
"""

from django.contrib import admin

from crm_plugin.crm.models import CrmIdentity
from twosv.admin.auditing import AuditedAdminMixin


@admin.register(CrmIdentity)
class CrmIdentityAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("issuer", "subject", "user", "created_at", "last_seen_at")
    list_filter = ("issuer",)
    search_fields = ("issuer", "subject", "user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "last_seen_at")
    fields = ("issuer", "subject", "user", "created_at", "last_seen_at")
