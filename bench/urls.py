"""The product's URLs plus the framework floor, for `make bench` only (bench/settings.py)."""

from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.permissions import IsSupportAgent


class FrameworkFloorApi(AuditedApiView):
    """What every agent read pays before doing any work: the state view's base class, default
    authentication (TokenAuthentication first), permission class and throttle scope, the same
    middleware and JSON renderer; the body is a constant."""

    permission_classes = [IsSupportAgent]
    throttle_scope = "agent_read"

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


urlpatterns = [
    path("bench/floor/", FrameworkFloorApi.as_view(), name="bench-floor"),
    path("", include("crm_plugin.urls")),
]
