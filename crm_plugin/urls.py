from django.contrib import admin
from django.urls import include, path

from crm_plugin import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("crm_plugin.api.urls")),
    path("panel/", include("crm_plugin.panel.urls")),
]
