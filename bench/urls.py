"""The product's URLs plus the framework floor, for `make bench` only (bench/settings.py)."""

from django.urls import include, path
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.permissions import IsSupportAgent
from crm_plugin.api.state import CustomerTwosvStateApi, state_body
from twosv.selectors import access_customer_state


class FrameworkFloorApi(AuditedApiView):
    """What every agent read pays before doing any work: the state view's base class, default
    authentication (TokenAuthentication first), permission class and throttle scope, the same
    middleware and JSON renderer; the body is a constant."""

    permission_classes = [IsSupportAgent]
    throttle_scope = "agent_read"

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class StateWithoutAuditApi(CustomerTwosvStateApi):
    """Diagnostic (s): the state endpoint minus its audit row, to show the audit write's share
    of (a). Never part of the product: every real state read is audited."""

    def get(self, request: Request, customer_id: str) -> Response:
        return Response(
            state_body(access_customer_state(customer_id=customer_id, now=timezone.now()))
        )


urlpatterns = [
    path("bench/floor/", FrameworkFloorApi.as_view(), name="bench-floor"),
    path(
        "bench/state-without-audit/<str:customer_id>/",
        StateWithoutAuditApi.as_view(),
        name="bench-state-without-audit",
    ),
    path("", include("crm_plugin.urls")),
]
