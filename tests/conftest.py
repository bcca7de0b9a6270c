"""Shared fixtures: roles and API clients, clocks, service gating, and eager Celery by default."""

import contextlib
import logging
import os

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from tests import factories, openapi_check

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"

pytest_plugins = ["tests.ats_server", "tests.twilio_server"]


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


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hasher():
    """Test users need a password, not a slow one: the real hasher costs ~1 s per user here."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _no_throttle_bleed():
    """Throttle counters live in the cache: start every test with an empty one (and with no
    process copy of the advisory settings, which a rolled-back test may have read)."""
    from django.core.cache import cache

    from twosv.selectors import advisory_settings_forget_local

    cache.clear()
    advisory_settings_forget_local()
    yield
    cache.clear()
    advisory_settings_forget_local()


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
    from tests.builders import token_client

    return token_client(user)


@pytest.fixture
def agent_client(agent) -> APIClient:
    return _client_for(agent)


@pytest.fixture
def producer_client(producer) -> APIClient:
    return _client_for(producer)


@pytest.fixture
def staff_client(staff) -> APIClient:
    return _client_for(staff)


@pytest.fixture
def root(db):
    """A superuser for the admin pages."""
    return factories.UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def root_client(root):
    from django.test import Client

    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def frozen_clock(time_machine) -> None:
    """Stop the clock at builders.T0; use with `pytest.mark.usefixtures("frozen_clock")`."""
    from tests import builders

    builders.freeze(time_machine)


@pytest.fixture
def small_threshold(settings) -> int:
    """Lock after more than 3 resends: the same policy, with fewer events to write."""
    from tests import builders

    settings.TWOSV_RESEND_LOCK_THRESHOLD = builders.SMALL_THRESHOLD
    return builders.SMALL_THRESHOLD


@pytest.fixture
def http_ats(ats_server, settings):
    """Point the `http` ATS backend at the test server (tests/ats_server.py)."""
    settings.TWOSV_ATS_BACKEND = "http"
    settings.ATS_BASE_URL = ats_server.url
    settings.ATS_TOKEN = ats_server.token
    return ats_server


# ---------------------------------------------------------------------------------------------
# Safety net for the whole suite: no response body and no log record may carry a customer's
# full phone number, and no log record an API token. Numbers and tokens are collected as they
# are saved (no queries, so query-count tests are unaffected); every response the test client
# received and every log record (INFO and up, formatted as the JSON formatter writes it, extras
# included, before the masking filter) is scanned when the test ends. Every API response must
# also match the OpenAPI schema, with no field the schema doesn't list (tests/openapi_check.py).
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


class _LogCapture(logging.Handler):
    """Keep every record as the JSON formatter renders it, at the moment it is emitted."""

    def __init__(self) -> None:
        from pythonjsonlogger.json import JsonFormatter

        super().__init__(level=logging.INFO)
        formatter = settings.LOGGING["formatters"]["json"]
        self.setFormatter(JsonFormatter(formatter["fmt"], rename_fields=formatter["rename_fields"]))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def _capturing_logs():
    """Capture INFO and up whatever LOG_LEVEL says; the console keeps its own level."""
    root = logging.getLogger()
    capture = _LogCapture()
    previous_level = root.level
    handler_levels = {handler: handler.level for handler in root.handlers}
    for handler in root.handlers:
        handler.setLevel(max(handler.level, previous_level))
    # First in line: it sees each record before the console's masking filter rewrites it.
    root.handlers.insert(0, capture)
    root.setLevel(min(previous_level, logging.INFO))
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(previous_level)
        for handler, level in handler_levels.items():
            handler.setLevel(level)


@pytest.fixture(autouse=True)
def no_full_phone_numbers_in_responses(monkeypatch: pytest.MonkeyPatch):
    from django.db.models.signals import post_save
    from django.test.client import Client
    from rest_framework.authtoken.models import Token

    from twosv.models import Event, Method

    stored: set[str] = set()
    tokens: set[str] = set()
    bodies: list[tuple[str, bytes]] = []
    api_responses: list[tuple[str, str, int, str, bytes]] = []

    def collect(sender, instance, **kwargs):
        number = getattr(instance, "phone_number", "") or (
            instance.data.get("phone_number", "") if isinstance(instance, Event) else ""
        )
        if isinstance(number, str) and number:
            stored.update(_number_forms(number))

    def collect_token(sender, instance, **kwargs):
        tokens.add(instance.key)

    post_save.connect(collect, sender=Method, weak=False, dispatch_uid="scan-method")
    post_save.connect(collect, sender=Event, weak=False, dispatch_uid="scan-event")
    post_save.connect(collect_token, sender=Token, weak=False, dispatch_uid="scan-token")
    original = Client.request

    def recording_request(self, **request):
        response = original(self, **request)
        path = request.get("PATH_INFO", "")
        if not getattr(response, "streaming", False) and not path.startswith(_SCAN_EXEMPT_PREFIXES):
            bodies.append((path, response.content))
        if path.startswith(openapi_check.API_PREFIX) and not getattr(response, "streaming", False):
            api_responses.append(
                (
                    request.get("REQUEST_METHOD", "GET"),
                    path,
                    response.status_code,
                    response.get("Content-Type", ""),
                    response.content,
                )
            )
        return response

    monkeypatch.setattr(Client, "request", recording_request)
    with _capturing_logs() as logs:
        yield
    post_save.disconnect(sender=Method, dispatch_uid="scan-method")
    post_save.disconnect(sender=Event, dispatch_uid="scan-event")
    post_save.disconnect(sender=Token, dispatch_uid="scan-token")
    leaks = [(path, form) for path, body in bodies for form in stored if form.encode() in body]
    assert not leaks, f"full phone numbers in responses: {leaks[:5]}"
    logged = [(form, line) for line in logs.lines for form in stored if form in line]
    assert not logged, f"full phone numbers in log records: {logged[:5]}"
    logged_tokens = [line for line in logs.lines for key in tokens if key in line]
    assert not logged_tokens, f"API tokens in log records: {logged_tokens[:5]}"
    problems = [
        problem
        for method, path, status, content_type, body in api_responses
        if not path.startswith(openapi_check.UNDESCRIBED_PREFIXES)
        for problem in openapi_check.response_problems(method, path, status, content_type, body)
    ]
    assert not problems, "API responses that don't match the OpenAPI schema:\n" + "\n".join(
        problems[:10]
    )
