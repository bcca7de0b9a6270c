"""Troubleshooting sessions: the agent's answers, phone verification, and closing feedback."""

from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.openapi import error_response
from crm_plugin.api.permissions import IsSupportAgent
from crm_plugin.api.representations import BlankAsNullCharField, renderer
from crm_plugin.api.steps import StepOutput
from crm_plugin.http.context import acting_user, audit_context
from twosv import engine, services
from twosv.models import SessionOutcome, TroubleshootingSession
from twosv.selectors import access_customer, access_session, customer_twosv_state


class StrictSerializer(serializers.Serializer):
    """Refuse unknown fields instead of ignoring them: a typo must not pass silently.

    Booleans must be JSON booleans: DRF's BooleanField would also take "yes", "off", 0 or 0.0,
    and an answer about the customer's device is too important to be guessed from those.
    """

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Send a JSON object."]}, code="invalid"
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {unknown[0]: [serializers.ErrorDetail("Unknown field.", code="unknown_field")]}
            )
        for name, field in self.fields.items():
            value = data.get(name)
            if isinstance(field, serializers.BooleanField) and value is not None:
                if not isinstance(value, bool):
                    raise serializers.ValidationError(
                        {name: [serializers.ErrorDetail("Must be true or false.", code="invalid")]}
                    )
        return super().to_internal_value(data)


class AnswersInput(StrictSerializer):
    has_device_access = serializers.BooleanField(allow_null=True, required=False)
    has_backup_device_access = serializers.BooleanField(allow_null=True, required=False)
    phone_number_changed = serializers.BooleanField(
        allow_null=True,
        required=False,
        help_text="Has the number of the customer's phone changed since 2SV was set up?",
    )


class AnswersOutput(serializers.Serializer):
    has_device_access = serializers.BooleanField(allow_null=True)
    has_backup_device_access = serializers.BooleanField(allow_null=True)
    phone_number_changed = serializers.BooleanField(allow_null=True)


class SessionOutput(serializers.Serializer):
    id = serializers.UUIDField()
    customer_id = serializers.CharField(source="session.customer.customer_id")
    method_id = serializers.CharField(allow_null=True)
    answers = AnswersOutput(source="session")
    phone_number_matches = serializers.BooleanField(
        source="session.phone_number_matches", allow_null=True
    )
    phone_verification_tries_left = serializers.IntegerField()
    next_step = StepOutput()
    created_at = serializers.DateTimeField(source="session.created_at")
    closed_at = serializers.DateTimeField(source="session.closed_at", allow_null=True)
    outcome = BlankAsNullCharField(source="session.outcome")


def _tries_left(session: TroubleshootingSession) -> int:
    limit: int = settings.TWOSV_PHONE_VERIFY_MAX_TRIES
    return max(limit - session.phone_verify_tries, 0)


_render_session = renderer(SessionOutput)


def session_body(session: TroubleshootingSession) -> dict[str, Any]:
    """Render the session with a freshly computed next step."""
    return _render_session(session_output(session))


def session_output(session: TroubleshootingSession) -> dict[str, Any]:
    """What SessionOutput renders: the session with a freshly computed next step."""
    state = customer_twosv_state(customer=session.customer, now=timezone.now(), session=session)
    step: engine.Step = state.decision.step
    return {
        "id": session.id,
        "session": session,
        # P as the engine chose it: the session's method, else the customer's primary.
        "method_id": state.decision.method_id,
        "phone_verification_tries_left": _tries_left(session),
        "next_step": step,
    }


class SessionCreateInput(StrictSerializer):
    method_id = serializers.CharField(max_length=128, required=False, allow_null=True)
    answers = AnswersInput(required=False)


class SessionCreateApi(AuditedApiView):
    permission_classes = [IsSupportAgent]
    # Sessions are cheap to open, and each one brings a phone check's per-session tries: capped
    # per agent like the other agent tools (the per-customer limit lives in the database).
    throttle_scope = "session_start"

    @extend_schema(
        request=SessionCreateInput,
        responses={201: SessionOutput, 409: error_response("The method was removed.")},
        summary="Start a troubleshooting session",
        description=(
            "Opens a session for the customer on the line, optionally for one `method_id` (else "
            "the active primary method) and with answers already known. The session's "
            "`next_step` follows the answers; `ask_*` and `recheck_phone_number` steps carry the "
            "question whose answer to PATCH."
        ),
    )
    def post(self, request: Request, customer_id: str) -> Response:
        customer = access_customer(customer_id=customer_id)
        serializer = SessionCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        session = services.session_start(
            customer=customer,
            agent=acting_user(request),
            method_id=serializer.validated_data.get("method_id"),
            answers=serializer.validated_data.get("answers"),
            context=audit_context(request),
        )
        return Response(session_body(session), status=status.HTTP_201_CREATED)


class SessionUpdateInput(StrictSerializer):
    method_id = serializers.CharField(max_length=128, required=False, allow_null=True)
    answers = AnswersInput(required=False)


class SessionDetailApi(AuditedApiView):
    permission_classes = [IsSupportAgent]
    throttle_scope = "agent_read"

    @extend_schema(
        responses={200: SessionOutput},
        summary="Read a troubleshooting session",
        description=(
            "The agent's own session, with its next step computed now from the answers and the "
            "customer's current state. Another agent's session answers 404."
        ),
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = access_session(session_id=session_id, user=request.user)
        body = session_body(session)
        services.customer_state_read_audit(
            customer=session.customer,
            actor=acting_user(request),
            step_code=body["next_step"]["code"],
            session=session,
            context=audit_context(request),
        )
        return Response(body)

    @extend_schema(
        request=SessionUpdateInput,
        responses={
            200: SessionOutput,
            409: error_response("The session is closed, or the method was removed."),
        },
        summary="Give answers or switch the method",
        description=(
            "`answers` merge into those already given (`has_device_access`, "
            "`has_backup_device_access`, `phone_number_changed`: true, false, or null to "
            "forget one). Switching `method_id` forgets the phone verification, which was about "
            "the other method's number."
        ),
    )
    def patch(self, request: Request, session_id: str) -> Response:
        session = access_session(session_id=session_id, user=request.user)
        serializer = SessionUpdateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        kwargs: dict[str, Any] = {"answers": data.get("answers")}
        if "method_id" in data:
            kwargs["method_id"] = data["method_id"]
        session = services.session_update(
            session=session, actor=acting_user(request), context=audit_context(request), **kwargs
        )
        return Response(session_body(session))


class VerifyPhoneInput(StrictSerializer):
    phone_number = serializers.CharField(max_length=40, trim_whitespace=True)


class VerifyPhoneOutput(serializers.Serializer):
    match = serializers.BooleanField()
    tries_left = serializers.IntegerField()
    next_step = StepOutput()


class SessionVerifyPhoneApi(AuditedApiView):
    permission_classes = [IsSupportAgent]
    throttle_scope = "verify_phone"

    @extend_schema(
        request=VerifyPhoneInput,
        responses={
            200: VerifyPhoneOutput,
            409: error_response("The session is closed, or its method has no phone number."),
            429: error_response(
                "The session's tries are used up (too_many_tries), or the customer's, across "
                "all sessions and agents in 24 h (too_many_phone_checks), or the agent is "
                "throttled (throttled)."
            ),
        },
        summary="Check the number the caller says against the one on file",
        description=(
            "`phone_number` in E.164 or the stored number's national format, any punctuation. "
            "Answers only whether it matches: the stored number is never echoed. One miss leads "
            "to `recheck_phone_number` (a misread digit is common); two misses in a row, to the "
            "Cancel-2SV flow (R6); a match clears the misses. Every call uses a try, an "
            "unparseable number too (400)."
        ),
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = access_session(session_id=session_id, user=request.user)
        serializer = VerifyPhoneInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        match = services.session_verify_phone(
            session=session,
            actor=acting_user(request),
            phone_number=serializer.validated_data["phone_number"],
            context=audit_context(request),
        )
        body = session_body(session)
        return Response(
            {
                "match": match,
                "tries_left": _tries_left(session),
                "next_step": body["next_step"],
            }
        )


class SessionCloseInput(StrictSerializer):
    outcome = serializers.ChoiceField(choices=SessionOutcome.choices)
    helpful = serializers.BooleanField(allow_null=True, required=False, default=None)
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class SessionCloseApi(AuditedApiView):
    permission_classes = [IsSupportAgent]

    @extend_schema(
        request=SessionCloseInput,
        responses={200: SessionOutput, 409: error_response("The session is already closed.")},
        summary="Close the session",
        description=(
            "Records the outcome (`resolved`, `not_resolved` or `escalated`), whether the last "
            "step shown was helpful, and a comment. A closed session can't be changed."
        ),
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = access_session(session_id=session_id, user=request.user)
        serializer = SessionCloseInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        session = services.session_close(
            session=session,
            actor=acting_user(request),
            context=audit_context(request),
            **serializer.validated_data,
        )
        return Response(session_body(session))
