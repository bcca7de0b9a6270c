"""Panel links: the CRM asks for a signed URL that opens the sidebar panel for its agent.

The URL is ``/panel/enter/#token=...``: the token is in the fragment, which the browser keeps to
itself; the entry page posts it (crm_plugin/http/links.py).
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.openapi import error_response
from crm_plugin.api.permissions import IsSupportAgent
from crm_plugin.api.sessions import StrictSerializer
from crm_plugin.http import links
from crm_plugin.http.context import acting_user, audit_context
from twosv.selectors import access_customer


class IsPanelAgent(IsSupportAgent):
    """Support agents only: the link signs its holder in to the panel, which admins don't use."""

    allow_superuser = False


class PanelLinkInput(StrictSerializer):
    customer_id = serializers.CharField(max_length=64, trim_whitespace=False)


class PanelLinkOutput(serializers.Serializer):
    url = serializers.URLField()
    expires_at = serializers.DateTimeField()


class PanelLinkCreateApi(AuditedApiView):
    permission_classes = [IsPanelAgent]
    throttle_scope = "agent_read"

    @extend_schema(
        request=PanelLinkInput,
        responses={201: PanelLinkOutput, 404: error_response("No customer with this id.")},
        summary="A signed URL (valid 5 minutes, once) that opens the panel for this agent",
        description=(
            "The URL is `/panel/enter/#token=...`: load it in the agent's browser (the CRM's "
            "sidebar frame). The token is in the fragment, which the browser never sends; the "
            "page posts it and opens the customer's panel for at most `CRM_PANEL_SESSION_TTL` "
            "(8 h), ending early when the agent's token is revoked or rotated, the agent is "
            "deactivated or leaves `support_agent`."
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = PanelLinkInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        customer = access_customer(customer_id=serializer.validated_data["customer_id"])
        agent = acting_user(request)
        link = links.panel_link_issue(
            agent=agent,
            customer=customer,
            # The panel session ends when this token is revoked or rotated.
            credential=links.credential_fingerprint(agent, request.auth),
            context=audit_context(request),
        )
        url = request.build_absolute_uri(links.panel_link_path(link))
        return Response(
            PanelLinkOutput({"url": url, "expires_at": link.expires_at}).data,
            status=status.HTTP_201_CREATED,
        )
