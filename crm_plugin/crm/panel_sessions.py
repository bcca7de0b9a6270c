"""Panel sessions that travel with the page: what a CRM's launch opens in its sidebar frame.

A panel framed by a CRM on another site can't count on a cookie: browsers block third-party
cookies (docs/SPEC.md §9). A launch (``POST /panel/launch/``) opens a `PanelSession` instead and
hands its random token to the page, which sends it back as the ``X-Panel-Session`` header
(crm_plugin/panel/frame_session.py). The database keeps the token's SHA-256 only. Whether the
session still lets its agent in (expiry, the agent's access, the credential) is decided on every
request by crm_plugin/panel/identity.py; `PanelSessionStore` keeps what the panel would keep in
the Django session (its troubleshooting sessions, its messages) on the row.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import SessionBase
from django.utils import timezone

from crm_plugin.crm.models import PanelSession

_MAX_TOKEN_LENGTH = 100


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def panel_session_open(*, agent: User, credential: str, issuer: str) -> tuple[str, PanelSession]:
    """Open a panel session for `agent` bound to `credential`; return (raw token, row).

    The raw token is handed to the page once and never stored.
    """
    now = timezone.now()
    # Ended sessions let nobody in: a range delete on an index, a few rows at most.
    PanelSession.objects.filter(expires_at__lt=now).delete()
    raw = secrets.token_urlsafe(32)
    row = PanelSession.objects.create(
        token_hash=_hash(raw),
        user=agent,
        credential=credential,
        issuer=issuer,
        expires_at=now + settings.CRM_PANEL_SESSION_TTL,
    )
    return raw, row


def panel_session_find(raw: str) -> PanelSession | None:
    """Return the session `raw` names, with its user, expired or not (None: unknown)."""
    if not raw or len(raw) > _MAX_TOKEN_LENGTH:
        return None
    return PanelSession.objects.select_related("user").filter(token_hash=_hash(raw)).first()


def panel_session_end(row: PanelSession) -> None:
    """End the session: its token opens nothing from now on."""
    PanelSession.objects.filter(pk=row.pk).delete()


class PanelSessionStore(SessionBase):
    """A Django session kept on a `PanelSession` row (or nowhere, for an unknown token).

    It stands in for ``request.session`` on a request the header authenticates, so the panel's
    views and messages work unchanged; it has no key and no cookie of its own.
    """

    def __init__(self, row: PanelSession | None) -> None:
        super().__init__(session_key=None)
        self._row = row
        self._session_cache = dict(row.data) if row is not None else {}

    def load(self) -> dict[str, Any]:
        return dict(self._row.data) if self._row is not None else {}

    def exists(self, session_key: str) -> bool:
        return False

    def create(self) -> None:
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        if self._row is None:
            return
        data = dict(self._session_cache)
        self._row.data = data
        PanelSession.objects.filter(pk=self._row.pk).update(data=data)

    def delete(self, session_key: str | None = None) -> None:
        self._session_cache = {}
        self.modified = True

    def cycle_key(self) -> None:
        # No key to fix: the token is the session's, and only a launch makes one.
        self.modified = True

    @classmethod
    def clear_expired(cls) -> None:
        PanelSession.objects.filter(expires_at__lt=timezone.now()).delete()
