"""Short-lived access tokens: what a CRM gets for a verified assertion, sent as ``Bearer``.

The raw token (32 random bytes, URL-safe) is shown once, in the exchange's answer; the database
keeps its SHA-256 only, so a copy of the table opens nothing. A token authenticates while it is
unexpired (``CRM_ACCESS_TOKEN_TTL``, 15 min), while its CRM identity link exists and while its
user may act as an agent (`identities.may_act_as_agent`), checked on every request: deactivating
the user or taking them out of ``support_agent`` ends every token at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from crm_plugin.crm.identities import may_act_as_agent
from crm_plugin.crm.models import AccessToken, CrmIdentity

KEYWORD = "Bearer"
_MAX_TOKEN_LENGTH = 100


@dataclass(frozen=True)
class IssuedToken:
    raw: str  # shown once, never stored
    token: AccessToken
    expires_in: int  # seconds


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def access_token_issue(*, user: User, identity: CrmIdentity | None, issuer: str) -> IssuedToken:
    """Make an access token for `user`; return it with the raw value the caller hands out."""
    now = timezone.now()
    # Expired tokens authenticate nobody: a range delete on an index, a few rows at most.
    AccessToken.objects.filter(expires_at__lt=now).delete()
    raw = secrets.token_urlsafe(32)
    ttl = settings.CRM_ACCESS_TOKEN_TTL
    token = AccessToken.objects.create(
        token_hash=token_hash(raw),
        user=user,
        identity=identity,
        issuer=issuer,
        expires_at=now + ttl,
    )
    return IssuedToken(raw=raw, token=token, expires_in=int(ttl.total_seconds()))


def access_token_find(raw: str) -> AccessToken | None:
    """Return the live token `raw` names, with its user, or None (unknown, expired, revoked)."""
    if not raw or len(raw) > _MAX_TOKEN_LENGTH:
        return None
    token = (
        AccessToken.objects.select_related("user")
        .filter(token_hash=token_hash(raw), expires_at__gt=timezone.now())
        .first()
    )
    if token is None or not may_act_as_agent(token.user):
        return None
    return token


class CrmBearerAuthentication(BaseAuthentication):
    """``Authorization: Bearer <access token>`` from ``POST /api/v1/auth/crm-token/``.

    Listed after DRF's TokenAuthentication, so a 401's ``WWW-Authenticate`` still names
    ``Token``; a header with another keyword is left to the other classes.
    """

    def authenticate(self, request: Request) -> tuple[User, AccessToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Bearer header: send `Authorization: Bearer <access_token>`."
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid Bearer header.") from None
        token = access_token_find(raw)
        if token is None:
            raise exceptions.AuthenticationFailed(
                "The access token is unknown, expired or revoked: exchange a new assertion."
            )
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return KEYWORD
