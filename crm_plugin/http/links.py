"""Signed panel links: how the CRM opens the sidebar panel for one agent and one customer.

The CRM asks ``POST /api/v1/panel-links/`` with the agent's token and loads the URL it gets in
its sidebar frame. The link carries the agent's user id, the customer id and a fingerprint of the
credential it was asked with, signed with ``django.core.signing`` (SECRET_KEY, a salt of its own,
a timestamp): it opens for five minutes, once. "Once" is kept in the database
(twosv.models.SpentNonce), not the cache: it holds across every worker and process, and links
still open, once, while the cache is down.

The token rides in the URL's fragment (``/panel/enter/#token=...``), which browsers never send:
the entry page's script reads it and POSTs it (crm_plugin/panel/views.py ``panel_enter``), so no
proxy or server log can see it. The panel session that follows lasts while that credential does
(``credential_is_current``): revoking or rotating the agent's API token ends it.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.contrib.auth.models import User
from django.core import signing
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.http import urlencode
from rest_framework.authtoken.models import Token

from crm_plugin.http.roles import SUPPORT_AGENT, user_groups
from twosv.audit import NO_CONTEXT, AuditAction, AuditContext, audit_record
from twosv.errors import NotFound
from twosv.models import Customer, SpentNonce
from twosv.selectors import access_customer

# The salt names where this module used to live; changing it would void links in flight.
PANEL_LINK_SALT = "crm_plugin.panel.link"
PANEL_LINK_MAX_AGE = timedelta(minutes=5)
# A used nonce is kept while its link could still verify, with a margin for clock skew.
SPENT_NONCE_KEPT = PANEL_LINK_MAX_AGE + timedelta(minutes=1)
NONCE_MAX_LENGTH = 64  # SpentNonce.nonce; ours are 22 characters
CREDENTIAL_SALT = "crm_plugin.http.links.credential"
CREDENTIAL_MAX_LENGTH = 128  # "token:" and a SHA-256 HMAC in hex


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


@dataclass(frozen=True)
class PanelEntry:
    """What a redeemed link names: who enters, on which customer, with which credential."""

    agent: User
    customer: Customer
    credential: str


def credential_fingerprint(user: User, auth: Any) -> str:
    """Return a fingerprint of the credential `user` authenticated with (``request.auth``).

    An API token: ``token:`` and an HMAC of its key (never the key itself). Otherwise (a Django
    session): ``account:`` and an HMAC of the user's session hash, which changes with the
    password. A CRM launch binds its session to ``crm:`` (crm_plugin/crm/identities.py).
    ``credential_is_current`` tells whether the credential still stands.
    """
    if isinstance(auth, Token):
        return f"token:{_digest(auth.key)}"
    return f"account:{_digest(user.get_session_auth_hash())}"


def credential_is_current(user: User, credential: str) -> bool:
    """Return whether the credential fingerprinted as `credential` is still the user's."""
    kind, _, digest = credential.partition(":")
    if kind == "token":
        # DRF keeps one token a user; revoking deletes it, rotating replaces its key.
        keys = Token.objects.filter(user=user).values_list("key", flat=True)
        return any(constant_time_compare(_digest(key), digest) for key in keys)
    if kind == "account":
        return constant_time_compare(_digest(user.get_session_auth_hash()), digest)
    if kind == "crm":
        # A launch from a CRM (crm_plugin/crm): the (issuer, sub) link it was made with. Imported
        # here: the crm area builds on this one (roles), not the other way round.
        from crm_plugin.crm.identities import identity_credential_is_current, may_act_as_agent

        return may_act_as_agent(user) and identity_credential_is_current(user, credential)
    return False


def _digest(value: str) -> str:
    return salted_hmac(CREDENTIAL_SALT, value, algorithm="sha256").hexdigest()


def panel_link_issue(
    *, agent: User, customer: Customer, credential: str, context: AuditContext = NO_CONTEXT
) -> PanelLink:
    """Sign a link that opens the panel on `customer` for `agent`; audit that it was issued.

    `credential` (``credential_fingerprint``) is what the link was asked with: the panel session
    the link opens ends when it no longer stands.
    """
    # The nonce makes every link single-use (see panel_link_redeem).
    payload = {
        "u": agent.pk,
        "c": customer.customer_id,
        "n": secrets.token_urlsafe(16),
        "k": credential,
    }
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
    """Return the link's path: the token rides in the fragment, which browsers never send."""
    return f"{reverse('panel:enter')}#{urlencode({'token': link.token})}"


def panel_link_agent_id(token: str) -> int | None:
    """Return the user id an authentic, unexpired link names, without spending or auditing it.

    The entry uses it to ask before a link replaces another agent signed in to the panel.
    """
    try:
        raw = signing.loads(token, salt=PANEL_LINK_SALT, max_age=PANEL_LINK_MAX_AGE)
    except signing.BadSignature:
        return None
    payload = _payload(raw)
    return int(payload["u"]) if payload else None


def panel_link_redeem(*, token: str, context: AuditContext = NO_CONTEXT) -> PanelEntry:
    """Return the agent, customer and credential a valid link names, or raise PanelLinkRefused.

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
    if not _spend_nonce(payload["n"]):
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
    # A link signed before links carried their credential (five minutes at most): bind the
    # session to the agent's token as it is now.
    credential = payload.get("k") or credential_fingerprint(agent, _current_token(agent))
    return PanelEntry(agent=agent, customer=customer, credential=credential)


def _current_token(user: User) -> Token | None:
    return Token.objects.filter(user=user).first()


def _spend_nonce(nonce: str) -> bool:
    """Record `nonce` as used; return False when it was used already (by any process)."""
    now = timezone.now()
    # Rows whose links can no longer verify: a range delete on an index, a few rows at most.
    SpentNonce.objects.filter(expires_at__lt=now).delete()
    try:
        # A savepoint: the caller's transaction, if any, survives the duplicate key.
        with transaction.atomic():
            SpentNonce.objects.create(nonce=nonce, expires_at=now + SPENT_NONCE_KEPT)
    except IntegrityError:
        return False
    return True


def _payload(raw: Any) -> dict[str, Any]:
    """Return the link's payload when it has the shape we sign, else an empty dict."""
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("u"), int)
        and isinstance(raw.get("c"), str)
        and isinstance(raw.get("n"), str)
        and 0 < len(raw["n"]) <= NONCE_MAX_LENGTH
        and isinstance(raw.get("k", ""), str)
        and len(raw.get("k", "")) <= CREDENTIAL_MAX_LENGTH
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
