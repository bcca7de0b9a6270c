"""The sidebar panel in a real browser: Playwright drives Debian's Chromium against live_server.

The agent enters through a signed panel link (as the CRM's sidebar does), then works through the
article's general steps on the demo data. Without /usr/bin/chromium these tests skip locally and
fail under REQUIRE_SERVICES=1 (tests/conftest.py).

Screenshots at 380 x 800 are taken on every run (into a temporary directory); docs/screenshots.py
refreshes the ones the README shows, against a running demo server. The live call at the sidebar's
size (first screen, results in view, axe-core) is tests/test_panel_live_call.py.
"""

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tests import factories
from twosv import services
from twosv.models import DeliveryLookup, TroubleshootingSession

# Playwright's sync API runs an event loop in this thread; Django's ORM calls made here (test
# set-up, assertions) are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SIDEBAR = {"width": 380, "height": 800}
FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
DEMO_CUSTOMERS = {c["customer_id"]: c for c in json.loads(FIXTURE.read_text())["customers"]}

pytestmark = [
    pytest.mark.browser,
    # The live server reads what the test commits; serialized_rollback brings back the roles
    # the migrations created, which the flush between transactional tests removes.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from django.db import DEFAULT_DB_ALIAS, connections
    from playwright.sync_api import sync_playwright

    connection = connections[DEFAULT_DB_ALIAS]
    with sync_playwright() as playwright:
        # With Playwright's event loop running in this thread, Django looks connections up per
        # async context and would open a second one. Keep the thread's own: live_server shares
        # it (in-memory SQLite), and serialized_rollback restores the contents kept on it.
        connections[DEFAULT_DB_ALIAS] = connection
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (no cookies) the width of the CRM's sidebar."""
    context = browser.new_context(viewport=SIDEBAR)
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def agent_token(transactional_db: None) -> str:
    agent = factories.UserFactory(username="panel-agent", groups=["support_agent"])
    return Token.objects.create(user=agent).key


def load_demo(tmp_path: Path, *customer_ids: str) -> None:
    """Load these demo customers with `manage.py demo_load` (only these: the rest takes time)."""
    fixture = tmp_path / "demo.json"
    fixture.write_text(json.dumps({"customers": [DEMO_CUSTOMERS[c] for c in customer_ids]}))
    call_command("demo_load", "--fixture", str(fixture), stdout=StringIO())


def panel_link(context: Any, live_server: Any, token: str, customer_id: str) -> str:
    """Ask the API for a signed panel link, as the CRM does with the agent's token."""
    response = context.request.post(
        f"{live_server.url}/api/v1/panel-links/",
        headers={"Authorization": f"Token {token}"},
        data={"customer_id": customer_id},
    )
    assert response.status == 201, response.text()
    url: str = response.json()["url"]
    return url


def open_panel(context: Any, live_server: Any, token: str, customer_id: str) -> Any:
    """Open a link as the CRM does: the entry page's script posts the token from the fragment."""
    page = context.new_page()
    page.goto(panel_link(context, live_server, token, customer_id))
    page.wait_for_url(f"**/panel/customers/{customer_id}/")
    return page


def step(page: Any) -> Any:
    return page.locator("#step")


def expect_step(page: Any, code: str) -> None:
    from playwright.sync_api import expect

    expect(step(page)).to_have_attribute("data-step", code)


def full_numbers(customer_id: str) -> list[str]:
    numbers = [
        e["data"]["phone_number"]
        for e in DEMO_CUSTOMERS[customer_id].get("events", [])
        if "phone_number" in e.get("data", {})
    ]
    return [form for n in numbers for form in (n, n.lstrip("+"), n[-10:])]


def assert_fits_the_sidebar(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= SIDEBAR["width"], f"the page is {width} px wide: it scrolls sideways"


# ---------------------------------------------------------------------------------------------
# The article's general steps
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer_id", "spoken_number", "verdict", "final_step"),
    [
        ("demo-sms-only", "(202) 555-0143", "Delivered", "problem_lies_elsewhere"),
        ("demo-india", "098765 43210", "Regional provider issue", "regional_provider_issue"),
    ],
)
def test_the_general_steps_from_device_to_verdict(
    context, live_server, agent_token, tmp_path, customer_id, spoken_number, verdict, final_step
):
    from playwright.sync_api import expect

    load_demo(tmp_path, customer_id)
    page = open_panel(context, live_server, agent_token, customer_id)
    expect_step(page, "ask_device_access")
    assert_fits_the_sidebar(page)

    # 1. Does the customer have the device? Yes.
    step(page).get_by_role("button", name="Yes", exact=True).click()
    expect_step(page, "verify_phone_number")

    # 2. Verify the phone number: match or no match, never the number on file.
    step(page).get_by_label("Number the caller says").fill(spoken_number)
    step(page).get_by_role("button", name="Check").click()
    expect(page.locator("#live")).to_contain_text("Match: the number is the one on file.")
    expect(page.locator("#phone-result")).to_contain_text("Match")
    expect_step(page, "check_ats_delivery")

    # 3. Check with ATS that codes are being sent to that number.
    page.locator("#run-lookup").click()
    expect_step(page, final_step)
    expect(page.locator("#lookup .verdict")).to_have_text(verdict)

    html = page.content()
    for form in full_numbers(customer_id):
        assert form not in html

    # Did this solve it?
    close = page.locator("#close")
    close.get_by_label("Yes, solved").check()
    close.get_by_label("Helpful", exact=True).check()
    close.get_by_role("button", name="Close the session").click()
    expect(page.locator("#close")).to_contain_text("Session closed")
    session = TroubleshootingSession.objects.get(customer__customer_id=customer_id)
    assert session.outcome == "resolved"
    assert session.helpful is True
    assert session.final_step_code == final_step


def test_no_device_sends_the_customer_to_the_cancel_flow(
    context, live_server, agent_token, tmp_path
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-sms-only")
    page = open_panel(context, live_server, agent_token, "demo-sms-only")

    step(page).get_by_role("button", name="No", exact=True).click()

    expect_step(page, "cancel_2sv_no_device_access")
    link = step(page).get_by_role("link", name="Open Cancel two-step verification")
    expect(link).to_have_attribute("href", settings.TWOSV_CANCEL_2SV_URL)


def test_a_locked_customer_sees_the_countdown_run_down(context, live_server, agent_token, tmp_path):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-locked")
    page = open_panel(context, live_server, agent_token, "demo-locked")
    expect_step(page, "wait_for_lock_expiry")
    countdown = step(page).locator("[data-countdown]")
    expect(countdown).to_have_text(re.compile(r"^\d+ h \d\d min \d\d s$"))
    expect(page.locator("#methods")).to_contain_text("Locked")
    expect(page.locator("#methods .resends")).to_have_text(
        re.compile(r"^Blocked while locked: \d+$")
    )

    first = int(countdown.get_attribute("data-left") or 0)
    page.wait_for_timeout(2500)
    second = int(countdown.get_attribute("data-left") or 0)

    assert 17 * 3600 < second < first < 24 * 3600
    assert first - second in (2, 3)


def test_a_lookup_in_flight_updates_by_itself(context, live_server, agent_token, tmp_path):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-lookup-pending")
    # Just published (a stale one offers "Ask again" instead: tests/test_panel_live_call.py).
    DeliveryLookup.objects.update(created_at=timezone.now(), enqueued_at=timezone.now())
    page = open_panel(context, live_server, agent_token, "demo-lookup-pending")
    status = page.locator("#lookup-status")
    expect(status).to_have_attribute("data-status", "pending")
    expect(status).to_contain_text("Asking ATS")

    # The worker picks the lookup up (eager Celery never does for the demo's seeded one).
    services.lookup_run(lookup_id=DeliveryLookup.objects.get().pk)

    # The page polls the status fragment and reloads itself with the verdict.
    expect(page.locator("#lookup .verdict")).to_have_text("Delivered")
    expect(page.locator("#lookup-status")).to_have_attribute("data-status", "succeeded")


# ---------------------------------------------------------------------------------------------
# Entry: the link's token never travels in a URL (issue 16, finding 15)
# ---------------------------------------------------------------------------------------------


def test_the_link_token_stays_out_of_every_url_the_browser_sends(
    context, live_server, agent_token, tmp_path
):
    load_demo(tmp_path, "demo-sms-only")
    sent: list[str] = []
    context.on("request", lambda request: sent.append(request.url))

    # The link as the API gives it: the token in the fragment, posted by the entry page.
    link = panel_link(context, live_server, agent_token, "demo-sms-only")
    token = parse_qs(urlsplit(link).fragment)["token"][0]
    page = context.new_page()
    page.goto(link)
    page.wait_for_url("**/panel/customers/demo-sms-only/")
    expect_step(page, "ask_device_access")
    assert any(url.endswith("/panel/enter/") for url in sent)
    assert not [url for url in sent if token in url]
    page.go_back()  # history keeps the entry page without its token
    assert token not in page.url
    assert "#" not in page.url

    # A link in the older ?token= form still opens, and leaves the address bar and history too.
    old = panel_link(context, live_server, agent_token, "demo-sms-only")
    old_token = parse_qs(urlsplit(old).fragment)["token"][0]
    page = context.new_page()
    page.goto(f"{live_server.url}/panel/enter/?{urlencode({'token': old_token})}")
    page.wait_for_url("**/panel/customers/demo-sms-only/")
    expect_step(page, "ask_device_access")
    page.go_back()
    assert "token" not in page.url


# ---------------------------------------------------------------------------------------------
# Framing: only the CRM's origin may frame the panel
# ---------------------------------------------------------------------------------------------


class _CrmPage(BaseHTTPRequestHandler):
    """A stand-in for the CRM: one page with the panel in an iframe."""

    frame_src = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>CRM</title><h1>CRM</h1>"
            f'<iframe id="sidebar" src="{self.frame_src}" width="380" height="800"></iframe>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def crm() -> Iterator[Any]:
    """Serve the CRM page on another port: http://localhost:<port> and http://127.0.0.1:<port>
    are two origins, of which the test lists one in CRM_PANEL_FRAME_ANCESTORS."""
    handler = type("CrmPage", (_CrmPage,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_crm_origin_may_frame_the_panel_and_another_may_not(
    context, live_server, agent_token, tmp_path, crm, settings
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-hidden-backup")
    port = crm.server_address[1]
    settings.CRM_PANEL_FRAME_ANCESTORS = [f"http://localhost:{port}"]

    # The CRM's origin: the panel loads in its frame, signed in through the link.
    crm.RequestHandlerClass.frame_src = panel_link(
        context, live_server, agent_token, "demo-hidden-backup"
    )
    page = context.new_page()
    page.goto(f"http://localhost:{port}/")
    frame = page.frame_locator("#sidebar")
    expect(frame.locator("#step")).to_have_attribute("data-step", "ask_device_access")
    expect(frame.locator("#methods")).to_contain_text("hidden in CRM")

    # Another origin (the same server under another name): Chromium refuses to render it.
    crm.RequestHandlerClass.frame_src = panel_link(
        context, live_server, agent_token, "demo-hidden-backup"
    )
    refusals: list[str] = []
    other = context.new_page()
    other.on("console", lambda message: refusals.append(message.text))
    other.goto(f"http://127.0.0.1:{port}/")
    other.wait_for_load_state("load")
    child = other.frame_locator("#sidebar")
    other.wait_for_timeout(1000)
    assert child.locator("#panel").count() == 0
    assert any("frame-ancestors" in text for text in refusals), refusals


# ---------------------------------------------------------------------------------------------
# Screenshots for the README, at the sidebar's width
# ---------------------------------------------------------------------------------------------


def test_screenshots_of_three_situations(context, live_server, agent_token, tmp_path):

    load_demo(tmp_path, "demo-locked", "demo-hidden-backup", "demo-delivered")
    target = Path(os.environ.get("PANEL_SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)

    locked = open_panel(context, live_server, agent_token, "demo-locked")
    expect_step(locked, "wait_for_lock_expiry")

    hidden = open_panel(context, live_server, agent_token, "demo-hidden-backup")
    step(hidden).get_by_role("button", name="No", exact=True).click()
    expect_step(hidden, "ask_backup_device_access")

    delivered = open_panel(context, live_server, agent_token, "demo-delivered")
    step(delivered).get_by_role("button", name="Yes", exact=True).click()
    step(delivered).get_by_label("Number the caller says").fill("+1 703-555-0155")
    step(delivered).get_by_role("button", name="Check").click()
    delivered.locator("#run-lookup").click()
    expect_step(delivered, "problem_lies_elsewhere")

    for name, page in [
        ("locked", locked),
        ("hidden-backup", hidden),
        ("delivered", delivered),
    ]:
        assert_fits_the_sidebar(page)
        page.screenshot(path=str(target / f"panel-{name}.png"), full_page=True)
        assert (target / f"panel-{name}.png").stat().st_size > 10_000
