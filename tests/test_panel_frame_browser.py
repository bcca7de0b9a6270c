"""The panel framed by a CRM on another site, third-party cookies blocked (SPEC §9, issue 18).

A host page on ``localhost`` (the CRM) POSTs a signed generic JWT into an iframe of the app on
``127.0.0.1``: another site. Chromium runs with third-party cookies blocked, so the frame keeps
no cookie (asserted); the panel session travels with the page (X-Panel-Session,
static/panel/frame-session.js). The agent answers a question and the step changes; a replayed
and an expired token are refused. Without /usr/bin/chromium these tests skip locally and fail
under REQUIRE_SERVICES=1 (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from crm_plugin.crm.models import CrmIdentity, PanelSession
from tests import crm_signing as signing
from tests import factories
from twosv.models import AuditEntry, TroubleshootingSession

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Third-party cookies blocked, as browsers are heading (the profile's setting below too).
    "--test-third-party-cookie-phaseout",
]
# The profile's "Block third-party cookies" (chrome://settings/cookies): cookie_controls_mode 1.
BLOCK_THIRD_PARTY_COOKIES = {
    "profile": {"cookie_controls_mode": 1, "block_third_party_cookies": True},
}
SIDEBAR = {"width": 420, "height": 900}
FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
CUSTOMER = "demo-sms-only"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CRM</title></head>
<body>
  <h1>The CRM's ticket</h1>
  <form id="launch" method="post" target="twosv" action="{app}/panel/launch/">
    <input type="hidden" name="token" id="token">
  </form>
  <iframe name="twosv" id="twosv" title="2SV panel" width="400" height="860"></iframe>
</body></html>
"""


class _HostHandler(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_server(transactional_db: None) -> Iterator[str]:
    """The app on 127.0.0.1 (pytest-django's live_server is on localhost, the CRM's site here)."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1:0", start=False)
    server._live_server_modified_settings.enable()
    server.start()
    yield server.url
    server.stop()
    server._live_server_modified_settings.disable()


@pytest.fixture
def host_page(app_server: str) -> Iterator[str]:
    """The CRM's page, on localhost: another site than the app's 127.0.0.1."""
    handler = type("Host", (_HostHandler,), {"page": HOST_PAGE.format(app=app_server).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/ticket"
    server.shutdown()
    server.server_close()


@pytest.fixture
def crm(settings: Any, host_page: str, tmp_path: Path) -> None:
    origin = host_page.rsplit("/", 1)[0]
    signing.configure_crm(settings, CRM_PANEL_FRAME_ANCESTORS=[origin])
    # As a deployment framing the panel would: cookies that a frame could keep, if allowed.
    settings.SESSION_COOKIE_SAMESITE = settings.CSRF_COOKIE_SAMESITE = "None"
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    agent = factories.UserFactory(username="framed-agent", groups=["support_agent"])
    CrmIdentity.objects.create(issuer=signing.ISSUER, subject="crm-agent-1", user=agent)
    customers = json.loads(FIXTURE.read_text())["customers"]
    fixture = tmp_path / "demo.json"
    fixture.write_text(
        json.dumps({"customers": [c for c in customers if c["customer_id"] == CUSTOMER]})
    )
    call_command("demo_load", "--fixture", str(fixture), stdout=StringIO())


@pytest.fixture
def context(tmp_path: Path, app_server: str) -> Iterator[Any]:
    """A fresh Chromium profile blocking third-party cookies, the CRM's sidebar's size.

    Closed before the app's server stops (it depends on it), so no request is left in flight.
    """
    from django.db import DEFAULT_DB_ALIAS, connections
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(BLOCK_THIRD_PARTY_COOKIES))
    connection = connections[DEFAULT_DB_ALIAS]
    with sync_playwright() as playwright:
        # Keep this thread's connection (the live server shares it, in-memory SQLite).
        connections[DEFAULT_DB_ALIAS] = connection
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=SIDEBAR,
        )
        context.set_default_timeout(15_000)
        yield context
        context.close()


def launch(
    context: Any, host_page: str, token: str, path: str = "/panel/launch/"
) -> tuple[Any, Any]:
    """The CRM's page POSTs `token` into its iframe (to `path`); return (page, frame)."""
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(host_page)
    page.evaluate(
        """([token, path]) => {
            const form = document.getElementById("launch");
            form.action = new URL(path, form.action).href;
            document.getElementById("token").value = token;
            form.submit();
        }""",
        [token, path],
    )
    return page, page.frame_locator("#twosv")


def app_frame(page: Any) -> Any:
    return next(f for f in page.frames if f.name == "twosv")


def test_the_framed_panel_works_with_third_party_cookies_blocked(
    context, crm, host_page, app_server
):
    from playwright.sync_api import expect

    page, frame = launch(context, host_page, signing.generic(customer_id=CUSTOMER))

    step = frame.locator("#step")
    expect(step).to_have_attribute("data-step", "ask_device_access")
    inner = app_frame(page)
    assert inner.url == f"{app_server}/panel/customers/{CUSTOMER}/"  # no token in the URL

    # The agent answers; the step changes: the header carried the session, not a cookie.
    step.get_by_role("button", name="Yes", exact=True).click()
    expect(step).to_have_attribute("data-step", "verify_phone_number")
    expect(frame.locator("#live")).to_contain_text("Answer recorded")
    session = TroubleshootingSession.objects.get(customer__customer_id=CUSTOMER)
    assert session.has_device_access is True

    step.get_by_label("Number the caller says").fill("(202) 555-0143")
    step.get_by_role("button", name="Check").click()
    expect(step).to_have_attribute("data-step", "check_ats_delivery")
    assert TroubleshootingSession.objects.count() == 1

    # Third-party cookies are blocked: the frame kept none (the app set csrftoken and would
    # have kept it as SameSite=None; Secure), and can't set one either.
    inner = app_frame(page)
    assert context.cookies([app_server]) == []
    assert (
        inner.evaluate(
            "() => { document.cookie = 'probe=1; SameSite=None; Secure'; return document.cookie; }"
        )
        == ""
    )
    assert context.cookies([app_server]) == []
    assert "panel-session" not in inner.url
    assert "token" not in inner.url
    assert PanelSession.objects.count() == 1


def test_a_replayed_or_expired_token_is_refused_in_the_frame(context, crm, host_page):
    from playwright.sync_api import expect

    token = signing.generic(customer_id=CUSTOMER)
    _page, frame = launch(context, host_page, token)
    expect(frame.locator("#step")).to_have_attribute("data-step", "ask_device_access")

    _page, frame = launch(context, host_page, token)
    expect(frame.locator("#launch-refused")).to_have_attribute("data-reason", "replayed")
    expect(frame.locator("#launch-refused")).to_contain_text("replayed")

    now = int(time.time())
    expired = signing.generic(customer_id=CUSTOMER, iat=now - 200, exp=now - 60)
    _page, frame = launch(context, host_page, expired)
    expect(frame.locator("#launch-refused")).to_have_attribute("data-reason", "expired")

    assert PanelSession.objects.count() == 1
    refused = AuditEntry.objects.filter(action="crm_assertion_refused")
    assert sorted(refused.values_list("result", flat=True)) == ["expired", "replayed"]


# A stand-in for Zendesk's ZAF SDK: init() needs origin and app_guid in the page's URL, as the
# real one does; the ticket's requester has the demo customer's id as external id.
ZAF_STAND_IN = """
window.ZAFClient = {
  init: function () {
    var query = new URLSearchParams(window.location.search);
    if (!query.get("origin") || !query.get("app_guid")) { return false; }
    return {
      invoke: function () {},
      get: function (path) {
        var answer = {};
        answer[path] = "{customer}";
        return Promise.resolve(answer);
      }
    };
  }
};
""".replace("{customer}", CUSTOMER)


def test_the_zendesk_sidebar_opens_the_requesters_panel_without_cookies(
    context, crm, host_page, app_server
):
    from playwright.sync_api import expect

    CrmIdentity.objects.create(
        issuer=signing.ZENDESK_ISSUER,
        subject="90210",
        user=CrmIdentity.objects.get().user,
    )
    context.route(
        "https://static.zdassets.com/**",
        lambda route: route.fulfill(content_type="text/javascript", body=ZAF_STAND_IN),
    )
    carried = "origin=https%3A%2F%2Facme.zendesk.com&app_guid=0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    page, frame = launch(context, host_page, signing.zendesk(), f"/panel/launch/zendesk/?{carried}")

    step = frame.locator("#step")
    expect(step).to_have_attribute("data-step", "ask_device_access")
    # The panel's address keeps Zendesk's origin and app_guid; no token in it.
    assert app_frame(page).url == f"{app_server}/panel/customers/{CUSTOMER}/?{carried}"
    step.get_by_role("button", name="No", exact=True).click()
    expect(step).to_have_attribute("data-step", "cancel_2sv_no_device_access")
    # The answer's redirect drops them; the frame's address keeps them all the same.
    assert app_frame(page).url == f"{app_server}/panel/customers/{CUSTOMER}/?{carried}"
    assert context.cookies([app_server]) == []
