"""The live call at a 380x800 sidebar (issue 17): the panel never misleads the agent.

Playwright on Debian's Chromium (marker `browser`), against live_server and the demo data:
- for every demo customer, the first screen (800 px) holds the step, every lock and every
  warning, and the warnings come before the hints;
- the phone check forgives one misread digit (R6a) and not two; a changed number leads to R6;
- after every action its result is in the viewport, in the page's live region;
- a stale pending lookup offers "Ask again", which really asks again;
- axe-core reports no violation in any state visited.

axe-core comes from the npm registry: `npm install --prefix var/node axe-core@AXE_VERSION`, run
by .ci/run before `make test`, or by the first test that needs it (cached in var/node). Without
it (no npm, no network) these tests skip, and fail under REQUIRE_SERVICES=1.
"""

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from tests.test_panel_browser import (
    DEMO_CUSTOMERS,
    SIDEBAR,
    agent_token,
    assert_fits_the_sidebar,
    browser,
    expect_step,
    load_demo,
    open_panel,
    step,
)
from twosv.models import Customer, DeliveryLookup, LookupStatus
from twosv.selectors import customer_twosv_state

__all__ = ["agent_token", "browser"]  # fixtures, used by name

AXE_VERSION = "4.10.3"
AXE_DIR = Path(settings.BASE_DIR) / "var" / "node"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh profile at the sidebar's size, in English with 24-hour times.

    bypass_csp lets the test inject axe-core as an inline script: the panel's CSP allows only
    its own files (tests/test_panel.py checks the policy itself).
    """
    context = browser.new_context(viewport=SIDEBAR, locale="en-GB", bypass_csp=True)
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """Return axe-core's axe.min.js, installed from the npm registry once (var/node)."""
    if not AXE_JS.exists() and shutil.which("npm"):
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(AXE_DIR),
                "--no-audit",
                "--no-fund",
                f"axe-core@{AXE_VERSION}",
            ],
            check=False,
            capture_output=True,
            timeout=180,
        )
    if not AXE_JS.exists():
        reason = f"needs axe-core: npm install --prefix var/node axe-core@{AXE_VERSION}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but this test {reason}", pytrace=False)
        pytest.skip(reason)
    return AXE_JS


def assert_no_axe_violation(page: Any, axe_script: Path) -> None:
    """Run axe-core (WCAG 2 A and AA, best practices) on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # add_script_tag with content: the panel's CSP allows only its own files, so bypass it
        # for the test's script alone (the page's own CSP stays checked elsewhere).
        page.add_script_tag(content=axe_script.read_text())
    result = page.evaluate(
        "async () => { const r = await axe.run(document); return r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)})); }"
    )
    assert result == [], json.dumps(result, indent=1)


def box(locator: Any) -> dict[str, float]:
    found: dict[str, float] | None = locator.bounding_box()
    assert found is not None, f"{locator} is not rendered"
    return found


def assert_on_first_screen(locator: Any, what: str) -> None:
    """The element is within the first 800 px of the page, with the page at its top."""
    found = box(locator)
    bottom = found["y"] + found["height"]
    assert bottom <= SIDEBAR["height"], f"{what} ends at y = {bottom:.0f}, below the first screen"


def assert_result_in_view(page: Any, text: str) -> None:
    """The action's result is in the live region and inside the viewport, as the page shows."""
    from playwright.sync_api import expect

    live = page.locator("#live")
    expect(live).to_have_attribute("aria-live", "polite")
    result = live.locator("[data-result]", has_text=text)
    expect(result).to_be_visible()
    assert result.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight; }"
    ), f"the result {text!r} is out of view"


def locked_method_ids(customer_id: str) -> list[str]:
    customer = Customer.objects.get(customer_id=customer_id)
    state = customer_twosv_state(customer=customer, now=timezone.now())
    return [m.method_id for m in state.methods if m.status == "locked"]


def assert_first_screen(page: Any, customer_id: str) -> None:
    """The step, every lock and every warning are on the first screen; warnings before hints."""
    assert page.evaluate("window.scrollY") == 0
    assert_on_first_screen(page.locator("#step-title"), "the step's title")
    assert_on_first_screen(page.locator("#step > p").nth(1), "the step's first lines")
    # What the step asks the agent to do: its question's buttons, its form or its button.
    for control in ("#step .buttons", "#step .phone-form button", "#step #run-lookup"):
        if page.locator(control).count():
            assert_on_first_screen(page.locator(control).first, control)
    for method_id in locked_method_ids(customer_id):
        lock = page.locator(f'[data-lock-of="{method_id}"]').first
        assert_on_first_screen(lock, f"the lock of {method_id}")
    warnings = page.locator('[data-severity="warning"]')
    for n in range(warnings.count()):
        assert_on_first_screen(warnings.nth(n), f"warning {n + 1}")
    severities = page.eval_on_selector_all(
        "[data-severity]", "nodes => nodes.map(n => n.dataset.severity)"
    )
    assert severities == sorted(severities, key=lambda s: s != "warning"), severities
    assert_fits_the_sidebar(page)


# ---------------------------------------------------------------------------------------------
# The first screen, for every demo customer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("customer_id", list(DEMO_CUSTOMERS))
def test_the_first_screen_holds_the_step_every_lock_and_warning(
    context, live_server, agent_token, tmp_path, axe_script, customer_id
):
    load_demo(tmp_path, customer_id)
    page = open_panel(context, live_server, agent_token, customer_id)

    assert_first_screen(page, customer_id)
    assert_no_axe_violation(page, axe_script)
    # The sender number in the carrier hint never wraps.
    for number in page.locator("#advisories .advisory-carrier_hint .nowrap").all():
        assert number.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"


def test_a_locked_primary_with_a_backup_keeps_its_lock_on_the_first_screen(
    context, live_server, agent_token, tmp_path, axe_script
):
    load_demo(tmp_path, "demo-locked-backup")
    page = open_panel(context, live_server, agent_token, "demo-locked-backup")
    expect_step(page, "ask_backup_device_access")
    assert_first_screen(page, "demo-locked-backup")

    # Troubleshooting the backup: the primary's lock is a warning above the step.
    page.locator('[data-method="demo-locked-backup-app"]').get_by_role(
        "button", name="Troubleshoot this method"
    ).click()
    expect_step(page, "ask_device_access")
    assert_result_in_view(page, "Now troubleshooting")
    assert page.locator('.advisory-method_locked[data-lock-of="demo-locked-backup-sms"]').count()
    assert_first_screen(page, "demo-locked-backup")
    assert_no_axe_violation(page, axe_script)


def test_a_locked_method_shows_blocked_requests_not_a_resend_counter(
    context, live_server, agent_token, tmp_path
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-locked", "demo-authenticator")
    page = open_panel(context, live_server, agent_token, "demo-locked")
    expect(page.locator("#methods .resends")).to_have_text(
        re.compile(r"^Blocked while locked: \d+$")
    )
    assert "/200" not in page.locator("#methods").inner_text()

    page = open_panel(context, live_server, agent_token, "demo-authenticator")
    assert page.locator("#methods .resends").count() == 0


def test_a_recently_changed_number_is_said_with_its_date(
    context, live_server, agent_token, tmp_path, axe_script
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-changed-number")
    page = open_panel(context, live_server, agent_token, "demo-changed-number")
    expect(page.locator(".advisory-number_recently_changed")).to_be_visible()
    assert_first_screen(page, "demo-changed-number")
    changed = page.locator("#methods .number-changed time")
    expect(changed).to_have_attribute("title", re.compile(r"UTC$"))
    expect(changed).to_contain_text("days ago")
    assert_no_axe_violation(page, axe_script)


# ---------------------------------------------------------------------------------------------
# The phone check: one misread digit is forgiven, two are not (R6a, R6)
# ---------------------------------------------------------------------------------------------


def check_number(page: Any, number: str) -> None:
    step(page).get_by_label("Number the caller says").fill(number)
    step(page).get_by_role("button", name="Check").click()


def test_one_wrong_number_asks_again_and_the_right_one_leads_to_ats(
    context, live_server, agent_token, tmp_path, axe_script
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-sms-only")
    page = open_panel(context, live_server, agent_token, "demo-sms-only")
    step(page).get_by_role("button", name="Yes", exact=True).click()
    expect_step(page, "verify_phone_number")
    assert_result_in_view(page, "Answer recorded: has the device: Yes.")
    assert_no_axe_violation(page, axe_script)

    check_number(page, "+1 202-555-0134")  # two digits swapped
    expect_step(page, "recheck_phone_number")
    assert_result_in_view(page, "No match")
    assert_first_screen(page, "demo-sms-only")
    expect(step(page)).to_contain_text("Has the number of this phone changed")
    assert_no_axe_violation(page, axe_script)

    check_number(page, "(202) 555-0143")
    expect_step(page, "check_ats_delivery")
    assert_result_in_view(page, "Match: the number is the one on file.")

    page.locator("#run-lookup").click()
    expect_step(page, "problem_lies_elsewhere")
    assert_result_in_view(page, "ATS answered: Delivered.")
    assert_no_axe_violation(page, axe_script)


def test_two_wrong_numbers_in_a_row_lead_to_r6(context, live_server, agent_token, tmp_path):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-sms-only")
    page = open_panel(context, live_server, agent_token, "demo-sms-only")
    step(page).get_by_role("button", name="Yes", exact=True).click()
    check_number(page, "+1 202-555-0134")
    expect_step(page, "recheck_phone_number")
    check_number(page, "+1 202-555-0199")

    expect_step(page, "cancel_2sv_no_device_access")
    expect(step(page).locator(".rule")).to_have_text("R6")
    assert_result_in_view(page, "No match")


def test_a_changed_number_leads_to_r6(context, live_server, agent_token, tmp_path, axe_script):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-changed-number")
    page = open_panel(context, live_server, agent_token, "demo-changed-number")
    step(page).get_by_role("button", name="Yes", exact=True).click()
    check_number(page, "+1 212-555-0142")  # the number before the change
    expect_step(page, "recheck_phone_number")

    step(page).get_by_role("button", name="Yes", exact=True).click()

    expect_step(page, "cancel_2sv_no_device_access")
    expect(step(page).locator(".rule")).to_have_text("R6")
    assert_result_in_view(page, "Answer recorded: the phone's number changed since 2SV was set up")
    assert_first_screen(page, "demo-changed-number")
    assert_no_axe_violation(page, axe_script)


def test_with_no_tries_left_there_is_no_phone_form(
    context, live_server, agent_token, tmp_path, settings
):
    from playwright.sync_api import expect

    settings.TWOSV_PHONE_VERIFY_MAX_TRIES = 1
    load_demo(tmp_path, "demo-sms-only")
    page = open_panel(context, live_server, agent_token, "demo-sms-only")
    step(page).get_by_role("button", name="Yes", exact=True).click()
    check_number(page, "+1 202-555-0134")

    expect_step(page, "recheck_phone_number")
    expect(page.locator("#no-tries")).to_contain_text("No number checks left")
    assert page.get_by_label("Number the caller says").count() == 0


# ---------------------------------------------------------------------------------------------
# Every action's result is in view; closing the call
# ---------------------------------------------------------------------------------------------


def test_closing_asks_one_plain_question_and_says_what_is_required(
    context, live_server, agent_token, tmp_path, axe_script
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-hidden-backup")
    page = open_panel(context, live_server, agent_token, "demo-hidden-backup")
    step(page).get_by_role("button", name="No", exact=True).click()
    expect_step(page, "ask_backup_device_access")
    assert_result_in_view(page, "Answer recorded: has the device: No.")
    assert_first_screen(page, "demo-hidden-backup")

    close = page.locator("#close")
    expect(close).to_contain_text("Did this solve the customer's problem? (required)")
    expect(close).to_contain_text("Was the suggested step helpful? (required)")
    close.get_by_label("Escalated").check()
    close.get_by_role("button", name="Close the session").click()
    # "helpful" is required: the browser keeps the form and says so; nothing was sent.
    expect(page.locator("#close-title")).to_have_text("End of the call")
    assert close.locator('input[name="helpful"]:invalid').count() > 0

    close.get_by_label("Not helpful").check()
    close.get_by_role("button", name="Close the session").click()
    expect(page.locator("#close")).to_contain_text("Session closed")
    assert_result_in_view(page, "Session closed: Escalated.")
    assert_no_axe_violation(page, axe_script)

    page.get_by_role("button", name="Start a new session").click()
    assert_result_in_view(page, "New session")


def test_times_are_local_with_utc_on_hover(browser, live_server, agent_token, tmp_path):
    load_demo(tmp_path, "demo-locked")
    local = browser.new_context(viewport=SIDEBAR, locale="en-GB", timezone_id="Asia/Kolkata")
    try:
        page = open_panel(local, live_server, agent_token, "demo-locked")
        until = page.locator("#step .lock-line time")
        title = until.get_attribute("title") or ""
        utc = datetime.strptime(title, "%Y-%m-%d %H:%M UTC")
        # India is UTC+5:30: the page shows the agent's time, UTC on hover.
        shown = until.inner_text()
        assert (utc + timedelta(hours=5, minutes=30)).strftime("%H:%M") in shown
        assert "UTC" not in shown
        html = page.content()
        assert "0 minutes ago" not in html
        assert "0 min ago" not in html
    finally:
        local.close()


# ---------------------------------------------------------------------------------------------
# A lookup that never answers: the polling stops, "Ask again" really asks again
# ---------------------------------------------------------------------------------------------


def test_a_stale_pending_lookup_offers_ask_again_which_asks_again(
    context, live_server, agent_token, tmp_path, axe_script
):
    from playwright.sync_api import expect

    load_demo(tmp_path, "demo-lookup-pending")
    stale = DeliveryLookup.objects.get()
    # Stale in 15 s: the page polls, slows down, stops, and offers "Ask again" by itself.
    published = timezone.now() - settings.TWOSV_LOOKUP_STALE_AFTER + timedelta(seconds=15)
    DeliveryLookup.objects.filter(pk=stale.pk).update(created_at=published, enqueued_at=published)
    page = open_panel(context, live_server, agent_token, "demo-lookup-pending")
    step(page).get_by_role("button", name="Yes", exact=True).click()
    check_number(page, "+1 202-555-0188")
    expect_step(page, "wait_for_ats_lookup")
    expect(page.locator("#lookup-status")).to_have_attribute("data-poll-url", re.compile("status"))
    ask_again = step(page).get_by_role("button", name="Ask again")
    expect(ask_again).to_be_visible(timeout=30_000)
    assert_result_in_view(page, "ATS hasn't answered the lookup: ask again.")
    assert_first_screen(page, "demo-lookup-pending")
    assert page.locator("[data-poll-url]").count() == 0  # no more polling
    assert_no_axe_violation(page, axe_script)

    ask_again.click()

    expect_step(page, "problem_lies_elsewhere")
    assert_result_in_view(page, "ATS answered: Delivered.")
    stale.refresh_from_db()
    assert stale.status == LookupStatus.FAILED
    assert "uperseded by a new request" in stale.failure_reason
    assert DeliveryLookup.objects.count() == 2
