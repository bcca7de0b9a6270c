"""A method's timeline (docs/SPEC.md §10): events, delivery attempts and Twilio receipts."""

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.openapi import error_response
from crm_plugin.api.permissions import IsSupportAgent
from crm_plugin.api.representations import renderer
from crm_plugin.api.sessions import StrictSerializer
from crm_plugin.http.context import acting_user, audit_context
from twosv.audit import AuditAction, audit_read
from twosv.errors import ErrorCode, NotFound
from twosv.models import Method
from twosv.selectors import access_customer
from twosv.timeline import TIMELINE_MAX_ITEMS, TIMELINE_TYPES, method_timeline

DEFAULT_SINCE = timedelta(hours=24)


class TimelineItemOutput(serializers.Serializer):
    at = serializers.DateTimeField()
    type = serializers.ChoiceField(choices=TIMELINE_TYPES)
    detail = serializers.CharField(help_text="What happened, in words; numbers masked.")
    status = serializers.CharField(
        allow_null=True, help_text="Delivery items: the message's status."
    )
    error_code = serializers.IntegerField(
        allow_null=True, help_text="Delivery items: the provider's (Twilio's) error code."
    )


class TimelineOutput(serializers.Serializer):
    items = TimelineItemOutput(many=True)
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Send back as `?cursor=` for older items; null at the end."
    )


_render_timeline = renderer(TimelineOutput)


class MethodTimelineApi(AuditedApiView):
    """Read one method's timeline, newest first."""

    permission_classes = [IsSupportAgent]
    throttle_scope = "agent_read"

    class TimelineQuery(StrictSerializer):
        since = serializers.CharField(required=False, max_length=64)
        cursor = serializers.CharField(required=False, max_length=2000)
        limit = serializers.IntegerField(
            required=False, min_value=1, max_value=TIMELINE_MAX_ITEMS, default=TIMELINE_MAX_ITEMS
        )

        def validate_since(self, value: str) -> datetime:
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is None:
                raise serializers.ValidationError("since must be an ISO 8601 date and time.")
            if parsed.tzinfo is None:
                raise serializers.ValidationError("since needs a time zone (e.g. Z).")
            return parsed

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "since",
                str,
                description="ISO 8601 with a time zone; default: 24 hours ago.",
                required=False,
            ),
            OpenApiParameter(
                "cursor", str, description="The `next_cursor` of the page before.", required=False
            ),
            OpenApiParameter(
                "limit",
                int,
                description=f"Items per page, at most {TIMELINE_MAX_ITEMS} (the default).",
                required=False,
            ),
        ],
        responses={
            200: TimelineOutput,
            400: error_response("A `since`, `cursor` or `limit` that can't be used."),
        },
        summary="A method's timeline: events, delivery attempts and receipts",
        description=(
            "What happened to the method, newest first: its events, the delivery attempts its "
            "lookups found and Twilio's delivery receipts (with each error code in words). "
            "Numbers are masked."
        ),
    )
    def get(self, request: Request, customer_id: str, method_id: str) -> Response:
        customer = access_customer(customer_id=customer_id)
        method = Method.objects.filter(customer=customer, method_id=method_id).first()
        if method is None:
            raise NotFound(
                "This customer has no method with this id.", code=ErrorCode.UNKNOWN_METHOD
            )
        query = self.TimelineQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        since = query.validated_data.get("since") or timezone.now() - DEFAULT_SINCE
        page = method_timeline(
            method=method,
            since=since,
            cursor=query.validated_data.get("cursor"),
            limit=query.validated_data["limit"],
        )
        audit_read(
            actor=acting_user(request),
            action=AuditAction.TIMELINE_READ,
            customer_ref=customer.customer_id,
            obj=method,
            details={"method_id": method.method_id, "items": len(page.items)},
            context=audit_context(request),
        )
        return Response(_render_timeline(page))
