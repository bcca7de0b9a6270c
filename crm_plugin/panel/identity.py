"""Who works in the panel: an identity of its own, kept beside Django's login, never instead of it.

Entering the panel (a POST of a signed link, ``views.panel_enter``) records the agent, the
credential the link was asked with (``links.credential_fingerprint``) and when the panel session
ends, under ``PANEL_IDENTITY_KEY`` in the Django session. It is not a Django login: an admin
signed in to the same browser stays signed in as themselves, and the panel identity opens
neither the API nor the admin. Every panel request checks it again (``panel_agent``): it holds at
most ``CRM_PANEL_SESSION_TTL`` after entry, and only while the agent is an active member of
``support_agent`` whose credential (API token) is still the one on file.

The identity is one small dict; where it travels is this module's business alone. A panel framed
by a CRM on another site (SPEC §9, third-party cookies blocked) travels without a cookie: a launch
(launch.py) opens a server-side panel session (crm_plugin/crm/panel_sessions.py) whose token the
page sends as the ``X-Panel-Session`` header (frame_session.py). That header, when present, is
the only identity a request has (the cookie is not consulted); it passes the same checks.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone

from crm_plugin.crm import panel_sessions
from crm_plugin.http import links

PANEL_IDENTITY_KEY = "twosv_panel_identity"
# A framed panel's session token, sent by static/panel/frame-session.js (frame_session.py).
PANEL_SESSION_HEADER = "X-Panel-Session"
PANEL_SESSION_META = "HTTP_X_PANEL_SESSION"
# The troubleshooting sessions the panel remembers for its agent, by customer (views.py).
REMEMBERED_SESSIONS_KEY = "twosv_panel_sessions"
# Why a panel session ended, as the refusal's audit entry and the page say it.
ENDED_EXPIRED = "panel_session_expired"
ENDED_NOT_AN_AGENT = "panel_agent_not_allowed"
ENDED_CREDENTIAL = "panel_credential_revoked"


@dataclass(frozen=True)
class PanelAccess:
    """The panel's agent for this request, or why there is none.

    ``agent`` is None when nobody entered the panel or the panel session ended; then ``ended``
    says why (one of the ``ENDED_*`` codes) and ``former`` names whose session it was.
    """

    agent: User | None
    ended: str = ""
    former: User | None = None


def panel_identity_begin(request: HttpRequest, *, agent: User, credential: str) -> None:
    """Make `agent` the panel's, for at most CRM_PANEL_SESSION_TTL and while `credential` stands.

    Django's login, if any (an admin), is kept as it is; the session gets a new key (no
    fixation), and one that holds nothing but the panel dies with the panel session.
    """
    previous = request.session.get(PANEL_IDENTITY_KEY) or {}
    request.session.cycle_key()
    if previous.get("user") != agent.pk:
        # Another agent's troubleshooting sessions are not this one's.
        request.session.pop(REMEMBERED_SESSIONS_KEY, None)
    ttl = settings.CRM_PANEL_SESSION_TTL
    request.session[PANEL_IDENTITY_KEY] = {
        "user": agent.pk,
        "credential": credential,
        "ends_at": int((timezone.now() + ttl).timestamp()),
    }
    if AUTH_SESSION_KEY not in request.session:
        request.session.set_expiry(int(ttl.total_seconds()))


def panel_agent(request: HttpRequest) -> PanelAccess:
    """Return the panel's agent for this request, checking the panel session again.

    A session past its end, an agent who is inactive or out of ``support_agent``, or a credential
    revoked or rotated since entry ends the panel session: its identity is dropped.
    """
    if PANEL_SESSION_META in request.META:
        return _framed_panel_agent(request)
    stored: Any = request.session.get(PANEL_IDENTITY_KEY)
    if not isinstance(stored, dict) or not isinstance(stored.get("user"), int):
        return PanelAccess(agent=None)
    user = User.objects.filter(pk=stored["user"]).first()
    ended = _ended(user, stored.get("ends_at", 0), str(stored.get("credential", "")))
    if not ended:
        return PanelAccess(agent=user)
    del request.session[PANEL_IDENTITY_KEY]
    return PanelAccess(agent=None, ended=ended, former=user)


def _framed_panel_agent(request: HttpRequest) -> PanelAccess:
    """The agent of the panel session the ``X-Panel-Session`` header names, checked again.

    An unknown token (never issued, or a session ended and purged) ends nothing and names
    nobody; a session that ends now is deleted, so its token opens nothing again.
    """
    row = getattr(request, "panel_frame_session", None)
    if row is None:
        row = panel_sessions.panel_session_find(request.META.get(PANEL_SESSION_META, ""))
    if row is None:
        return PanelAccess(agent=None, ended=ENDED_EXPIRED)
    ended = _ended(row.user, row.expires_at.timestamp(), row.credential)
    if not ended:
        return PanelAccess(agent=row.user)
    panel_sessions.panel_session_end(row)
    return PanelAccess(agent=None, ended=ended, former=row.user)


def _ended(user: User | None, ends_at: float, credential: str) -> str:
    """Why a panel session of `user` ends now ("" while it holds), checked on every request."""
    if user is None:
        return ENDED_NOT_AN_AGENT
    if timezone.now().timestamp() >= ends_at:
        return ENDED_EXPIRED
    if not links.is_panel_agent(user):
        return ENDED_NOT_AN_AGENT
    if not links.credential_is_current(user, credential):
        return ENDED_CREDENTIAL
    return ""
