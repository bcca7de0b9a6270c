"""The agent's view of a customer's two-step verification: methods, locks, advice, next step."""

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.permissions import IsSupportAgent
from crm_plugin.api.representations import BlankAsNullCharField, MethodOutput, renderer
from crm_plugin.api.steps import AdvisoryOutput, StepOutput
from crm_plugin.http.context import acting_user, audit_context
from twosv import services
from twosv.selectors import TwosvState, access_customer_state


class CustomerOutput(serializers.Serializer):
    customer_id = serializers.CharField()
    display_name = serializers.CharField()


class LatestLookupOutput(serializers.Serializer):
    id = serializers.UUIDField()
    method_id = serializers.CharField(source="method.method_id")
    status = serializers.CharField()
    verdict = BlankAsNullCharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    failure_reason = serializers.CharField()
    url = serializers.SerializerMethodField()

    def get_url(self, obj: Any) -> str:
        return f"/api/v1/twosv/delivery-lookups/{obj.id}/"


class StateOutput(serializers.Serializer):
    customer = CustomerOutput()
    server_time = serializers.DateTimeField()
    no_code_link_visible = serializers.BooleanField(source="decision.no_code_link_visible")
    methods = MethodOutput(many=True)
    advisories = AdvisoryOutput(many=True, source="decision.advisories")
    latest_lookup = LatestLookupOutput(allow_null=True)
    next_step = StepOutput(source="decision.step")


_render_state = renderer(StateOutput)


def state_body(state: TwosvState) -> dict[str, Any]:
    return _render_state(state)


class CustomerTwosvStateApi(AuditedApiView):
    permission_classes = [IsSupportAgent]
    throttle_scope = "agent_read"

    @extend_schema(
        responses={200: StateOutput},
        summary="A customer's 2SV state and next step",
        description=(
            "Every method with its lock, resend count (`resends`, null for methods that receive "
            "no codes) and masked number; the advisories, warnings first (`severity`); the "
            "latest delivery lookup for the method in question; and the next step of the "
            "article, as if no question had been answered yet (open a session to answer them). "
            "Each read writes an audit entry."
        ),
    )
    def get(self, request: Request, customer_id: str) -> Response:
        state = access_customer_state(customer_id=customer_id, now=timezone.now())
        services.customer_state_read_audit(
            customer=state.customer,
            actor=acting_user(request),
            step_code=state.decision.step.code,
            context=audit_context(request),
        )
        return Response(state_body(state))
