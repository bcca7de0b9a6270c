"""Who works in the panel: an identity of its own, kept beside Django's login, never instead of it.

Entering the panel (a POST of a signed link, ``views.panel_enter``) records the agent, the
credential the link was asked with (``links.credential_fingerprint``) and when the panel session
ends, under ``PANEL_IDENTITY_KEY`` in the Django session. It is not a Django login: an admin
signed in to the same browser stays signed in as themselves, and the panel identity opens
neither the API nor the admin. Every panel request checks it again (``panel_agent``): it holds at
most ``CRM_PANEL_SESSION_TTL`` after entry, and only while the agent is an active member of
``support_agent`` whose credential (API token) is still the one on file.

The identity is one small dict; where it travels is this module's business alone, so a carrier
that doesn't need a cookie (SPEC §9, a panel framed with third-party cookies blocked) can take
the session's place here without touching the views.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone

from crm_plugin.http import links

PANEL_IDENTITY_KEY = "twosv_panel_identity"
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
    stored: Any = request.session.get(PANEL_IDENTITY_KEY)
    if not isinstance(stored, dict) or not isinstance(stored.get("user"), int):
        return PanelAccess(agent=None)
    user = User.objects.filter(pk=stored["user"]).first()
    if user is None:
        ended = ENDED_NOT_AN_AGENT
    elif timezone.now().timestamp() >= stored.get("ends_at", 0):
        ended = ENDED_EXPIRED
    elif not links.is_panel_agent(user):
        ended = ENDED_NOT_AN_AGENT
    elif not links.credential_is_current(user, str(stored.get("credential", ""))):
        ended = ENDED_CREDENTIAL
    else:
        return PanelAccess(agent=user)
    del request.session[PANEL_IDENTITY_KEY]
    return PanelAccess(agent=None, ended=ended, former=user)
