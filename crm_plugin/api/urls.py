from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from crm_plugin.api import events

urlpatterns = [
    path("events/", events.EventCreateApi.as_view(), name="event-create"),
    path("events/batch/", events.EventBatchApi.as_view(), name="event-batch"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
