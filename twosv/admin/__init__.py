"""The Django admin for 2SV: read what happened, lift locks, run lookups, see insights.

Admins never see a full customer phone number here: lists, inlines and read-only pages show
the masked form (country code and last two digits), and numbers change only through events.
The event log, lookups, sessions and the audit trail are read-only; actions call services.

Django's autodiscover imports this package; importing the modules below registers the models.
"""

from django.contrib import admin

from twosv.admin import customers, records
from twosv.admin import incidents as incidents  # registers Incident
from twosv.admin import phone_checks as phone_checks  # registers PhoneCheck
from twosv.admin import receipts as receipts  # registers TwilioMessage, DeliveryReceipt
from twosv.admin.auditing import audit_auth_admins

__all__ = ["customers", "records"]

# The main admin index links to the insights page (see the template).
admin.site.index_template = "admin/twosv/index.html"
# No "View site" link: this service has no public site at "/" (the panel opens from the CRM
# with a signed link), so the default link would lead to a 404.
admin.site.site_url = None
# No model list beside every page: at 1280 px it left a change list 630 px, and the key
# columns of methods, lookups and sessions went behind a horizontal scroll. The index page and
# the breadcrumbs lead to every model.
admin.site.enable_nav_sidebar = False

# Every admin change is audited (docs/SPEC.md §6), granting a role (a group) included.
audit_auth_admins()
