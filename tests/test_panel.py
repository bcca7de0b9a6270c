"""The CRM sidebar panel (issue 9): signed entry links, framing policy, and the page itself.

The page is driven with Django's test client over the demo data of `manage.py demo_load`; the
suite-wide fixture in conftest.py fails any test whose responses carry a full phone number.
Links are entered by POSTing their token (the entry page's script does it in a browser; issue 16,
tests/test_security_review_panel.py); `builders.enter_panel` is the panel's `force_login`.
"""

import json
import re
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.conf import settings
from django.core import signing
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from crm_plugin.http.links import PANEL_LINK_SALT
from tests import factories
from tests.builders import enter_panel
from twosv.models import AuditEntry, DeliveryLookup, TroubleshootingSession

pytestmark = pytest.mark.django_db

FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
DEMO_CUSTOMERS = json.loads(FIXTURE.read_text())["customers"]
LINKS = "/api/v1/panel-links/"
STEP = re.compile(r'data-step="([a-z0-9_]+)"')


def panel_url(customer_id: str, action: str = "") -> str:
    return f"/panel/customers/{customer_id}/{action}"


def link_token(url: str) -> str:
    """Return the token of a panel link: in its fragment (``#token=``), never its query."""
    return parse_qs(urlsplit(url).fragment)["token"][0]


def open_link(browser: Client, url: str) -> Any:
    """Open a panel link as the entry page does: GET the page, then POST the link's token."""
    page = browser.get(urlsplit(url).path)
    assert page.status_code == 200
    return browser.post("/panel/enter/", {"token": link_token(url)})


def step_of(response: Any) -> str:
    match = STEP.search(response.content.decode())
    assert match is not None, response.content.decode()[:500]
    return match.group(1)


def first_step(customer: dict[str, Any]) -> str:
    """Return the step the demo data says the panel opens on (ask_device_access by default)."""
    walkthrough = customer.get("walkthrough", [])
    if walkthrough and walkthrough[0]["do"].startswith("open the panel"):
        return str(walkthrough[0]["step"])
    return "ask_device_access"


@pytest.fixture
def load_demo(db: None, tmp_path: Path) -> Any:
    """Load some of the demo customers with `manage.py demo_load --fixture`.

    Only those a test uses: the whole demo takes seconds (hundreds of resend events).
    """

    def load(*customer_ids: str) -> None:
        chosen = [c for c in DEMO_CUSTOMERS if c["customer_id"] in customer_ids]
        assert len(chosen) == len(customer_ids), f"not in the demo data: {customer_ids}"
        fixture = tmp_path / "demo.json"
        fixture.write_text(json.dumps({"customers": chosen}))
        call_command("demo_load", "--fixture", str(fixture), stdout=StringIO())

    return load


class PanelDriver:
    """An agent's browser on the panel: GET pages, POST forms and follow back to the page."""

    def __init__(self, client: Client, capture_on_commit: Any) -> None:
        self.client = client
        self._capture_on_commit = capture_on_commit

    def get(self, customer_id: str, action: str = "") -> Any:
        return self.client.get(panel_url(customer_id, action))

    def html(self, customer_id: str) -> str:
        response = self.get(customer_id)
        assert response.status_code == 200
        return str(response.content.decode())

    def post(self, customer_id: str, action: str, data: dict[str, Any]) -> Any:
        """POST (its on-commit tasks run, as after a real commit) and follow to the page."""
        with self._capture_on_commit(execute=True):
            response = self.client.post(panel_url(customer_id, action), data)
        assert response.status_code == 302, response.content[:300]
        # Back to the page's top, where the live region says the result (issue 17).
        assert response["Location"] == panel_url(customer_id)
        page = self.get(customer_id)
        assert page.status_code == 200
        return page

    def answer(self, customer_id: str, field: str, value: str) -> Any:
        return self.post(customer_id, "answer/", {"field": field, "value": value})


@pytest.fixture
def panel(client: Client, agent: Any, django_capture_on_commit_callbacks: Any) -> PanelDriver:
    """A browser session signed in to the panel as the agent, as a panel link leaves it."""
    enter_panel(client, agent)
    return PanelDriver(client, django_capture_on_commit_callbacks)


def link_for(agent_client: Any, customer_id: str) -> dict[str, Any]:
    response = agent_client.post(LINKS, {"customer_id": customer_id}, format="json")
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------------------------------------
# Entry from the CRM: signed links
# ---------------------------------------------------------------------------------------------


def test_a_panel_link_signs_the_agent_in_and_opens_the_customer(agent_client, agent):
    customer = factories.CustomerFactory(customer_id="crm-42", display_name="Ada Lovelace")
    factories.MethodFactory(customer=customer)

    body = link_for(agent_client, "crm-42")

    parts = urlsplit(body["url"])
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "testserver", "/panel/enter/")
    assert parts.query == ""
    assert set(parse_qs(parts.fragment)) == {"token"}
    expires_at = parse_datetime(body["expires_at"])
    assert expires_at is not None
    assert abs(expires_at - (timezone.now() + timedelta(minutes=5))) < timedelta(seconds=5)

    browser = Client()
    response = open_link(browser, body["url"])
    assert response.status_code == 302
    assert response["Location"] == "/panel/customers/crm-42/"
    page = browser.get(response["Location"])
    assert page.status_code == 200
    assert page.wsgi_request.user == agent
    assert "Ada Lovelace" in page.content.decode()
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"panel_link_create", "panel_link_open", "state_read"} <= actions
    # The troubleshooting session starts with the agent's first answer, a POST.
    assert "session_start" not in actions
    browser.post(panel_url("crm-42", "answer/"), {"field": "has_device_access", "value": "yes"})
    assert AuditEntry.objects.filter(action="session_start", actor=agent).count() == 1


def test_the_link_names_the_agent_and_the_customer_under_its_own_salt(agent_client, agent):
    factories.CustomerFactory(customer_id="crm-42")
    token = link_token(link_for(agent_client, "crm-42")["url"])

    payload = signing.loads(token, salt=PANEL_LINK_SALT, max_age=300)

    assert (payload["u"], payload["c"]) == (agent.pk, "crm-42")
    with pytest.raises(signing.BadSignature):
        signing.loads(token)  # the default salt: a token signed for anything else won't do


def test_a_link_expires_after_five_minutes(agent_client):
    factories.CustomerFactory(customer_id="crm-42")
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        late = link_for(agent_client, "crm-42")["url"]
        in_time = link_for(agent_client, "crm-42")["url"]
        traveller.shift(timedelta(minutes=4, seconds=59))
        assert open_link(Client(), in_time).status_code == 302
        traveller.shift(timedelta(seconds=2))

        browser = Client()
        response = open_link(browser, late)

    assert response.status_code == 403
    assert "expired" in response.content.decode()
    assert browser.get(panel_url("crm-42")).status_code == 403  # nobody signed in
    refused = AuditEntry.objects.get(action="panel_link_open", result="expired")
    assert refused.customer_ref == "crm-42"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"), id="signature"),
        pytest.param(lambda token: "x" + token, id="payload"),
        pytest.param(lambda token: "", id="empty"),
        pytest.param(
            lambda token: signing.dumps({"u": 1, "c": "crm-42", "n": "n"}), id="other-salt"
        ),
        pytest.param(
            lambda token: signing.dumps({"u": 1, "c": "crm-42"}, salt=PANEL_LINK_SALT),
            id="other-shape",
        ),
    ],
)
def test_a_tampered_link_is_refused(agent_client, tamper):
    factories.CustomerFactory(customer_id="crm-42")
    token = link_token(link_for(agent_client, "crm-42")["url"])

    browser = Client()
    response = browser.post("/panel/enter/", {"token": tamper(token)})

    assert response.status_code == 403
    assert browser.get(panel_url("crm-42")).status_code == 403
    assert AuditEntry.objects.filter(action="panel_link_open", result="bad_signature").exists()


def test_a_link_opens_once(agent_client):
    factories.CustomerFactory(customer_id="crm-42")
    url = link_for(agent_client, "crm-42")["url"]

    assert open_link(Client(), url).status_code == 302
    assert open_link(Client(), url).status_code == 403


def test_only_support_agents_get_links(producer_client, staff_client):
    factories.CustomerFactory(customer_id="crm-42")

    for client in (producer_client, staff_client):
        response = client.post(LINKS, {"customer_id": "crm-42"}, format="json")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"


def test_a_link_needs_a_token_and_a_known_customer(agent_client):
    assert Client().post(LINKS, {"customer_id": "crm-42"}).status_code == 401
    response = agent_client.post(LINKS, {"customer_id": "nobody"}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_customer"
    response = agent_client.post(LINKS, {"customer_id": "crm-42", "x": 1}, format="json")
    assert response.status_code == 400


def test_an_agent_who_lost_the_role_cant_open_their_link(agent_client, agent):
    factories.CustomerFactory(customer_id="crm-42")
    url = link_for(agent_client, "crm-42")["url"]
    agent.groups.clear()

    assert open_link(Client(), url).status_code == 403
    assert AuditEntry.objects.filter(action="panel_link_open", result="not_an_agent").exists()


def test_the_panel_is_for_support_agents_only(client, producer, staff):
    factories.CustomerFactory(customer_id="crm-42")

    assert client.get(panel_url("crm-42")).status_code == 403  # nobody signed in
    for user in (producer, staff):
        client.force_login(user)
        assert client.get(panel_url("crm-42")).status_code == 403
        response = client.post(panel_url("crm-42", "answer/"), {"field": "has_device_access"})
        assert response.status_code == 403
    assert not TroubleshootingSession.objects.exists()
    assert AuditEntry.objects.filter(action="permission_denied", customer_ref="crm-42").count() == 4


def test_an_unknown_customer_is_a_404_page(panel):
    response = panel.get("nobody")
    assert response.status_code == 404
    assert "Unknown customer" in response.content.decode()


# ---------------------------------------------------------------------------------------------
# Framing: CSP frame-ancestors on the panel, X-Frame-Options everywhere else
# ---------------------------------------------------------------------------------------------


def test_the_panel_may_be_framed_by_the_configured_crm_only(panel, settings, agent_client):
    settings.CRM_PANEL_FRAME_ANCESTORS = ["https://crm.example.com", "https://*.crm.example.net"]
    factories.CustomerFactory(customer_id="crm-42")

    for response in (
        panel.get("crm-42"),
        panel.get("nobody"),
        Client().get(panel_url("crm-42")),
        Client().get("/panel/enter/", {"token": "forged"}),
        Client().post("/panel/enter/", {"token": "forged"}),
    ):
        policy = response["Content-Security-Policy"]
        directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
        assert directives["frame-ancestors"] == [
            "'self'",
            "https://crm.example.com",
            "https://*.crm.example.net",
        ]
        assert directives["default-src"] == ["'self'"]
        assert "X-Frame-Options" not in response
        assert "no-store" in response["Cache-Control"]

    api = agent_client.get("/api/v1/customers/crm-42/twosv/")
    assert api["X-Frame-Options"] == "DENY"


def test_by_default_only_the_site_itself_may_frame_the_panel(panel):
    factories.CustomerFactory(customer_id="crm-42")
    policy = panel.get("crm-42")["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in policy.split("; ")


# ---------------------------------------------------------------------------------------------
# The page on the demo data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("customer", DEMO_CUSTOMERS, ids=[c["customer_id"] for c in DEMO_CUSTOMERS])
def test_the_panel_renders_every_demo_situation(load_demo, panel, customer):
    load_demo(customer["customer_id"])

    response = panel.get(customer["customer_id"])

    assert response.status_code == 200
    html = response.content.decode()
    assert step_of(response) == first_step(customer)
    assert "<script>" not in html
    assert " style=" not in html
    reads = AuditEntry.objects.filter(action="state_read", customer_ref=customer["customer_id"])
    assert reads.count() == 1


def test_a_locked_method_shows_its_countdown_and_resend_count(load_demo, panel):
    load_demo("demo-locked")
    html = panel.html("demo-locked")

    seconds = [int(s) for s in re.findall(r'data-countdown="(\d+)"', html)]
    assert len(seconds) == 2  # the step's and the method's
    assert all(17 * 3600 < s < 24 * 3600 for s in seconds)
    # A locked method counts the requests it blocked, not resends toward a lock it has.
    assert "Blocked while locked: <strong>" in html
    assert "/200</strong>" not in html
    assert "Locked" in html


def test_a_hidden_backup_is_marked_and_explained(load_demo, panel):
    load_demo("demo-hidden-backup")
    html = panel.html("demo-hidden-backup")

    assert html.count("hidden in CRM") == 1
    assert "advisory-backup_hidden" in html
    assert "No code?" in html


def test_advisories_show_beside_the_step(load_demo, panel):
    load_demo("demo-approaching", "demo-india")

    assert "advisory-approaching_lock" in panel.html("demo-approaching")
    india = panel.html("demo-india")
    assert "advisory-regional_provider" in india
    assert "Twilio" in india
    assert "+91 ••••••••10" in india  # masked: country code and the last two digits


def test_yes_and_no_walk_the_article_general_steps(load_demo, panel):
    customer = "demo-sms-only"
    load_demo(customer)
    assert step_of(panel.get(customer)) == "ask_device_access"

    page = panel.answer(customer, "has_device_access", "yes")
    assert step_of(page) == "verify_phone_number"

    page = panel.post(customer, "verify-phone/", {"phone_number": "(202) 555-0143"})
    assert "Match: the number is the one on file." in page.content.decode()
    assert step_of(page) == "check_ats_delivery"

    page = panel.post(customer, "lookup/", {})
    assert step_of(page) == "problem_lies_elsewhere"
    assert "Delivered" in page.content.decode()

    page = panel.post(
        customer, "close/", {"outcome": "resolved", "helpful": "yes", "comment": "ok"}
    )
    assert "Session closed" in page.content.decode()
    session = TroubleshootingSession.objects.get(customer__customer_id=customer)
    assert (session.outcome, session.helpful, session.final_step_code) == (
        "resolved",
        True,
        "problem_lies_elsewhere",
    )
    assert session.has_device_access is True
    assert session.phone_number_matches is True


def test_no_device_leads_to_the_cancel_flow_and_the_answers_can_be_cleared(load_demo, panel):
    load_demo("demo-sms-only")
    page = panel.answer("demo-sms-only", "has_device_access", "no")
    assert step_of(page) == "cancel_2sv_no_device_access"
    assert settings.TWOSV_CANCEL_2SV_URL in page.content.decode()

    page = panel.post("demo-sms-only", "answers/reset/", {})
    assert step_of(page) == "ask_device_access"


def test_a_hidden_backup_is_offered_when_the_device_is_lost(load_demo, panel):
    load_demo("demo-hidden-backup")
    page = panel.answer("demo-hidden-backup", "has_device_access", "no")
    assert step_of(page) == "ask_backup_device_access"
    page = panel.answer("demo-hidden-backup", "has_backup_device_access", "yes")
    assert step_of(page) == "use_backup_method"


def test_a_changed_number_shows_no_match_asks_again_and_never_the_number(load_demo, panel):
    load_demo("demo-changed-number")
    panel.answer("demo-changed-number", "has_device_access", "yes")

    # The caller gives the number they had before the change.
    page = panel.post("demo-changed-number", "verify-phone/", {"phone_number": "+1 212-555-0142"})

    html = page.content.decode()
    assert "No match: the number isn&#x27;t the one on file." in html
    for shown in ("2135550111", "213-555-0111", "2125550142", "212-555-0142"):
        assert shown not in html
    # One miss may be a misread digit (R6a): check again, and ask whether the number changed.
    assert step_of(page) == "recheck_phone_number"
    assert 'name="phone_number"' in html
    assert 'value="phone_number_changed"' in html
    # The change two days ago is said: an advisory above the step, and on the method's line.
    assert "advisory-number_recently_changed" in html
    assert html.index("advisory-number_recently_changed") < html.index('id="step"')
    assert 'class="number-changed"' in html

    page = panel.answer("demo-changed-number", "phone_number_changed", "yes")
    assert step_of(page) == "cancel_2sv_no_device_access"
    assert 'title="Rule of the next-step table">R6<' in page.content.decode()


def test_phone_checks_are_limited_per_session(load_demo, panel):
    load_demo("demo-sms-only")
    panel.answer("demo-sms-only", "has_device_access", "yes")
    for tries_left in (4, 3):
        page = panel.post("demo-sms-only", "verify-phone/", {"phone_number": "not a number"})
        assert "Not a phone number" in page.content.decode()
        assert f"({tries_left} tries left)" in page.content.decode()
    for _ in range(3):
        page = panel.post("demo-sms-only", "verify-phone/", {"phone_number": "+12025550100"})
    page = panel.post("demo-sms-only", "verify-phone/", {"phone_number": "+12025550143"})
    html = page.content.decode()
    assert "no more tries" in html
    assert step_of(page) == "cancel_2sv_no_device_access"  # two misses in a row: R6
    # No form with no try left: the page says why and what's next.
    assert 'name="phone_number"' not in html
    assert "No number checks left" in html
    assert "Cancel two-step verification" in html


def test_a_locked_primary_with_a_backup_asks_about_the_backup_device(load_demo, panel):
    load_demo("demo-locked-backup")
    assert step_of(panel.get("demo-locked-backup")) == "ask_backup_device_access"
    page = panel.answer("demo-locked-backup", "has_backup_device_access", "no")
    assert step_of(page) == "wait_for_lock_expiry"

    page = panel.post("demo-locked-backup", "method/", {"method_id": "demo-locked-backup-app"})
    assert step_of(page) == "ask_device_access"


def test_a_pending_lookup_is_polled_through_the_status_fragment(load_demo, panel):
    load_demo("demo-lookup-pending", "demo-lookup-failed")
    # Just published (fresh), whatever age the demo gives it.
    DeliveryLookup.objects.filter(status="pending").update(
        created_at=timezone.now(), enqueued_at=timezone.now()
    )
    html = panel.html("demo-lookup-pending")
    assert 'data-poll-url="/panel/customers/demo-lookup-pending/lookup/status/"' in html

    fragment = panel.get("demo-lookup-pending", "lookup/status/")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="lookup-status"')
    assert 'data-status="pending"' in html
    assert "data-poll-url" in html

    finished = panel.get("demo-lookup-failed", "lookup/status/").content.decode()
    assert 'data-finished="1"' in finished
    assert "data-poll-url" not in finished


def test_one_session_per_customer_and_agent_until_closed(load_demo, panel):
    load_demo("demo-sms-only", "demo-india")
    panel.get("demo-sms-only")
    assert not TroubleshootingSession.objects.exists()  # a GET starts none
    panel.answer("demo-sms-only", "has_device_access", "yes")
    panel.answer("demo-sms-only", "has_device_access", "yes")
    panel.answer("demo-india", "has_device_access", "yes")
    assert TroubleshootingSession.objects.count() == 2

    other = Client()
    enter_panel(other, factories.UserFactory(username="agent2", groups=["support_agent"]))
    other.post(panel_url("demo-sms-only", "answer/"), {"field": "has_device_access", "value": "no"})
    assert TroubleshootingSession.objects.count() == 3

    panel.post("demo-sms-only", "close/", {"outcome": "escalated", "helpful": "no"})
    page = panel.answer("demo-sms-only", "has_device_access", "yes")
    assert "This session is closed." in page.content.decode()
    page = panel.post("demo-sms-only", "new-session/", {})
    assert "Session closed" not in page.content.decode()
    panel.answer("demo-sms-only", "has_device_access", "yes")
    assert TroubleshootingSession.objects.filter(closed_at__isnull=True).count() == 3


def test_posts_need_the_csrf_token(load_demo, agent):
    load_demo("demo-sms-only")
    browser = Client(enforce_csrf_checks=True)
    enter_panel(browser, agent)
    browser.get(panel_url("demo-sms-only"))
    data = {"field": "has_device_access", "value": "yes"}

    assert browser.post(panel_url("demo-sms-only", "answer/"), data).status_code == 403

    data["csrfmiddlewaretoken"] = browser.cookies["csrftoken"].value
    assert browser.post(panel_url("demo-sms-only", "answer/"), data).status_code == 302


def test_bad_form_input_changes_nothing(load_demo, panel):
    load_demo("demo-sms-only")
    panel.answer("demo-sms-only", "has_device_access", "yes")
    panel.post("demo-sms-only", "answers/reset/", {})
    for action, data in [
        ("answer/", {"field": "has_device_access", "value": "maybe"}),
        ("answer/", {"field": "phone_number_matches", "value": "yes"}),
        ("close/", {"outcome": "solved", "helpful": "yes"}),
        ("close/", {"outcome": "resolved"}),  # "helpful" can't be skipped silently
        ("method/", {"method_id": "no-such-method"}),
    ]:
        page = panel.post("demo-sms-only", action, data)
        assert "flash-error" in page.content.decode()
    session = TroubleshootingSession.objects.get()
    assert session.has_device_access is None
    assert session.closed_at is None
    assert panel.get("demo-sms-only", "answer/").status_code == 405


# ---------------------------------------------------------------------------------------------
# The live call (issue 17): results, advisories, the close question, times, "Ask again"
# ---------------------------------------------------------------------------------------------


def test_each_action_says_its_result_in_the_live_region(load_demo, panel):
    load_demo("demo-sms-only")
    live = re.compile(r'<div id="live"[^>]*aria-live="polite"[^>]*>(.*?)</div>', re.S)

    def said(page: Any) -> str:
        match = live.search(page.content.decode())
        assert match is not None
        return match.group(1)

    page = panel.answer("demo-sms-only", "has_device_access", "yes")
    assert "Answer recorded: has the device: Yes. Next step: Verify the phone number." in said(page)
    page = panel.post("demo-sms-only", "verify-phone/", {"phone_number": "+1 202 555 0134"})
    assert "No match" in said(page)
    assert "Next step: Check the number again." in said(page)
    page = panel.post("demo-sms-only", "verify-phone/", {"phone_number": "+1 202 555 0143"})
    assert "Match: the number is the one on file." in said(page)
    page = panel.post("demo-sms-only", "lookup/", {})
    # The test client runs the task after the response ("Asked ATS"); a server, before it
    # ("ATS answered: Delivered.", tests/test_panel_live_call.py).
    assert re.search(r"Asked ATS|ATS answered: Delivered\.", said(page))
    page = panel.post("demo-sms-only", "close/", {"outcome": "resolved", "helpful": "yes"})
    assert "Session closed: Yes, solved." in said(page)


def test_warnings_come_first_above_the_step_and_hints_after(load_demo, panel):
    load_demo("demo-approaching", "demo-locked-backup")
    html = panel.html("demo-approaching")
    assert html.index('data-severity="warning"') < html.index('id="step"')
    assert html.index('id="step"') < html.index("advisory-carrier_hint")
    assert 'class="nowrap">+1 480-360-5516</span>' in html

    # Troubleshooting the backup: the primary's lock is a warning above the step.
    page = panel.post("demo-locked-backup", "method/", {"method_id": "demo-locked-backup-app"})
    html = page.content.decode()
    lock = html.index('data-lock-of="demo-locked-backup-sms"')
    assert lock < html.index('id="step"')
    assert "advisory-carrier_hint" not in html  # a locked method gets no code: no carrier hint


def test_the_close_form_asks_one_plain_question_and_requires_the_feedback(load_demo, panel):
    load_demo("demo-sms-only")
    html = panel.html("demo-sms-only")
    assert 'Did this solve the customer\'s problem? <span class="required">(required)' in html
    assert 'Was the suggested step helpful? <span class="required">(required)' in html
    assert html.count('name="helpful" value="yes" required') == 1

    page = panel.post("demo-sms-only", "close/", {"outcome": "not_resolved"})
    assert "Not closed yet: say whether the suggested step was helpful (Yes or No)." in (
        page.content.decode().replace("&#x27;", "'")
    )
    assert not TroubleshootingSession.objects.filter(closed_at__isnull=False).exists()


def test_times_carry_utc_on_hover_and_never_say_0_minutes(load_demo, panel):
    load_demo("demo-locked", "demo-delivered")
    html = panel.html("demo-locked")
    assert re.search(r'<time datetime="[^"]+\+00:00" title="\d{4}-\d\d-\d\d \d\d:\d\d UTC">', html)
    panel.answer("demo-delivered", "has_device_access", "yes")
    panel.post("demo-delivered", "verify-phone/", {"phone_number": "+1 703-555-0155"})
    html = panel.post("demo-delivered", "lookup/", {}).content.decode()
    assert "0 minutes" not in html
    assert 'data-relative="1"' in html


def test_a_stale_pending_lookup_offers_ask_again_and_force_asks_again(
    load_demo, panel, agent_client
):
    load_demo("demo-lookup-pending")
    customer = "demo-lookup-pending"
    seeded = DeliveryLookup.objects.get()
    # Just published: fresh, whatever age the demo gives it.
    DeliveryLookup.objects.filter(pk=seeded.pk).update(
        created_at=timezone.now(), enqueued_at=timezone.now()
    )
    api = f"/api/v1/customers/{customer}/twosv/delivery-lookups/"

    # Fresh in flight: force returns it, as before (the API's answer is unchanged).
    response = agent_client.post(api, {"force": True}, format="json")
    assert response.status_code == 200
    assert response.json()["id"] == str(seeded.pk)
    html = panel.html(customer)
    assert "data-poll-url" in html
    assert "data-stale-in=" in html
    assert "Ask again</button>" not in html

    # Older than TWOSV_LOOKUP_STALE_AFTER: the panel stops polling and offers "Ask again".
    published = timezone.now() - settings.TWOSV_LOOKUP_STALE_AFTER - timedelta(seconds=1)
    DeliveryLookup.objects.filter(pk=seeded.pk).update(created_at=published, enqueued_at=published)
    html = panel.html(customer)
    assert "data-poll-url" not in html
    assert "Ask again</button>" in html
    fragment = panel.get(customer, "lookup/status/").content.decode()
    assert 'data-finished="1"' in fragment
    assert 'data-stale="1"' in fragment

    page = panel.post(customer, "lookup/", {"force": "on"})
    seeded.refresh_from_db()
    assert seeded.status == "failed"
    assert seeded.failure_reason.startswith("Superseded by a new request")
    fresh = DeliveryLookup.objects.exclude(pk=seeded.pk).get()
    assert fresh.status == "succeeded"  # eager Celery ran it at once
    assert re.search(r"Asked ATS|ATS answered: Delivered\.", page.content.decode())
    entry = AuditEntry.objects.filter(action="lookup_request", result="created").latest("pk")
    assert entry.details["superseded"] == str(seeded.pk)


# ---------------------------------------------------------------------------------------------
# The method's timeline (issue 20 item 4) and the delivery incident banner (issue 21 item 3)
# ---------------------------------------------------------------------------------------------

TL_PHONE = "+14155550123"


def _timeline_url(customer_id: str, method_id: str) -> str:
    return panel_url(customer_id, f"methods/{method_id}/timeline/")


def _everything_but_audit() -> dict[str, list[str]]:
    from django.apps import apps

    return {
        model._meta.label: sorted(map(repr, model.objects.values()))
        for model in apps.get_models()
        if model is not AuditEntry
    }


@pytest.fixture
def tl_method(db: None) -> Any:
    from tests.builders import enroll, ingest
    from twosv.models import EventType
    from twosv.services.receipts import receipt_record

    method = enroll("tl-1", "tl-1-sms", phone_number=TL_PHONE)
    now = timezone.now()
    ingest(
        "tl-sent",
        EventType.CODE_SENT,
        at=now - timedelta(minutes=30),
        customer_id="tl-1",
        method_id="tl-1-sms",
    )
    ingest(
        "tl-old",
        EventType.CODE_SENT,
        at=now - timedelta(hours=30),
        customer_id="tl-1",
        method_id="tl-1-sms",
    )
    receipt_record(
        message_sid="SM" + "a1" * 16,
        status="undelivered",
        error_code=30003,
        to=TL_PHONE,
        now=now - timedelta(minutes=5),
    )
    return method


def test_the_page_offers_the_subject_method_s_timeline(panel, tl_method):
    html = panel.html("tl-1")

    assert 'id="timeline"' in html
    assert f'data-timeline-url="{_timeline_url("tl-1", "tl-1-sms")}"' in html
    assert 'What happened to this method <span class="nowrap">(last 24 h)</span>' in html
    assert html.index('id="step"') < html.index('id="timeline"')


def test_the_timeline_fragment_shows_the_last_24_hours_newest_first_masked(panel, tl_method):
    panel.html("tl-1")
    before = _everything_but_audit()

    response = panel.client.get(_timeline_url("tl-1", "tl-1-sms"))

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="timeline-items"')
    # The receipt, then the code sent 30 min ago; not the one 30 h ago, nor the enrolment.
    assert html.count('class="tl-item') == 2
    assert html.index('data-type="delivery_receipt"') < html.index('data-type="code_sent"')
    assert 'data-status="undelivered"' in html
    assert "Not delivered" in html
    assert "error 30003" in html
    assert "Unreachable handset" in html  # the error code in words
    assert '<span class="nowrap">+1 ••••••••23</span>' in html  # masked, never wrapped
    assert "5550123" not in html
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC"', html)
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
    # A GET: the audit row of the read, nothing else.
    assert _everything_but_audit() == before
    read = AuditEntry.objects.get(action="timeline_read")
    assert read.customer_ref == "tl-1"
    assert read.details["method_id"] == "tl-1-sms"
    assert read.details["items"] == 2


def test_the_timeline_of_another_customer_s_method_is_a_404(panel, tl_method):
    other = factories.CustomerFactory(customer_id="tl-2")
    factories.MethodFactory(customer=other, method_id="tl-2-sms", phone_number="+14155550199")

    assert panel.client.get(_timeline_url("tl-1", "tl-2-sms")).status_code == 404
    assert panel.client.get(_timeline_url("tl-2", "tl-1-sms")).status_code == 404
    assert panel.client.get(_timeline_url("nobody", "tl-1-sms")).status_code == 404
    assert panel.client.get(_timeline_url("tl-2", "tl-2-sms")).status_code == 200
    assert not AuditEntry.objects.filter(action="timeline_read", customer_ref="tl-1").exists()


def test_the_timeline_fragment_is_for_the_panel_s_agent_only(client, producer, tl_method):
    url = _timeline_url("tl-1", "tl-1-sms")
    assert client.get(url).status_code == 403
    client.force_login(producer)
    assert client.get(url).status_code == 403
    assert not AuditEntry.objects.filter(action="timeline_read").exists()
    assert client.post(url).status_code == 403


def test_the_timeline_fragment_is_a_get_and_counts_as_an_agent_read(panel, tl_method, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    assert panel.client.post(_timeline_url("tl-1", "tl-1-sms")).status_code == 405
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {**ScopedRateThrottle.THROTTLE_RATES, "agent_read": "3/min"},
    )
    codes = [panel.client.get(_timeline_url("tl-1", "tl-1-sms")).status_code for _ in range(4)]

    assert codes[-1] == 429
    assert codes.count(200) <= 3
    refused = panel.client.get(_timeline_url("tl-1", "tl-1-sms"))
    assert 0 < int(refused["Retry-After"]) <= 60
    assert AuditEntry.objects.filter(action="timeline_read").count() == codes.count(200)


def test_an_empty_timeline_says_so(panel, db):
    customer = factories.CustomerFactory(customer_id="tl-3")
    factories.MethodFactory(
        customer=customer, method_id="tl-3-app", kind="authenticator_app", phone_number=""
    )

    html = panel.client.get(_timeline_url("tl-3", "tl-3-app")).content.decode()

    assert "Nothing happened to this method in the last 24 hours." in html


def test_an_open_incident_is_a_banner_above_the_step_for_that_region_only(panel, db):
    from twosv.models import Incident
    from twosv.selectors import advisory_settings_forget

    us = factories.CustomerFactory(customer_id="inc-us")
    factories.MethodFactory(customer=us, method_id="inc-us-sms", phone_number=TL_PHONE)
    de = factories.CustomerFactory(customer_id="inc-de")
    factories.MethodFactory(customer=de, method_id="inc-de-sms", phone_number="+4915123456789")
    now = timezone.now()
    Incident.objects.create(
        region="US",
        attempts=40,
        failures=30,
        share=0.75,
        baseline=0.05,
        opened_at=now - timedelta(minutes=10),
        updated_at=now,
    )
    advisory_settings_forget()

    html = panel.html("inc-us")
    assert 'class="incident-banner"' in html
    assert 'data-incident-region="US"' in html
    assert "Delivery incident: US" in html
    assert html.index("incident-banner") < html.index('id="step"')
    assert 'role="alert"' not in html
    banner = html[
        html.index("incident-banner") : html.index("</section>", html.index("incident-banner"))
    ]
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC"', banner)
    # Shown once, as the banner, not again in the list of warnings.
    assert html.count("advisory-delivery_incident") == 0

    assert "incident-banner" not in panel.html("inc-de")
