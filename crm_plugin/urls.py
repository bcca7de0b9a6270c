from django.contrib import admin
from django.urls import include, path

from crm_plugin import health, webhooks

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("crm_plugin.api.urls")),
    path("panel/", include("crm_plugin.panel.urls")),
    path(
        "webhooks/twilio/message-status/",
        webhooks.TwilioMessageStatusWebhook.as_view(),
        name="twilio-message-status",
    ),
]

# A path no route matches answers in the API's error shape under /api/.
handler404 = "crm_plugin.api.errors.page_not_found"
# A failure outside any view (a middleware, the URL resolver) still answers JSON under /api/.
handler500 = "crm_plugin.faults.server_error"
