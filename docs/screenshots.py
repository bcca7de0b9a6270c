"""Take the README's panel screenshots at the CRM sidebar's size (380x800), from a running demo.

    make run                                  # in one shell: the demo on http://127.0.0.1:8000
    .venv/bin/python docs/screenshots.py      # in another: writes docs/panel-*.png

Playwright drives Debian's Chromium (/usr/bin/chromium). The agent's API token is --token, else
$PANEL_AGENT_TOKEN, else the demo agent's, read from the project's database (the one `make run`
serves). Each shot opens a signed panel link as the CRM does, works through a demo customer
with a fresh troubleshooting session, and captures the first screen (what the agent sees
without scrolling).
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SIDEBAR = {"width": 380, "height": 800}


def demo_agent_token() -> str:
    """Return the demo agent's token from the project's database (as `make run` left it)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_plugin.settings")
    import django

    django.setup()
    from rest_framework.authtoken.models import Token

    return str(Token.objects.get(user__username="demo-agent").key)


def panel_link(context: Any, base_url: str, token: str, customer_id: str) -> str:
    """Ask the API for a signed panel link, as the CRM does with the agent's token."""
    response = context.request.post(
        f"{base_url}/api/v1/panel-links/",
        headers={"Authorization": f"Token {token}"},
        data={"customer_id": customer_id},
    )
    if response.status != 201:
        raise SystemExit(f"panel link for {customer_id}: {response.status} {response.text()}")
    url: str = response.json()["url"]
    return url


def locked(page: Any) -> None:
    """demo-locked: the lock's countdown and the step, as the panel opens."""
    page.wait_for_selector('#step[data-step="wait_for_lock_expiry"]')


def hidden_backup(page: Any) -> None:
    """demo-hidden-backup: the customer lost the device; the hidden backup is offered."""
    page.locator("#step").get_by_role("button", name="No", exact=True).click()
    page.wait_for_selector('#step[data-step="ask_backup_device_access"]')


def delivered(page: Any) -> None:
    """demo-delivered: has the device, the number matches, ATS says the codes were delivered."""
    step = page.locator("#step")
    step.get_by_role("button", name="Yes", exact=True).click()
    page.wait_for_selector('#step[data-step="verify_phone_number"]')
    step.get_by_label("Number the caller says").fill("+1 703-555-0155")
    step.get_by_role("button", name="Check").click()
    page.wait_for_selector('#step[data-step="check_ats_delivery"]')
    page.locator("#run-lookup").click()
    page.wait_for_selector('#step[data-step="problem_lies_elsewhere"]')


SHOTS: list[tuple[str, str, Callable[[Any], None]]] = [
    ("panel-locked.png", "demo-locked", locked),
    ("panel-hidden-backup.png", "demo-hidden-backup", hidden_backup),
    ("panel-delivered.png", "demo-delivered", delivered),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=os.environ.get("PANEL_AGENT_TOKEN", ""))
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    base_url = args.base_url.rstrip("/")
    token = args.token or demo_agent_token()

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for name, customer_id, work in SHOTS:
            # A fresh profile each: no panel session, nor a troubleshooting session, carried over.
            context = browser.new_context(viewport=SIDEBAR, locale="en-GB")
            page = context.new_page()
            page.goto(panel_link(context, base_url, token, customer_id))
            page.wait_for_url(f"**/panel/customers/{customer_id}/")
            work(page)
            page.wait_for_timeout(400)  # the live region's result is put back after 150 ms
            path = args.out / name
            page.screenshot(path=str(path))
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
            context.close()
        browser.close()


if __name__ == "__main__":
    main()
