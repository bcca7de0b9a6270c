"""Opening the panel from a CRM with a signed assertion; its session rides in a header (SPEC §9).

``POST /panel/launch/`` and ``/panel/launch/zendesk/`` verify the assertion and open a panel
session that travels with the page (``X-Panel-Session``), not in a cookie: these tests drive it
with Django's test client, dropping every cookie between requests as a browser blocking
third-party cookies would. The browser itself: tests/test_panel_frame_browser.py.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from crm_plugin.crm.models import CrmIdentity, PanelSession
from crm_plugin.crm.panel_sessions import PanelSessionStore
from crm_plugin.http import links
from tests import crm_signing as signing
from tests.builders import enter_panel
from twosv.models import AuditEntry, TroubleshootingSession

pytestmark = pytest.mark.django_db

FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
CUSTOMER = "demo-sms-only"
STEP = re.compile(r'data-step="([a-z0-9_]+)"')
META = re.compile(r'<meta name="panel-session" content="([^"]+)">')
ORIGIN = "https://acme.zendesk.com"
APP_GUID = "3f5e1b2a-9c1d-4e8f-a6b7-0123456789ab"
CARRIED = f"origin={ORIGIN}&app_guid={APP_GUID}".replace(":", "%3A").replace("/", "%2F")


@pytest.fixture(autouse=True)
def _crm(settings) -> None:
    signing.configure_crm(settings, CRM_PANEL_FRAME_ANCESTORS=["https://crm.example.com"])


@pytest.fixture
def linked(agent) -> CrmIdentity:
    return CrmIdentity.objects.create(issuer=signing.ISSUER, subject="crm-agent-1", user=agent)


@pytest.fixture
def zendesk_linked(agent) -> CrmIdentity:
    return CrmIdentity.objects.create(issuer=signing.ZENDESK_ISSUER, subject="90210", user=agent)


@pytest.fixture
def customer(db: None, tmp_path: Path) -> str:
    chosen = [
        c for c in json.loads(FIXTURE.read_text())["customers"] if c["customer_id"] == CUSTOMER
    ]
    fixture = tmp_path / "demo.json"
    fixture.write_text(json.dumps({"customers": chosen}))
    call_command("demo_load", "--fixture", str(fixture), stdout=StringIO())
    return CUSTOMER


class Frame:
    """The CRM's sidebar frame with third-party cookies blocked: no cookie survives a request."""

    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.token = ""

    def _send(self, method: str, url: str, data: dict[str, Any] | None = None) -> Any:
        self.client.cookies.clear()
        headers = {"HTTP_X_PANEL_SESSION": self.token} if self.token else {}
        send = self.client.post if method == "POST" else self.client.get
        response = send(url, data or {}, **headers)
        self.client.cookies.clear()
        return response

    def launch(self, token: str, url: str = "/panel/launch/") -> Any:
        response = self._send("POST", url, {"token": token})
        match = META.search(response.content.decode())
        if match:
            self.token = match.group(1)
        return response

    def get(self, url: str) -> Any:
        return self._send("GET", url)

    def post(self, url: str, data: dict[str, Any]) -> Any:
        return self._send("POST", url, data)


def step_of(response: Any) -> str:
    match = STEP.search(response.content.decode())
    assert match is not None, response.content.decode()[:500]
    return match.group(1)


def launch_audits(result: str | None = None) -> list[AuditEntry]:
    entries = AuditEntry.objects.filter(action__in=["crm_panel_launch", "crm_assertion_refused"])
    return [e for e in entries if result is None or e.result == result]


# ---------------------------------------------------------------------------------------------
# The generic launch
# ---------------------------------------------------------------------------------------------


def test_a_generic_launch_opens_the_customers_panel_with_a_session_in_the_page(
    agent, linked, customer
):
    frame = Frame()
    response = frame.launch(signing.generic(customer_id=customer))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-panel-open="/panel/customers/{customer}/"' in html
    assert "frame-session.js" in html
    # The token is in the page only: no cookie, no URL; the database keeps its hash.
    assert frame.token
    assert frame.token not in response.get("Location", "")
    assert not response.cookies.get(settings.SESSION_COOKIE_NAME)
    session = PanelSession.objects.get()
    assert session.user == agent
    assert session.issuer == signing.ISSUER
    assert frame.token not in session.token_hash
    assert session.credential.startswith("crm:")
    assert session.expires_at - session.created_at <= settings.CRM_PANEL_SESSION_TTL
    # Audited under the agent, with the issuer (crm_panel_launch).
    (entry,) = launch_audits("ok")
    assert entry.actor == agent
    assert entry.details["issuer"] == signing.ISSUER

    page = frame.get(f"/panel/customers/{customer}/")
    assert page.status_code == 200
    assert step_of(page) == "ask_device_access"
    # The next page carries the token on, for the page's script.
    assert f'<meta name="panel-session" content="{frame.token}">' in page.content.decode()


def test_the_launch_is_a_cross_site_post_framed_by_the_configured_crm_only(linked, customer):
    response = Frame().launch(signing.generic(customer_id=customer))

    assert response.status_code == 200  # no CSRF cookie or token: the signature is the proof
    csp = response["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://crm.example.com" in csp
    assert "zendesk" not in csp
    assert "X-Frame-Options" not in response
    assert "no-store" in response["Cache-Control"]
    assert Client().get("/panel/launch/").status_code == 405


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: signing.generic(key="x" * 48, customer_id=CUSTOMER), "bad_signature"),
        (lambda: signing.generic(iat=1_000, exp=1_060, customer_id=CUSTOMER), "expired"),
        (lambda: signing.generic(aud="https://else.example.com"), "audience_mismatch"),
        (lambda: "not-a-jwt", "malformed"),
        (lambda: "", "malformed"),
    ],
)
def test_a_bad_assertion_is_a_401_page_with_the_reason_and_audited(linked, customer, make, reason):
    response = Frame().launch(make())

    assert response.status_code == 401
    assert f'data-reason="{reason}"' in response.content.decode()
    assert "frame-ancestors" in response["Content-Security-Policy"]
    assert not PanelSession.objects.exists()
    assert [e.result for e in launch_audits()] == [reason]


def test_a_replayed_assertion_is_refused(linked, customer):
    token = signing.generic(customer_id=customer)
    assert Frame().launch(token).status_code == 200

    response = Frame().launch(token)
    assert response.status_code == 401
    assert 'data-reason="replayed"' in response.content.decode()
    assert PanelSession.objects.count() == 1
    assert sorted(e.result for e in launch_audits()) == ["ok", "replayed"]


def test_an_agent_who_may_not_use_the_panel_gets_a_403_page(agent, linked, customer):
    agent.groups.clear()
    response = Frame().launch(signing.generic(customer_id=customer))

    assert response.status_code == 403
    assert 'data-reason="not_a_support_agent"' in response.content.decode()
    assert not PanelSession.objects.exists()


def test_an_assertion_without_a_known_customer_opens_nothing(linked, customer):
    assert Frame().launch(signing.generic()).status_code == 400
    assert Frame().launch(signing.generic(customer_id="nobody")).status_code == 404
    assert not PanelSession.objects.exists()


# ---------------------------------------------------------------------------------------------
# Working in the panel with the header, no cookie
# ---------------------------------------------------------------------------------------------


def test_header_authenticated_actions_work_without_cookies_or_csrf_token(
    agent, linked, customer, django_capture_on_commit_callbacks
):
    frame = Frame()
    frame.launch(signing.generic(customer_id=customer))
    url = f"/panel/customers/{customer}/"

    with django_capture_on_commit_callbacks(execute=True):
        response = frame.post(f"{url}answer/", {"field": "has_device_access", "value": "yes"})
    assert response.status_code == 302
    assert response["Location"] == url
    assert not response.cookies.get(settings.SESSION_COOKIE_NAME)
    page = frame.get(url)
    # The troubleshooting session and the result message were kept with the panel session.
    assert step_of(page) == "verify_phone_number"
    assert "Answer recorded" in page.content.decode()
    session = TroubleshootingSession.objects.get(customer__customer_id=customer)
    assert session.has_device_access is True
    assert session.agent == agent
    stored = PanelSession.objects.get().data
    assert stored["twosv_panel_sessions"] == {customer: str(session.id)}

    # The next answer goes to the same troubleshooting session.
    frame.post(f"{url}answer/", {"field": "has_device_access", "value": "no"})
    assert TroubleshootingSession.objects.count() == 1


def test_a_forged_or_missing_header_opens_nothing(linked, customer):
    frame = Frame()
    frame.launch(signing.generic(customer_id=customer))
    url = f"/panel/customers/{customer}/"

    frame.token = "forged"
    assert frame.get(url).status_code == 403
    frame.token = ""
    assert frame.get(url).status_code == 403
    response = frame.post(f"{url}answer/", {"field": "has_device_access", "value": "yes"})
    assert response.status_code == 403  # no header: Django's CSRF check, and nobody signed in
    assert not TroubleshootingSession.objects.exists()


def test_the_header_wins_over_a_cookie_session_and_csrf_holds_for_cookies(agent, linked, customer):
    # An agent in the panel through a link (a cookie session), in a browser that keeps cookies.
    browser = Client(enforce_csrf_checks=True)
    enter_panel(browser, agent)
    url = f"/panel/customers/{customer}/"
    assert browser.get(url).status_code == 200
    data = {"field": "has_device_access", "value": "yes"}
    # The cookie session keeps Django's CSRF check (the link flow, issue 7).
    assert browser.post(f"{url}answer/", data).status_code == 403
    # A header that names no panel session doesn't fall back to the cookie.
    assert browser.get(url, HTTP_X_PANEL_SESSION="forged").status_code == 403
    assert browser.get(url).status_code == 200
    data["csrfmiddlewaretoken"] = browser.cookies["csrftoken"].value
    assert browser.post(f"{url}answer/", data).status_code == 302


def test_the_header_is_honoured_under_the_panel_only(agent, linked, customer):
    frame = Frame()
    frame.launch(signing.generic(customer_id=customer))
    response = frame.client.get(
        f"/api/v1/customers/{customer}/twosv/", HTTP_X_PANEL_SESSION=frame.token
    )
    assert response.status_code in (401, 403)


# ---------------------------------------------------------------------------------------------
# The end of a panel session
# ---------------------------------------------------------------------------------------------


def test_the_session_ends_after_crm_panel_session_ttl(settings, agent, linked, customer):
    settings.CRM_PANEL_SESSION_TTL = timedelta(hours=2)
    url = f"/panel/customers/{customer}/"
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        frame = Frame()
        frame.launch(signing.generic(customer_id=customer))
        traveller.shift(timedelta(hours=2) - timedelta(seconds=1))
        assert frame.get(url).status_code == 200
        traveller.shift(timedelta(seconds=1))
        response = frame.get(url)
        assert response.status_code == 403
        assert "panel session ended" in response.content.decode()
        assert not PanelSession.objects.exists()
        assert frame.get(url).status_code == 403
    refusal = AuditEntry.objects.filter(action="permission_denied", actor=agent).last()
    assert refusal is not None
    assert refusal.details["code"] == "panel_session_expired"


def _deactivate(agent: Any) -> None:
    agent.is_active = False
    agent.save()


def _leave_support_agent(agent: Any) -> None:
    agent.groups.remove(Group.objects.get(name="support_agent"))


def _become_producer(agent: Any) -> None:
    agent.groups.add(Group.objects.get_or_create(name="event_producer")[0])


def _unlink(agent: Any) -> None:
    CrmIdentity.objects.filter(user=agent).delete()


@pytest.mark.parametrize(
    ("revoke", "code"),
    [
        (_deactivate, "panel_agent_not_allowed"),
        (_leave_support_agent, "panel_agent_not_allowed"),
        (_become_producer, "panel_credential_revoked"),
        (_unlink, "panel_credential_revoked"),
    ],
)
def test_the_session_ends_at_once_when_the_agent_loses_access(
    agent, linked, customer, revoke, code
):
    frame = Frame()
    frame.launch(signing.generic(customer_id=customer))
    url = f"/panel/customers/{customer}/"
    assert frame.get(url).status_code == 200

    revoke(agent)
    response = frame.post(f"{url}answer/", {"field": "has_device_access", "value": "yes"})
    assert response.status_code == 403
    assert "panel session ended" in response.content.decode()
    assert not PanelSession.objects.exists()
    assert not TroubleshootingSession.objects.exists()
    refusal = AuditEntry.objects.filter(action="permission_denied").last()
    assert refusal is not None
    assert refusal.details["code"] == code


def test_crm_credentials_are_current_while_the_identity_link_stands(agent, linked):
    from crm_plugin.crm.identities import identity_credential

    credential = identity_credential(linked)
    assert links.credential_is_current(agent, credential)
    assert not links.credential_is_current(agent, "crm:" + "0" * 64)
    linked.delete()
    assert not links.credential_is_current(agent, credential)


def test_the_store_keeps_nothing_for_an_unknown_token():
    store = PanelSessionStore(None)
    store["x"] = 1
    store.save()
    assert store.session_key is None
    assert store.get("x") == 1


# ---------------------------------------------------------------------------------------------
# Zendesk
# ---------------------------------------------------------------------------------------------


def test_a_zendesk_launch_serves_the_bootstrap_page_carrying_origin_and_app_guid(
    agent, zendesk_linked, customer
):
    frame = Frame()
    response = frame.launch(signing.zendesk(), url=f"/panel/launch/zendesk/?{CARRIED}")

    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-origin="{ORIGIN}"' in html
    assert f'data-app-guid="{APP_GUID}"' in html
    assert "zaf_sdk.min.js" in html
    assert "zendesk/bootstrap.js" in html
    assert "frame-session.js" in html
    assert frame.token
    config = json.loads(re.search(r'id="twosv-zendesk-config"[^>]*>(.*?)</script>', html).group(1))
    assert config["open_url"] == "/panel/launch/zendesk/open/"
    assert config["fields"] == {}
    csp = response["Content-Security-Policy"]
    assert f"frame-ancestors 'self' https://crm.example.com {ORIGIN}" in csp
    assert "script-src 'self' https://static.zdassets.com" in csp
    assert PanelSession.objects.get().issuer == signing.ZENDESK_ISSUER

    # bootstrap.js posts the requester's external id under the same panel session.
    opened = frame.post(f"/panel/launch/zendesk/open/?{CARRIED}", {"customer_id": customer})
    assert opened.status_code == 302
    assert opened["Location"] == f"/panel/customers/{customer}/?{CARRIED}"
    page = frame.get(opened["Location"])
    assert page.status_code == 200
    assert step_of(page) == "ask_device_access"


def test_zendesk_params_of_another_shape_are_not_carried(zendesk_linked, customer):
    frame = Frame()
    response = frame.launch(
        signing.zendesk(), url="/panel/launch/zendesk/?origin=https://evil.example&app_guid=x%22y"
    )
    html = response.content.decode()
    assert "evil.example" not in html
    assert 'data-app-guid=""' in html
    opened = frame.post(
        "/panel/launch/zendesk/open/?origin=https://evil.example", {"customer_id": customer}
    )
    assert opened["Location"] == f"/panel/customers/{customer}/"


def test_the_zendesk_launch_takes_zendesks_token_only(zendesk_linked, linked, customer):
    response = Frame().launch(signing.generic(customer_id=customer), url="/panel/launch/zendesk/")
    assert response.status_code == 401
    response = Frame().launch(signing.zendesk(), url="/panel/launch/")
    assert response.status_code == 401


def test_the_zendesk_open_needs_a_panel_session_and_a_known_customer(zendesk_linked, customer):
    url = "/panel/launch/zendesk/open/"
    assert Frame().post(url, {"customer_id": customer}).status_code == 403
    frame = Frame()
    frame.launch(signing.zendesk(), url="/panel/launch/zendesk/")
    assert frame.post(url, {"customer_id": "nobody"}).status_code == 404
    assert frame.post(url, {"customer_id": "bad id!"}).status_code == 404
    assert frame.get(url).status_code == 405


def test_launches_are_throttled_per_client_address_like_the_token_exchange(
    linked, customer, monkeypatch
):
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**ScopedRateThrottle.THROTTLE_RATES, "crm_token": "2/min"}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)

    responses = [Frame().launch(signing.generic(customer_id=customer)) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert int(responses[2]["Retry-After"]) > 0
    assert PanelSession.objects.count() == 2
