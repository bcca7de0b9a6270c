"""The CRM flows: exchange an assertion for an access token; launch the panel from a CRM.

Both verify the assertion (`assertions`), find its agent (`identities`) and audit the outcome
with the issuer: refusals without the token, successes under the agent. The panel's launch views
call `crm_panel_launch` (``POST /panel/launch/`` with form ``generic``, ``/panel/launch/zendesk/``
with form ``zendesk``) and bind their session to `CrmLaunch.credential`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User

from crm_plugin.crm import assertions, identities, tokens
from crm_plugin.crm.assertions import AssertionRejected, VerifiedAssertion
from crm_plugin.crm.identities import AgentNotAllowed
from crm_plugin.crm.models import CrmIdentity
from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record

__all__ = [
    "AgentNotAllowed",
    "AssertionRejected",
    "CrmAgent",
    "CrmLaunch",
    "crm_agent_authenticate",
    "crm_panel_launch",
    "crm_token_exchange",
    "zendesk_carried_params",
    "zendesk_origins",
]

# The query parameters Zendesk adds to the app's URL; ZAFClient.init() needs them on every page.
ZENDESK_CARRIED = ("origin", "app_guid")
_APP_GUID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True)
class CrmAgent:
    agent: User
    identity: CrmIdentity
    assertion: VerifiedAssertion
    provisioned: bool


@dataclass(frozen=True)
class CrmLaunch:
    """What a panel launch opens: the agent, the customer the assertion names (generic form;
    None for Zendesk, whose bootstrap page asks the ZAF client), and the credential the panel
    session stands on (`identities.identity_credential_is_current`)."""

    agent: User
    customer_id: str | None
    issuer: str
    credential: str


def crm_agent_authenticate(
    *, token: str, form: str | None, action: AuditAction, context: AuditContext = NO_CONTEXT
) -> CrmAgent:
    """Verify `token` and resolve its agent, auditing a refusal under `action`.

    Raises AssertionRejected (401 invalid_assertion) or AgentNotAllowed (403 agent_not_allowed).
    """
    try:
        verified = assertions.assertion_verify(token, form=form)
    except AssertionRejected as exc:
        audit_record(
            actor=None,
            action=AuditAction.CRM_ASSERTION_REFUSED,
            result=exc.reason,
            details={"form": exc.form, "claimed_issuer": exc.claimed_issuer, "via": str(action)},
            context=context,
        )
        raise
    try:
        agent, identity, provisioned = identities.crm_agent_resolve(verified)
    except AgentNotAllowed as exc:
        audit_record(
            actor=exc.user,
            action=action,
            result="agent_not_allowed",
            details=_details(verified, reason=exc.reason),
            context=context,
        )
        raise
    if provisioned:
        audit_record(
            actor=agent,
            action=AuditAction.CRM_AGENT_PROVISION,
            result="ok",
            obj=agent,
            details=_details(verified),
            context=context,
        )
    return CrmAgent(agent=agent, identity=identity, assertion=verified, provisioned=provisioned)


def crm_token_exchange(
    *, assertion: str, context: AuditContext = NO_CONTEXT
) -> tuple[CrmAgent, tokens.IssuedToken]:
    """Exchange a signed assertion for an access token (``POST /api/v1/auth/crm-token/``)."""
    crm = crm_agent_authenticate(
        token=assertion, form=None, action=AuditAction.CRM_TOKEN_EXCHANGE, context=context
    )
    issued = tokens.access_token_issue(
        user=crm.agent, identity=crm.identity, issuer=crm.assertion.issuer
    )
    audit_record(
        actor=crm.agent,
        action=AuditAction.CRM_TOKEN_EXCHANGE,
        result="ok",
        customer_ref=(crm.assertion.customer_id or "")[:64],
        details={
            **_details(crm.assertion),
            "expires_at": issued.token.expires_at.isoformat(),
        },
        context=context,
    )
    return crm, issued


def crm_panel_launch(*, token: str, form: str, context: AuditContext = NO_CONTEXT) -> CrmLaunch:
    """Verify a launch's assertion (`form`: ``generic`` or ``zendesk``) and audit the launch.

    The caller (the panel's launch view) checks the customer, opens the panel session bound to
    ``credential`` and carries Zendesk's ``origin`` and ``app_guid`` query parameters on.
    """
    crm = crm_agent_authenticate(
        token=token, form=form, action=AuditAction.CRM_PANEL_LAUNCH, context=context
    )
    audit_record(
        actor=crm.agent,
        action=AuditAction.CRM_PANEL_LAUNCH,
        result="ok",
        customer_ref=(crm.assertion.customer_id or "")[:64],
        details=_details(crm.assertion),
        context=context,
    )
    return CrmLaunch(
        agent=crm.agent,
        customer_id=crm.assertion.customer_id,
        issuer=crm.assertion.issuer,
        credential=identities.identity_credential(crm.identity),
    )


def _details(assertion: VerifiedAssertion, **extra: str) -> dict[str, str]:
    return {
        "issuer": assertion.issuer,
        "subject": assertion.subject,
        "form": assertion.form,
        **extra,
    }


def zendesk_origins() -> list[str]:
    """Return the origins of the configured Zendesk accounts (for CSP frame-ancestors)."""
    return sorted(
        {f"https://{sub.strip().lower()}.zendesk.com" for sub in settings.ZENDESK_SUBDOMAINS}
    )


def zendesk_carried_params(query: Mapping[str, str]) -> dict[str, str]:
    """Return Zendesk's ``origin`` and ``app_guid`` from `query`, to carry on to the next page.

    Only values of the expected shape are kept (an origin of a configured account, a GUID), so
    a crafted link can't make the backend echo anything else into its pages or redirects.
    """
    kept = {}
    origin = query.get("origin", "")
    if origin in zendesk_origins():
        kept["origin"] = origin
    app_guid = query.get("app_guid", "")
    if _APP_GUID.fullmatch(app_guid or ""):
        kept["app_guid"] = app_guid
    return kept
