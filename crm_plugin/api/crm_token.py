"""``POST /api/v1/auth/crm-token/``: a CRM exchanges a signed assertion for an access token.

The CRM signs a short JWT naming its agent (docs/SPEC.md §9, docs/integrations.md); the answer
is a short-lived token the API accepts as ``Authorization: Bearer <access_token>``. The endpoint
is anonymous (the assertion is the credential), so it is throttled per client address.
"""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crm_plugin.api.openapi import error_response
from crm_plugin.api.sessions import StrictSerializer
from crm_plugin.crm import services as crm
from crm_plugin.crm.assertions import MAX_ASSERTION_LENGTH
from crm_plugin.http.context import audit_context
from twosv.errors import ErrorCode


class CrmBearerScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Documents ``Authorization: Bearer <access_token>`` on every operation that accepts it."""

    target_class = "crm_plugin.crm.tokens.CrmBearerAuthentication"
    name = "crmBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from `POST /api/v1/auth/crm-token/`.",
        }


class InvalidAssertion(exceptions.AuthenticationFailed):
    default_code = ErrorCode.INVALID_ASSERTION.value


class AgentNotAllowed(exceptions.PermissionDenied):
    default_code = ErrorCode.AGENT_NOT_ALLOWED.value


class CrmTokenInput(StrictSerializer):
    assertion = serializers.CharField(
        max_length=MAX_ASSERTION_LENGTH,
        trim_whitespace=False,
        help_text="The signed JWT (generic CRM form, or Zendesk's signed-URL token).",
    )


class CrmAgentOutput(serializers.Serializer):
    username = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    email = serializers.CharField(allow_blank=True)


class CrmTokenOutput(serializers.Serializer):
    access_token = serializers.CharField(help_text="Send as `Authorization: Bearer <token>`.")
    token_type = serializers.ChoiceField(choices=["Bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds the token stays valid.")
    agent = CrmAgentOutput()


class CrmTokenApi(APIView):
    permission_classes = [AllowAny]
    throttle_scope = "crm_token"

    @extend_schema(
        request=CrmTokenInput,
        responses={
            200: CrmTokenOutput,
            401: error_response(
                "`invalid_assertion`: the assertion doesn't verify; the message says why "
                "(bad signature, expired, audience mismatch, replayed jti, ...)."
            ),
            403: error_response(
                "`agent_not_allowed`: the assertion is valid, but its agent may not use the "
                "panel (no linked user, inactive, not in `support_agent`)."
            ),
        },
        summary="Exchange a CRM's signed assertion for a short-lived access token",
        description=(
            "The assertion is a JWT the CRM signs for its agent (docs/integrations.md): "
            "`iss`, `aud`, `sub`, `email`, `jti`, `iat`, `exp` (at most 5 minutes after "
            "`iat`), each `jti` once. The access token answers every agent endpoint as "
            "`Authorization: Bearer <access_token>` for `CRM_ACCESS_TOKEN_TTL` (15 min), and "
            "stops at once when the agent is deactivated or leaves `support_agent`."
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = CrmTokenInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            agent, issued = crm.crm_token_exchange(
                assertion=serializer.validated_data["assertion"], context=audit_context(request)
            )
        except crm.AssertionRejected as exc:
            raise InvalidAssertion(f"Invalid assertion ({exc.reason}): {exc.message}") from exc
        except crm.AgentNotAllowed as exc:
            raise AgentNotAllowed(f"Agent not allowed ({exc.reason}): {exc.message}") from exc
        user = agent.agent
        body = {
            "access_token": issued.raw,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "agent": {
                "username": user.get_username(),
                "name": user.get_full_name(),
                "email": user.email,
            },
        }
        return Response(CrmTokenOutput(body).data)
