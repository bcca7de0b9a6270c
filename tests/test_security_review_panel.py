"""Issue 16, the panel's findings (5, 6, 7, 13, 15): one test each, named after the finding.

How the panel is entered now: the API's link is ``/panel/enter/#token=...``; the browser never
sends the fragment, the entry page's script posts the token with the page's CSRF token, and the
POST starts a panel session of its own (crm_plugin/panel/identity.py) beside any Django login. It
lasts at most CRM_PANEL_SESSION_TTL (8 h) and ends when the agent loses access; every panel
action counts against the API's throttle for the same work; no GET writes anything but audit rows.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle

from tests import factories
from tests.builders import T0, token_client
from twosv.models import AuditEntry, DeliveryLookup, SpentNonce, TroubleshootingSession

pytestmark = pytest.mark.django_db

CUSTOMER = "crm-16"
PHONE = "+14155550123"
LINKS = "/api/v1/panel-links/"
ENTER = "/panel/enter/"


@pytest.fixture
def customer(db: None) -> str:
    customer = factories.CustomerFactory(customer_id=CUSTOMER, display_name="Grace Hopper")
    factories.MethodFactory(customer=customer, method_id="m-sms", phone_number=PHONE)
    return CUSTOMER


def panel_url(action: str = "", customer_id: str = CUSTOMER) -> str:
    return f"/panel/customers/{customer_id}/{action}"


def new_link(api: Any, customer_id: str = CUSTOMER) -> str:
    response = api.post(LINKS, {"customer_id": customer_id}, format="json")
    assert response.status_code == 201, response.content
    url: str = response.json()["url"]
    return url


def token_of(url: str) -> str:
    """Return a link's token, wherever the link carries it (fragment now, query before)."""
    parts = urlsplit(url)
    return (parse_qs(parts.fragment) or parse_qs(parts.query))["token"][0]


def enter(browser: Client, url: str) -> Any:
    """Enter the panel with a link as its entry page does: POST the token."""
    response = browser.post(ENTER, {"token": token_of(url)})
    if response.status_code == 405:
        # Before issue 16 the link was entered by a GET: kept so that, on that code, each test
        # here fails on what its finding is about rather than on the way in.
        response = browser.get(url)
    assert response.status_code == 302, response.content[:300]
    return response


def entered_browser(api: Any, customer_id: str = CUSTOMER) -> Client:
    browser = Client()
    enter(browser, new_link(api, customer_id))
    return browser


# ---------------------------------------------------------------------------------------------
# Finding 5: login CSRF, and an admin's session flushed
# ---------------------------------------------------------------------------------------------


def test_finding_05_panel_is_entered_by_post_and_keeps_an_admin_session(
    agent_client, agent, root, customer
):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(root)  # an admin is signed in to this browser
    token = token_of(new_link(agent_client))

    # A GET of the link, in either form, shows the entry page: it signs nobody in, spends
    # nothing and leaves the admin as they were.
    for response in (browser.get(ENTER, {"token": token}), browser.get(ENTER)):
        assert response.status_code == 200
        assert 'data-enter="auto"' in response.content.decode()
    assert not SpentNonce.objects.exists()
    assert browser.get(panel_url()).status_code == 403
    assert browser.get("/admin/").wsgi_request.user == root

    # A form posted from another site has no CSRF token of the entry page: refused.
    assert browser.post(ENTER, {"token": token}).status_code == 403
    assert not SpentNonce.objects.exists()

    # The entry page's form posts it with its CSRF token: the agent is in the panel, the admin
    # still in the admin, in the same browser.
    csrf = browser.cookies["csrftoken"].value
    entered = browser.post(ENTER, {"token": token, "csrfmiddlewaretoken": csrf})
    assert (entered.status_code, entered["Location"]) == (302, panel_url())
    page = browser.get(panel_url())
    assert page.status_code == 200
    assert page.wsgi_request.user == agent
    assert "Grace Hopper" in page.content.decode()
    admin = browser.get("/admin/")
    assert admin.status_code == 200
    assert admin.wsgi_request.user == root

    # Another agent's link doesn't replace the agent silently: the page asks first.
    other = factories.UserFactory(username="agent-b", groups=["support_agent"])
    other_token = token_of(new_link(token_client(other)))
    csrf = browser.cookies["csrftoken"].value
    asked = browser.post(ENTER, {"token": other_token, "csrfmiddlewaretoken": csrf})
    assert asked.status_code == 200
    assert "Switch agent?" in asked.content.decode()
    assert SpentNonce.objects.count() == 1  # the other link is not spent yet
    assert browser.get(panel_url()).wsgi_request.user == agent
    confirmed = browser.post(
        ENTER, {"token": other_token, "switch": "1", "csrfmiddlewaretoken": csrf}
    )
    assert confirmed.status_code == 302
    assert browser.get(panel_url()).wsgi_request.user == other
    assert browser.get("/admin/").wsgi_request.user == root


# ---------------------------------------------------------------------------------------------
# Finding 6: a 5-minute link made a 14-day session that outlived the agent's access
# ---------------------------------------------------------------------------------------------


def _end_the_access(ending: str, agent: Any, time_machine: Any) -> None:
    if ending.startswith("8h"):
        time_machine.shift(timedelta(hours=7, minutes=59))
        return
    if ending == "inactive":
        agent.is_active = False
        agent.save()
    elif ending == "removed_from_support_agent":
        agent.groups.clear()
    elif ending == "token_revoked":
        Token.objects.filter(user=agent).delete()
    elif ending == "token_rotated":
        Token.objects.filter(user=agent).delete()
        Token.objects.create(user=agent)


@pytest.mark.parametrize(
    "ending",
    [
        "8h",
        "8h_beside_an_admin",
        "inactive",
        "removed_from_support_agent",
        "token_revoked",
        "token_rotated",
    ],
)
def test_finding_06_panel_session_ends_after_8_hours_or_when_access_ends(
    agent_client, agent, root, customer, ending, time_machine
):
    assert timedelta(hours=8) == settings.CRM_PANEL_SESSION_TTL
    time_machine.move_to(T0, tick=False)
    browser = Client()
    if ending == "8h_beside_an_admin":
        browser.force_login(root)  # the session itself lasts as long as the admin's
    enter(browser, new_link(agent_client))
    assert browser.get(panel_url()).status_code == 200

    _end_the_access(ending, agent, time_machine)
    if ending.startswith("8h"):
        assert browser.get(panel_url()).status_code == 200  # 7 h 59 min: still in
        time_machine.shift(timedelta(minutes=1))

    page = browser.get(panel_url())
    assert page.status_code == 403
    assert "from the customer's page in the CRM" in page.content.decode()
    answer = {"field": "has_device_access", "value": "yes"}
    assert browser.post(panel_url("answer/"), answer).status_code == 403
    assert not TroubleshootingSession.objects.exists()
    # It stays ended, even once the access is back.
    agent.is_active = True
    agent.save()
    agent.groups.add(Group.objects.get(name="support_agent"))
    assert browser.get(panel_url()).status_code == 403
    if ending == "8h_beside_an_admin":
        assert browser.get("/admin/").wsgi_request.user == root


# ---------------------------------------------------------------------------------------------
# Finding 7: the panel skipped every agent throttle
# ---------------------------------------------------------------------------------------------


def test_finding_07_panel_actions_share_the_api_throttles(
    agent_client, agent, customer, monkeypatch
):
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {
            **ScopedRateThrottle.THROTTLE_RATES,
            "agent_read": "100/min",
            "lookup_request": "3/min",
            "verify_phone": "2/min",
            "session_start": "2/min",
        },
    )
    browser = entered_browser(agent_client)
    lookups = f"/api/v1/customers/{CUSTOMER}/twosv/delivery-lookups/"

    # Lookups: two through the API, the third through the panel, then neither may ask again.
    for _ in range(2):
        assert agent_client.post(lookups, {"force": True}, format="json").status_code in (200, 202)
    assert browser.post(panel_url("lookup/"), {"force": "on"}).status_code == 302
    refused = browser.post(panel_url("lookup/"), {"force": "on"})
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "Too many requests" in refused.content.decode()
    assert agent_client.post(lookups, {"force": True}, format="json").status_code == 429
    assert DeliveryLookup.objects.count() <= 3

    # Phone checks: two in the panel use the agent's rate; the API's next one is refused.
    for number in ("+14155550100", "+14155550101"):
        assert browser.post(panel_url("verify-phone/"), {"phone_number": number}).status_code == 302
    started = agent_client.post(f"/api/v1/customers/{CUSTOMER}/twosv/sessions/", {}, format="json")
    assert started.status_code == 201  # the second session start (the panel made the first)
    check = f"/api/v1/twosv/sessions/{started.json()['id']}/verify-phone/"
    assert agent_client.post(check, {"phone_number": PHONE}, format="json").status_code == 429
    assert browser.post(panel_url("verify-phone/"), {"phone_number": PHONE}).status_code == 429

    # Session starts: the panel's first action on another customer would be the third.
    factories.CustomerFactory(customer_id="crm-16-b")
    answer = {"field": "has_device_access", "value": "yes"}
    response = browser.post(panel_url("answer/", "crm-16-b"), answer)
    assert response.status_code == 429
    assert not TroubleshootingSession.objects.filter(customer__customer_id="crm-16-b").exists()

    # Counted per agent: another agent is not held back by this one.
    other = factories.UserFactory(username="agent-b", groups=["support_agent"])
    assert entered_browser(token_client(other)).get(panel_url()).status_code == 200


# ---------------------------------------------------------------------------------------------
# Finding 13: with SameSite=None a cross-site GET started a session in the agent's name
# ---------------------------------------------------------------------------------------------


def _everything_but_audit() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (Django's sessions included) except the audit trail's."""
    return {
        model._meta.label: sorted(map(repr, model.objects.values()))
        for model in apps.get_models()
        if model is not AuditEntry
    }


def test_finding_13_no_panel_get_writes_anything_but_audit_rows(agent_client, agent, customer):
    factories.CustomerFactory(customer_id="crm-16-b")
    browser = entered_browser(agent_client)
    browser.get(panel_url())
    before = _everything_but_audit()
    audited = AuditEntry.objects.count()

    # Every panel URL by GET, as a page on another site can make the agent's browser send.
    responses = [browser.get(url) for url in (panel_url(), panel_url("", "crm-16-b"))]
    responses.append(browser.get(panel_url("lookup/status/")))
    responses.append(browser.get(ENTER))
    responses.append(browser.get(panel_url("methods/m-sms/timeline/")))
    for action in (
        "answer/",
        "answers/reset/",
        "method/",
        "verify-phone/",
        "lookup/",
        "close/",
        "new-session/",
    ):
        assert browser.get(panel_url(action)).status_code == 405

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200]
    assert _everything_but_audit() == before
    assert not TroubleshootingSession.objects.exists()
    assert AuditEntry.objects.count() > audited  # the reads are audited, as every read is
    # The page asks for every action by POST, its script only reads (the lookup's status).
    html = responses[0].content.decode()
    assert html.count("<form ") == html.count('<form method="post"') > 0
    script = Path(settings.BASE_DIR, "crm_plugin/static/panel/panel.js").read_text()
    assert "data-poll-url" in script
    assert "method:" not in script

    # Starting a troubleshooting session is a POST: the agent's first answer.
    answer = {"field": "has_device_access", "value": "yes"}
    assert browser.post(panel_url("answer/"), answer).status_code == 302
    session = TroubleshootingSession.objects.get()
    assert (session.agent, session.has_device_access) == (agent, True)


# ---------------------------------------------------------------------------------------------
# Finding 15: the link's token travelled in the query string, which proxies log
# ---------------------------------------------------------------------------------------------


def test_finding_15_link_token_never_reaches_the_server_in_a_query_string(
    agent_client, agent, customer
):
    url = new_link(agent_client)
    parts = urlsplit(url)

    # The token is in the fragment, which a browser keeps to itself: the request for the
    # link is the bare path.
    assert (parts.path, parts.query) == (ENTER, "")
    token = parse_qs(parts.fragment)["token"][0]
    browser = Client()
    page = browser.get(parts.path)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-enter="auto"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "/static/panel/panel.js" in html
    # Its script moves the fragment's token into the form, clears the address bar and history,
    # and posts the form (CSP: no inline script, so the script is the panel's own file).
    script = Path(settings.BASE_DIR, "crm_plugin/static/panel/panel.js").read_text()
    assert "window.location.hash" in script
    assert "history.replaceState" in script
    assert "form.submit()" in script
    assert token not in html

    # The token arrives in the POST's body and opens the panel.
    entered = browser.post(ENTER, {"token": token})
    assert (entered.status_code, entered["Location"]) == (302, panel_url())
    assert browser.get(panel_url()).wsgi_request.user == agent

    # A link in the older ?token= form still opens: its GET gets the same page (nothing spent,
    # nobody signed in), the POST enters.
    old = Client()
    old_token = token_of(new_link(agent_client))
    page = old.get(ENTER, {"token": old_token})
    assert page.status_code == 200
    assert 'data-enter="auto"' in page.content.decode()
    assert old.get(panel_url()).status_code == 403
    assert SpentNonce.objects.count() == 1
    assert old.post(ENTER, {"token": old_token}).status_code == 302
    assert old.get(panel_url()).status_code == 200
