"""The method's timeline in the panel, live (issue 20 item 4, docs/SPEC.md §10).

The agent opens "What happened to this method (last 24 h)" and watches the customer press
"resend": a Twilio status callback posted to the real webhook (signed by the twilio library's
RequestValidator over TWILIO_STATUS_CALLBACK_URL) shows in the open section within a few
seconds, without a reload, its error code in words and the number masked. axe-core reports no
violation. Playwright on Debian's Chromium (marker `browser`), as tests/test_panel_live_call.py.
"""

import re
import urllib.request
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from twilio.request_validator import RequestValidator

from tests.builders import enroll, ingest
from tests.test_panel_browser import agent_token, browser, open_panel
from tests.test_panel_live_call import assert_no_axe_violation, axe_script, context
from twosv.models import AuditEntry, EventType
from twosv.receipt_models import DeliveryReceipt

__all__ = ["agent_token", "axe_script", "browser", "context"]  # fixtures, used by name

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

WEBHOOK = "/webhooks/twilio/message-status/"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PHONE = "+14155550123"


def post_receipt(callback_url: str, sid: str, status: str, error_code: str = "") -> None:
    """POST a status callback as Twilio does: form-encoded, signed over every field."""
    fields = {
        "AccountSid": "AC" + "a1" * 16,
        "ApiVersion": "2010-04-01",
        "From": "+14803605516",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": PHONE,
    }
    if error_code:
        fields["ErrorCode"] = error_code
    request = urllib.request.Request(
        callback_url,
        data=urlencode(fields).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
                callback_url, fields
            ),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_a_receipt_posted_while_the_panel_is_open_appears_in_its_timeline(
    context, live_server, agent_token, axe_script, settings, tmp_path
):
    from playwright.sync_api import expect

    callback_url = f"{live_server.url}{WEBHOOK}"
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.TWILIO_STATUS_CALLBACK_URL = callback_url
    enroll("tl-live", "tl-live-sms", phone_number=PHONE)
    ingest(
        "tl-live-sent",
        EventType.CODE_SENT,
        at=timezone.now() - timedelta(minutes=3),
        customer_id="tl-live",
        method_id="tl-live-sms",
    )

    page = open_panel(context, live_server, agent_token, "tl-live")
    section = page.locator("#timeline")
    expect(section).not_to_have_attribute("open", "")
    section.locator("summary").click()
    items = section.locator("#timeline-items .tl-item")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-type", "code_sent")
    expect(items.first).to_contain_text("+1 ••••••••23")
    assert_no_axe_violation(page, axe_script)

    # The customer pressed "resend": Twilio calls back while the agent watches.
    post_receipt(callback_url, "SM" + "b2" * 16, "undelivered", "30003")
    assert DeliveryReceipt.objects.count() == 1

    newest = items.first
    expect(newest).to_have_attribute("data-type", "delivery_receipt", timeout=5_000)
    expect(items).to_have_count(2)
    expect(newest).to_have_class(re.compile(r"\btl-new\b"))
    expect(newest.locator(".tl-status")).to_have_text("Not delivered")
    expect(newest).to_contain_text("Unreachable handset")  # error 30003, in words
    expect(newest).to_contain_text("+1 ••••••••23")
    time = newest.locator("time")
    expect(time).to_have_attribute("title", re.compile(r" UTC$"))
    assert "UTC" not in time.inner_text()
    expect(section.locator(".tl-live")).to_contain_text("New in the timeline: Not delivered")
    assert "5550123" not in page.content()
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert_no_axe_violation(page, axe_script)
    section.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "timeline.png"))
    assert AuditEntry.objects.filter(action="timeline_read", customer_ref="tl-live").count() >= 2

    # Closed, it stops asking; the section opens again by itself after the page reloads.
    section.locator("summary").click()
    page.wait_for_timeout(1_000)  # a fetch already under way may still land
    reads = AuditEntry.objects.filter(action="timeline_read").count()
    page.wait_for_timeout(4_000)
    assert AuditEntry.objects.filter(action="timeline_read").count() == reads
    section.locator("summary").click()
    expect(items).to_have_count(2)
    page.reload()
    expect(page.locator("#timeline")).to_have_attribute("open", "")
    expect(page.locator("#timeline #timeline-items .tl-item")).to_have_count(2)
