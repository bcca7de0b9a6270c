"""Delivery lookups ("check with ATS"): request one for a method, then read its result."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.openapi import error_response
from crm_plugin.api.permissions import IsSupportAgent
from crm_plugin.api.representations import BlankAsNullCharField, renderer
from crm_plugin.api.sessions import StrictSerializer
from crm_plugin.http.context import acting_user, audit_context
from twosv import services
from twosv.models import DeliveryLookup, LookupStatus, Verdict
from twosv.selectors import access_customer


class LookupOutput(serializers.Serializer):
    """A lookup as agents see it: the attempts never carry the recipient's number."""

    class LookupAttemptOutput(serializers.Serializer):
        sent_at = serializers.DateTimeField()
        status = serializers.CharField()
        error_code = serializers.IntegerField(allow_null=True)
        provider = serializers.CharField()
        sender = serializers.CharField()

    id = serializers.UUIDField()
    customer_id = serializers.CharField(source="customer.customer_id")
    method_id = serializers.CharField(source="method.method_id")
    status = serializers.ChoiceField(choices=LookupStatus.choices)
    verdict = BlankAsNullCharField(help_text=f"null until done; one of {', '.join(Verdict)}")
    period_start = serializers.DateTimeField()
    attempts = LookupAttemptOutput(many=True, source="attempts.all")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    tries = serializers.IntegerField()
    failure_reason = BlankAsNullCharField()
    source = BlankAsNullCharField(  # type: ignore[assignment]
        help_text=(
            "Where the attempts came from: receipts (Twilio's status callbacks), api (Twilio's "
            "Messages API), local or http (the ATS); null until the lookup succeeded."
        )
    )


_render_lookup = renderer(LookupOutput)


def lookup_body(lookup: DeliveryLookup) -> dict[str, Any]:
    return _render_lookup(lookup)


class LookupRequestApi(AuditedApiView):
    """Request a delivery lookup for one of the customer's methods."""

    permission_classes = [IsSupportAgent]
    throttle_scope = "lookup_request"

    class LookupRequestInput(StrictSerializer):
        method_id = serializers.CharField(max_length=128, required=False, allow_null=True)
        force = serializers.BooleanField(required=False, default=False)

    @extend_schema(
        request=LookupRequestInput,
        responses={
            202: LookupOutput,
            200: LookupOutput,
            409: error_response("The method receives no codes, or was removed."),
        },
        summary="Check with the ATS that codes reach the method",
        description=(
            "202 with a new pending lookup; 200 with the method's lookup already pending or "
            "running, or one that succeeded within the freshness window (unless `force`). "
            "The method defaults to the customer's active primary method."
        ),
    )
    def post(self, request: Request, customer_id: str) -> Response:
        customer = access_customer(customer_id=customer_id)
        serializer = self.LookupRequestInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        lookup, created = services.lookup_request(
            customer=customer,
            method_id=serializer.validated_data.get("method_id"),
            actor=acting_user(request),
            force=serializer.validated_data["force"],
            context=audit_context(request),
        )
        if not created:
            return Response(lookup_body(lookup), status=status.HTTP_200_OK)
        return Response(
            lookup_body(lookup),
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/twosv/delivery-lookups/{lookup.id}/"},
        )


class LookupDetailApi(AuditedApiView):
    """Read a delivery lookup: its status, verdict, attempts and timestamps."""

    permission_classes = [IsSupportAgent]
    throttle_scope = "agent_read"

    @extend_schema(
        responses={200: LookupOutput},
        summary="Read a delivery lookup",
        description=(
            "The verdict is null until the lookup succeeded; a failed lookup says why in "
            "`failure_reason`. Attempts never carry the recipient's number."
        ),
    )
    def get(self, request: Request, lookup_id: str) -> Response:
        lookup = services.lookup_read(
            lookup_id=lookup_id, actor=acting_user(request), context=audit_context(request)
        )
        return Response(lookup_body(lookup))
