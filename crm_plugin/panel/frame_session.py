"""The framed panel's session carrier: the ``X-Panel-Session`` header instead of a cookie.

A panel launched by a CRM (launch.py) runs in a frame of another site, where browsers block
third-party cookies. Its page holds the panel session's token (``<meta name="panel-session">``);
static/panel/frame-session.js sends it as ``X-Panel-Session`` on every request it makes, and turns
the page's forms and links into such requests. For a request under ``/panel/`` that carries the
header, this middleware:

- puts the panel session's own store (crm_plugin/crm/panel_sessions.py) in ``request.session``,
  so the views keep the agent's troubleshooting sessions and messages as they do with a cookie;
  the cookie session, if any, is put back before SessionMiddleware answers (no cookie is set);
- exempts the request from Django's CSRF check: it authenticates by the header alone (the panel
  never falls back to the cookie when the header is present, identity.py), and a page on another
  site can't send that header (no CORS here), nor does it know the token;
- keeps messages in that store, not in a cookie (process_view, after MessageMiddleware).

Whether the session lets its agent in is identity.py's business, on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.messages.storage.session import SessionStorage
from django.http import HttpRequest, HttpResponse

from crm_plugin.crm import panel_sessions
from crm_plugin.panel.identity import PANEL_SESSION_META

PANEL_PREFIX = "/panel/"


class PanelFrameSessionMiddleware:
    """Listed right after SessionMiddleware (before CSRF and messages)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get(PANEL_SESSION_META)
        if raw is None or not request.path_info.startswith(PANEL_PREFIX):
            return self.get_response(request)
        row = panel_sessions.panel_session_find(raw)
        cookie_session = getattr(request, "session", None)
        store = panel_sessions.PanelSessionStore(row)
        request.session = store
        request.panel_frame_session = row  # type: ignore[attr-defined]
        # For the next page's <meta name="panel-session"> (templates/panel/base.html).
        request.panel_session_token = raw if row is not None else ""  # type: ignore[attr-defined]
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            request.session = cookie_session  # type: ignore[assignment]
        if store.modified and row is not None and response.status_code < 500:
            store.save()
        return response

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if isinstance(request.session, panel_sessions.PanelSessionStore):
            request._messages = SessionStorage(request)  # type: ignore[attr-defined]
        return None
