"""Signed panel links: how the CRM opens the sidebar panel for one agent and one customer.

The CRM asks ``POST /api/v1/panel-links/`` with the agent's token and loads the URL it gets in
its sidebar frame. The link carries the agent's user id and the customer id, signed with
``django.core.signing`` (SECRET_KEY, a salt of its own, a timestamp): it opens for five minutes,
once, and then the panel runs on an ordinary Django session with CSRF.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.contrib.auth.models import User
from django.core import signing
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from crm_plugin.http.roles import SUPPORT_AGENT, user_groups
from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.errors import NotFound
from twosv.models import Customer
from twosv.selectors import access_customer

# The salt names where this module used to live; changing it would void links in flight.
PANEL_LINK_SALT = "crm_plugin.panel.link"
PANEL_LINK_MAX_AGE = timedelta(minutes=5)


def is_panel_agent(user: Any) -> bool:
    """Return whether `user` may use the panel: an active member of ``support_agent``."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and SUPPORT_AGENT in user_groups(user)
    )


@dataclass(frozen=True)
class PanelLink:
    token: str
    expires_at: datetime


class PanelLinkRefused(Exception):
    """The link is tampered with, expired, used already, or names someone who isn't an agent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def panel_link_issue(
    *, agent: User, customer: Customer, context: AuditContext = NO_CONTEXT
) -> PanelLink:
    """Sign a link that opens the panel on `customer` for `agent`; audit that it was issued."""
    # The nonce makes every link single-use (see panel_link_redeem).
    payload = {"u": agent.pk, "c": customer.customer_id, "n": secrets.token_urlsafe(16)}
    token = signing.dumps(payload, salt=PANEL_LINK_SALT)
    expires_at = timezone.now() + PANEL_LINK_MAX_AGE
    audit_record(
        actor=agent,
        action=AuditAction.PANEL_LINK_CREATE,
        result="ok",
        customer_ref=customer.customer_id,
        obj=customer,
        details={"expires_at": expires_at.isoformat()},
        context=context,
    )
    return PanelLink(token=token, expires_at=expires_at)


def panel_link_path(link: PanelLink) -> str:
    """Return the link's path; the token rides in the query string, which no log line keeps."""
    return f"{reverse('panel:enter')}?{urlencode({'token': link.token})}"


def panel_link_redeem(*, token: str, context: AuditContext = NO_CONTEXT) -> tuple[User, Customer]:
    """Return the agent and the customer a valid link names, or raise PanelLinkRefused.

    Every attempt is audited; a refused one names the agent and customer only when the link is
    authentic (an expired or replayed link), never what a tampered one claims.
    """
    try:
        payload = signing.loads(token, salt=PANEL_LINK_SALT, max_age=PANEL_LINK_MAX_AGE)
    except signing.SignatureExpired:
        # Authentic but late: read it without the age check only to say whose link it was.
        _refuse("expired", _payload(signing.loads(token, salt=PANEL_LINK_SALT)), context)
    except signing.BadSignature:
        _refuse("bad_signature", {}, context)
    payload = _payload(payload)
    if not payload:
        _refuse("bad_signature", {}, context)
    # Single use: a link that leaks (a log, a shared screen) can't open a second session.
    # The cache must be shared between processes for this to hold across workers (CACHE_URL).
    if not cache.add(f"panel-link:{payload['n']}", True, PANEL_LINK_MAX_AGE.total_seconds() + 60):
        _refuse("already_used", payload, context)
    agent = User.objects.filter(pk=payload["u"]).first()
    if not is_panel_agent(agent):
        _refuse("not_an_agent", payload, context)
    assert agent is not None  # is_panel_agent(None) is False
    try:
        customer = access_customer(customer_id=payload["c"])
    except NotFound:
        _refuse("unknown_customer", payload, context)
    audit_record(
        actor=agent,
        action=AuditAction.PANEL_LINK_OPEN,
        result="ok",
        customer_ref=customer.customer_id,
        obj=customer,
        context=context,
    )
    return agent, customer


def _payload(raw: Any) -> dict[str, Any]:
    """Return the link's payload when it has the shape we sign, else an empty dict."""
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("u"), int)
        and isinstance(raw.get("c"), str)
        and isinstance(raw.get("n"), str)
    ):
        return raw
    return {}


def _refuse(reason: str, payload: dict[str, Any], context: AuditContext) -> NoReturn:
    actor = User.objects.filter(pk=payload["u"]).first() if payload else None
    audit_record(
        actor=actor,
        action=AuditAction.PANEL_LINK_OPEN,
        result=reason,
        customer_ref=str(payload.get("c", ""))[:64],
        context=context,
    )
    raise PanelLinkRefused(reason)
