"""Opening the panel from a CRM with a signed assertion (docs/SPEC.md §9, docs/integrations.md).

``POST /panel/launch/`` (form field ``token``: a generic CRM JWT naming ``customer_id``) and
``POST /panel/launch/zendesk/`` (form field ``token``: the JWT Zendesk posts to a signed-URL app,
with ``origin`` and ``app_guid`` in the query) verify the assertion and find its agent
(crm_plugin.crm.services.crm_panel_launch, which audits the launch or the refusal), then open a
panel session that travels with the page, not in a cookie (crm_plugin/crm/panel_sessions.py):

- the answer holds the session's token in ``<meta name="panel-session">``;
  static/panel/frame-session.js sends it as ``X-Panel-Session`` on every request the page makes,
  and turns the page's forms and links into such requests (frame_session.py), so the panel works
  in a frame of another site with third-party cookies blocked, and no token lands in a URL;
- generic: the page opens the customer's panel straight away;
- Zendesk: a bootstrap page loads the ZAF SDK and static/zendesk/bootstrap.js, which asks for the
  ticket requester's external id and POSTs it to ``/panel/launch/zendesk/open/`` under the same
  panel session; that answers with the customer's panel. Zendesk's ``origin`` and ``app_guid``
  are carried on every page and redirect (``ZAFClient.init()`` needs them).

The launch POSTs come from the CRM's page on another site with no CSRF cookie: they are exempt
from the CSRF check, the assertion's signature (and its single-use ``jti``) being the proof. The
launch pages may be framed by the configured origins only (CSP ``frame-ancestors``:
``CRM_PANEL_FRAME_ANCESTORS``, and the Zendesk accounts' origins for the Zendesk launch).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from crm_plugin.crm import panel_sessions
from crm_plugin.crm.services import (
    AgentNotAllowed,
    AssertionRejected,
    CrmLaunch,
    crm_panel_launch,
    zendesk_carried_params,
    zendesk_origins,
)
from crm_plugin.http.context import audit_context
from crm_plugin.panel import throttling, views
from twosv.errors import NotFound
from twosv.selectors import access_customer

View = Callable[..., HttpResponse]

ZAF_SDK_ORIGIN = "https://static.zdassets.com"
ZAF_SDK_URL = f"{ZAF_SDK_ORIGIN}/zendesk_app_framework_sdk/2.0/zaf_sdk.min.js"
CUSTOMER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# The sidebar's height Zendesk gives the app's frame (client.invoke("resize")).
ZENDESK_FRAME_HEIGHT = "640px"


def launch_content_security_policy(*, zendesk: bool) -> str:
    """The launch pages' CSP: this site's files (and the ZAF SDK for Zendesk); framed by the
    configured CRM origins only. The panel pages that follow replace this document in place
    (frame-session.js), so this policy governs the frame from then on."""
    ancestors = ["'self'", *settings.CRM_PANEL_FRAME_ANCESTORS]
    scripts = ["'self'"]
    if zendesk:
        ancestors += [o for o in zendesk_origins() if o not in ancestors]
        scripts.append(ZAF_SDK_ORIGIN)
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {' '.join(scripts)}",
            "connect-src 'self'",
            "base-uri 'none'",
            "object-src 'none'",
            "form-action 'self'",
            f"frame-ancestors {' '.join(ancestors)}",
        ]
    )


def launch_page(*, zendesk: bool) -> Callable[[View], View]:
    """A cross-site POST from the CRM: CSRF-exempt, framed by the CRM's origins, never cached."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            response = view(request, *args, **kwargs)
            response["Content-Security-Policy"] = launch_content_security_policy(zendesk=zendesk)
            return response

        return csrf_exempt(xframe_options_exempt(never_cache(require_POST(wrapped))))

    return decorator


def _verify(request: HttpRequest, form: str) -> CrmLaunch | HttpResponse:
    """The launch the posted token makes, or the page that says why it can't."""
    try:
        # Anonymous until verified: counted per client address, as the token exchange is.
        throttling.throttle(request, "crm_token")
    except throttling.Throttled as exc:
        response = render(request, "panel/throttled.html", status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    try:
        return crm_panel_launch(
            token=request.POST.get("token", ""), form=form, context=audit_context(request)
        )
    except AssertionRejected as exc:
        return _refused(request, 401, exc.reason, exc.message)
    except AgentNotAllowed as exc:
        return _refused(request, 403, exc.reason, exc.message)


def _refused(request: HttpRequest, status: int, reason: str, message: str) -> HttpResponse:
    context = {"status": status, "reason": reason, "message": message}
    return render(request, "panel/launch_refused.html", context, status=status)


def _open_session(request: HttpRequest, launch: CrmLaunch) -> str:
    raw, _row = panel_sessions.panel_session_open(
        agent=launch.agent, credential=launch.credential, issuer=launch.issuer
    )
    # The page's <meta name="panel-session"> (templates/panel/base.html).
    request.panel_session_token = raw  # type: ignore[attr-defined]
    return raw


@launch_page(zendesk=False)
def panel_launch(request: HttpRequest) -> HttpResponse:
    """Open the panel for the generic assertion's agent, on its ``customer_id``."""
    launch = _verify(request, "generic")
    if isinstance(launch, HttpResponse):
        return launch
    if not launch.customer_id:
        message = "The assertion names no customer: add the customer_id claim."
        return _refused(request, 400, "missing_customer_id", message)
    try:
        customer = access_customer(customer_id=launch.customer_id)
    except NotFound:
        return render(request, "panel/not_found.html", status=404)
    _open_session(request, launch)
    open_url = reverse("panel:customer", args=[customer.customer_id])
    return render(request, "panel/launch.html", {"open_url": open_url})


@launch_page(zendesk=True)
def panel_launch_zendesk(request: HttpRequest) -> HttpResponse:
    """Serve the Zendesk app's bootstrap page for the agent Zendesk's token names."""
    launch = _verify(request, "zendesk")
    if isinstance(launch, HttpResponse):
        return launch
    raw = _open_session(request, launch)
    config = {
        "open_url": reverse("panel:launch-zendesk-open"),
        "fields": {},  # the panel session rides in the X-Panel-Session header, not a field
        "height": ZENDESK_FRAME_HEIGHT,
    }
    context = {
        "panel_session_token": raw,
        "config": config,
        "zaf_sdk_url": ZAF_SDK_URL,
        "carried": zendesk_carried_params(request.GET),
    }
    return render(request, "panel/launch_zendesk.html", context)


@views.panel_agent_view(views.READ)
@require_POST
def panel_launch_zendesk_open(request: HttpRequest) -> HttpResponse:
    """Open the requester's panel (bootstrap.js posts ``customer_id``), carrying Zendesk's
    ``origin`` and ``app_guid`` on. Only under a panel session (the header, or a cookie)."""
    customer_id = request.POST.get("customer_id", "")
    if not CUSTOMER_ID.fullmatch(customer_id):
        return render(request, "panel/not_found.html", status=404)
    customer = access_customer(customer_id=customer_id)  # an unknown one: the 404 page
    url = reverse("panel:customer", args=[customer.customer_id])
    carried = zendesk_carried_params(request.GET)
    return HttpResponseRedirect(f"{url}?{urlencode(carried)}" if carried else url)
