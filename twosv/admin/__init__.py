"""The Django admin for 2SV: read what happened, lift locks, run lookups, see insights.

Admins never see a full customer phone number here: lists, inlines and read-only pages show
the masked form (country code and last two digits), and numbers change only through events.
The event log, lookups, sessions and the audit trail are read-only; actions call services.

Django's autodiscover imports this package; importing the modules below registers the models.
"""

from django.contrib import admin

from twosv.admin import customers, records
from twosv.admin import phone_checks as phone_checks  # registers PhoneCheck
from twosv.admin.auditing import audit_auth_admins

__all__ = ["customers", "records"]

# The main admin index links to the insights page (see the template).
admin.site.index_template = "admin/twosv/index.html"

# Every admin change is audited (docs/SPEC.md §6), granting a role (a group) included.
audit_auth_admins()
