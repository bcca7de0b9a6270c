"""The delivery incident banner in a real browser (issue 21 item 3, docs/SPEC.md §11).

While an incident is open for a region, a customer with a number there sees it as an outage
notice on the panel's first screen (380 x 800), naming the region, with the time it started in
the agent's local time; a customer elsewhere sees none. axe-core reports no violation.
Playwright on Debian's Chromium (marker `browser`), as tests/test_panel_live_call.py.
"""

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests.test_panel_browser import agent_token, browser, open_panel
from tests.test_panel_live_call import (
    assert_first_screen,
    assert_no_axe_violation,
    assert_on_first_screen,
    axe_script,
    context,
)
from twosv.models import Incident
from twosv.selectors import advisory_settings_forget

__all__ = ["agent_token", "axe_script", "browser", "context"]  # fixtures, used by name

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

US_PHONE = "+14155550123"
DE_PHONE = "+4915123456789"


@pytest.fixture
def us_incident(transactional_db: None) -> Incident:
    incident = Incident.objects.create(
        region="US",
        attempts=60,
        failures=42,
        share=0.7,
        baseline=0.04,
        top_error_codes=[{"code": 30008, "count": 42}],
        opened_at=timezone.now() - timedelta(minutes=25),
        updated_at=timezone.now(),
    )
    advisory_settings_forget()  # the state read caches the incident regions
    return incident


def customer_with_sms(customer_id: str, phone: str) -> None:
    customer = factories.CustomerFactory(customer_id=customer_id, display_name="Ada Lovelace")
    factories.MethodFactory(customer=customer, method_id=f"{customer_id}-sms", phone_number=phone)


def test_an_open_incident_is_a_banner_on_the_first_screen(
    context, live_server, agent_token, axe_script, us_incident, tmp_path
):
    from playwright.sync_api import expect

    customer_with_sms("inc-us", US_PHONE)
    page = open_panel(context, live_server, agent_token, "inc-us")

    banner = page.locator(".incident-banner")
    expect(banner).to_have_count(1)
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-incident-region", "US")
    expect(banner.locator("h2")).to_have_text(re.compile(r"Delivery incident: US$"))
    assert_on_first_screen(banner, "the incident banner")
    assert banner.get_attribute("role") is None  # a notice, not an interrupting alert
    # Since when: the agent's local time, UTC on hover.
    since = banner.locator(".incident-since time")
    title = since.get_attribute("title") or ""
    opened = datetime.strptime(title, "%Y-%m-%d %H:%M UTC")
    assert opened.strftime("%Y-%m-%d %H:%M") == us_incident.opened_at.strftime("%Y-%m-%d %H:%M")
    assert "UTC" not in since.inner_text()
    expect(since).to_contain_text("min ago")
    expect(banner).to_contain_text("don't tell them to resend")
    # Above the step, which stays on the first screen too.
    assert box_top(banner) < box_top(page.locator("#step"))
    assert_first_screen(page, "inc-us")
    assert_no_axe_violation(page, axe_script)
    page.screenshot(path=str(tmp_path / "incident-banner.png"))


def test_a_customer_in_another_region_has_no_banner(
    context, live_server, agent_token, axe_script, us_incident
):
    from playwright.sync_api import expect

    customer_with_sms("inc-de", DE_PHONE)
    page = open_panel(context, live_server, agent_token, "inc-de")

    expect(page.locator("#step")).to_be_visible()
    expect(page.locator(".incident-banner")).to_have_count(0)
    assert "Delivery incident" not in page.content()
    assert_no_axe_violation(page, axe_script)


def test_a_dismissed_incident_shows_no_banner(context, live_server, agent_token, us_incident):
    from playwright.sync_api import expect

    Incident.objects.filter(pk=us_incident.pk).update(status="dismissed")
    advisory_settings_forget()
    customer_with_sms("inc-us", US_PHONE)
    page = open_panel(context, live_server, agent_token, "inc-us")

    expect(page.locator("#step")).to_be_visible()
    expect(page.locator(".incident-banner")).to_have_count(0)


def box_top(locator: Any) -> float:
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not rendered"
    return float(found["y"])
