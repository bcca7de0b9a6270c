"""Who a verified assertion's agent is: the Django user linked to (issuer, sub).

An admin links CRM identities to users in the admin. On first sight of an unlinked identity a
user is created (and put in ``support_agent``) only when ``CRM_AGENT_AUTO_PROVISION`` is on and
the assertion's email is in a domain of ``CRM_AGENT_EMAIL_DOMAINS``; an existing account is never
linked automatically (a CRM could otherwise claim an admin's address). Only an active member of
``support_agent`` who is not an ``event_producer`` may act as an agent, now and on every request
an access token or a panel session makes later.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from crm_plugin.crm.assertions import VerifiedAssertion
from crm_plugin.crm.models import CrmIdentity
from crm_plugin.http.roles import EVENT_PRODUCER, SUPPORT_AGENT, user_groups

CREDENTIAL_SALT = "crm_plugin.crm.identities.credential"


class AgentNotAllowed(Exception):
    """A valid assertion whose agent may not use the panel or the API (403 agent_not_allowed)."""

    def __init__(self, reason: str, message: str, user: User | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.user = user


def may_act_as_agent(user: Any) -> bool:
    """Return whether `user` may act as a CRM agent: active, in support_agent, no producer."""
    if user is None or not user.is_active:
        return False
    groups = user_groups(user)
    return SUPPORT_AGENT in groups and EVENT_PRODUCER not in groups


def crm_agent_resolve(assertion: VerifiedAssertion) -> tuple[User, CrmIdentity, bool]:
    """Return (agent, identity, provisioned) for a verified assertion, or raise AgentNotAllowed."""
    identity = (
        CrmIdentity.objects.select_related("user")
        .filter(issuer=assertion.issuer, subject=assertion.subject)
        .first()
    )
    provisioned = False
    if identity is None:
        identity = _provision(assertion)
        provisioned = True
    user = identity.user
    if not user.is_active:
        raise AgentNotAllowed("inactive_user", "The linked user is inactive.", user)
    if EVENT_PRODUCER in user_groups(user):
        raise AgentNotAllowed(
            "producer_account", "The linked user is an event producer, not an agent.", user
        )
    if SUPPORT_AGENT not in user_groups(user):
        raise AgentNotAllowed(
            "not_a_support_agent", "The linked user is not in the support_agent group.", user
        )
    CrmIdentity.objects.filter(pk=identity.pk).update(last_seen_at=timezone.now())
    return user, identity, provisioned


def _provision(assertion: VerifiedAssertion) -> CrmIdentity:
    if not settings.CRM_AGENT_AUTO_PROVISION:
        raise AgentNotAllowed(
            "unknown_identity",
            "No user is linked to this CRM identity: an admin links it under CRM identities.",
        )
    domains = {domain.strip().lower() for domain in settings.CRM_AGENT_EMAIL_DOMAINS}
    local, _, domain = assertion.email.rpartition("@")
    if not local or domain not in domains:
        raise AgentNotAllowed(
            "email_domain_not_allowed",
            "No user is linked to this CRM identity, and its email's domain is not one that "
            "may be provisioned (CRM_AGENT_EMAIL_DOMAINS).",
        )
    if User.objects.filter(username__iexact=assertion.email).exists() or (
        User.objects.filter(email__iexact=assertion.email).exists()
    ):
        raise AgentNotAllowed(
            "account_exists",
            "An account with this email exists: an admin links it to the CRM identity.",
        )
    try:
        with transaction.atomic():
            user = User(username=assertion.email[:150], email=assertion.email)
            user.first_name = assertion.name[:150]
            user.set_unusable_password()
            user.save()
            user.groups.add(Group.objects.get_or_create(name=SUPPORT_AGENT)[0])
            return CrmIdentity.objects.create(
                issuer=assertion.issuer, subject=assertion.subject, user=user
            )
    except IntegrityError:
        # Two first sights at once: the other one made it; use theirs.
        identity = (
            CrmIdentity.objects.select_related("user")
            .filter(issuer=assertion.issuer, subject=assertion.subject)
            .first()
        )
        if identity is None:
            raise AgentNotAllowed(
                "account_exists", "An account with this email exists: an admin links it."
            ) from None
        return identity


# ---------------------------------------------------------------------------------------------
# A credential the panel session can be bound to (crm_plugin/http/links.py style fingerprints)
# ---------------------------------------------------------------------------------------------


def identity_credential(identity: CrmIdentity) -> str:
    """Return ``crm:`` and an HMAC of the identity link; it stands while the link does."""
    return f"crm:{_digest(identity)}"


def identity_credential_is_current(user: User, credential: str) -> bool:
    """Return whether `credential` (identity_credential) names a link `user` still has."""
    kind, _, digest = credential.partition(":")
    if kind != "crm" or not digest:
        return False
    return any(
        constant_time_compare(_digest(identity), digest)
        for identity in CrmIdentity.objects.filter(user=user)
    )


def _digest(identity: CrmIdentity) -> str:
    value = f"{identity.pk}\n{identity.user_id}\n{identity.issuer}\n{identity.subject}"
    return salted_hmac(CREDENTIAL_SALT, value, algorithm="sha256").hexdigest()
