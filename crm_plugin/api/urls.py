from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from crm_plugin.api import crm_token, events, lookups, panel_links, sessions, state, timeline

urlpatterns = [
    path("events/", events.EventCreateApi.as_view(), name="event-create"),
    path("events/batch/", events.EventBatchApi.as_view(), name="event-batch"),
    path(
        "customers/<str:customer_id>/twosv/",
        state.CustomerTwosvStateApi.as_view(),
        name="customer-twosv-state",
    ),
    path(
        "customers/<str:customer_id>/twosv/sessions/",
        sessions.SessionCreateApi.as_view(),
        name="session-create",
    ),
    path(
        "twosv/sessions/<uuid:session_id>/",
        sessions.SessionDetailApi.as_view(),
        name="session-detail",
    ),
    path(
        "twosv/sessions/<uuid:session_id>/verify-phone/",
        sessions.SessionVerifyPhoneApi.as_view(),
        name="session-verify-phone",
    ),
    path(
        "twosv/sessions/<uuid:session_id>/close/",
        sessions.SessionCloseApi.as_view(),
        name="session-close",
    ),
    path(
        "customers/<str:customer_id>/twosv/delivery-lookups/",
        lookups.LookupRequestApi.as_view(),
        name="delivery-lookup-request",
    ),
    # <str:...>, not <uuid:...>: a malformed id gets the API's JSON 404, not Django's page.
    path(
        "twosv/delivery-lookups/<str:lookup_id>/",
        lookups.LookupDetailApi.as_view(),
        name="delivery-lookup-detail",
    ),
    path(
        "customers/<str:customer_id>/twosv/methods/<str:method_id>/timeline/",
        timeline.MethodTimelineApi.as_view(),
        name="method-timeline",
    ),
    path("panel-links/", panel_links.PanelLinkCreateApi.as_view(), name="panel-link-create"),
    path("auth/crm-token/", crm_token.CrmTokenApi.as_view(), name="crm-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
