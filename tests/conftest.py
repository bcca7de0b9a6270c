"""Shared fixtures: roles and API clients, service gating, and eager Celery by default."""

import os

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from tests import factories

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"

pytest_plugins = ["tests.ats_server"]


def _service_missing(marker: str) -> str | None:
    if marker == "postgres" and connection.vendor != "postgresql":
        return "needs PostgreSQL: set DATABASE_URL=postgres://..."
    if marker == "broker" and not os.environ.get("CELERY_BROKER_URL"):
        return "needs a Celery broker: set CELERY_BROKER_URL=redis://..."
    if marker == "browser" and not os.path.exists("/usr/bin/chromium"):
        return "needs Chromium at /usr/bin/chromium"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("postgres", "broker", "browser"):
        if item.get_closest_marker(marker) is None:
            continue
        reason = _service_missing(marker)
        if reason is None:
            continue
        if REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but this test {reason}", pytrace=False)
        pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> list[str]:
    database = settings.DATABASES["default"]
    return [
        f"database backend: {database['ENGINE']} ({database.get('HOST') or database['NAME']})",
        f"celery broker: {os.environ.get('CELERY_BROKER_URL', 'none (eager)')}",
        f"require services: {REQUIRE_SERVICES}",
    ]


@pytest.fixture(autouse=True)
def _eager_celery(request: pytest.FixtureRequest):
    """Run tasks inline unless a test asks for the real worker (marker `broker`)."""
    from crm_plugin.celery import app

    eager = request.node.get_closest_marker("broker") is None
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = eager
    yield
    app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _no_throttle_bleed():
    """Throttle counters live in the cache: start every test with an empty one."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def agent(db):
    return factories.UserFactory(username="agent", groups=["support_agent"])


@pytest.fixture
def producer(db):
    return factories.UserFactory(username="producer", groups=["event_producer"])


@pytest.fixture
def staff(db):
    return factories.UserFactory(username="admin", is_staff=True, is_superuser=True)


def _client_for(user) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def agent_client(agent) -> APIClient:
    return _client_for(agent)


@pytest.fixture
def producer_client(producer) -> APIClient:
    return _client_for(producer)


@pytest.fixture
def staff_client(staff) -> APIClient:
    return _client_for(staff)


# ---------------------------------------------------------------------------------------------
# Safety net for the whole suite: no response body may carry a customer's full phone number.
# Numbers are collected as they are saved (no queries, so query-count tests are unaffected)
# and every response the test client received is scanned when the test ends.
# ---------------------------------------------------------------------------------------------

# The local ATS records are the one place an admin edits a raw number (demo data, by design).
_SCAN_EXEMPT_PREFIXES = ("/admin/twosv/localdeliveryrecord/",)


def _number_forms(e164: str) -> set[str]:
    import phonenumbers

    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return set()
    forms = {
        e164,
        e164.lstrip("+"),
        str(parsed.national_number),
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL),
    }
    return {form for form in forms if len(form) >= 7}


@pytest.fixture(autouse=True)
def no_full_phone_numbers_in_responses(monkeypatch: pytest.MonkeyPatch):
    from django.db.models.signals import post_save
    from django.test.client import Client

    from twosv.models import Event, Method

    stored: set[str] = set()
    bodies: list[tuple[str, bytes]] = []

    def collect(sender, instance, **kwargs):
        number = getattr(instance, "phone_number", "") or (
            instance.data.get("phone_number", "") if isinstance(instance, Event) else ""
        )
        if isinstance(number, str) and number:
            stored.update(_number_forms(number))

    post_save.connect(collect, sender=Method, weak=False, dispatch_uid="scan-method")
    post_save.connect(collect, sender=Event, weak=False, dispatch_uid="scan-event")
    original = Client.request

    def recording_request(self, **request):
        response = original(self, **request)
        path = request.get("PATH_INFO", "")
        if not getattr(response, "streaming", False) and not path.startswith(_SCAN_EXEMPT_PREFIXES):
            bodies.append((path, response.content))
        return response

    monkeypatch.setattr(Client, "request", recording_request)
    yield
    post_save.disconnect(sender=Method, dispatch_uid="scan-method")
    post_save.disconnect(sender=Event, dispatch_uid="scan-event")
    leaks = [(path, form) for path, body in bodies for form in stored if form.encode() in body]
    assert not leaks, f"full phone numbers in responses: {leaks[:5]}"
