"""Builders shared by the tests: the frozen clock, events and the methods they make.

Two ways to give a customer history, as the identity system does:
- through the ingestion service (`ingest`, `enroll`, `resends`), for tests of the state and
  of the service itself;
- as the JSON bodies the producer API takes (`event`, `enrolment`), for tests of the API.
And the API clients that call it (`token_client`).
"""

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.ats_server import iso
from twosv import services
from twosv.models import EventType, Method

# The frozen "now" of the API and service tests (see the `frozen_clock` fixture in conftest).
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ENROLLED_AT = T0 - timedelta(days=10)
PHONE = "+14155550123"
RESEND = EventType.CODE_RESEND_REQUESTED
SECOND = timedelta(seconds=1)
AT_ONCE = timedelta(0)  # a `step` for events that all happen at the same moment
# Lock after more than 3 resends: the article's policy with fewer events to write.
SMALL_THRESHOLD = 3

# Every key of a method in the API's answers.
METHOD_KEYS = {
    "id",
    "kind",
    "role",
    "hidden_from_crm",
    "label",
    "phone",
    "status",
    "lock",
    "resends",
}


# ---------------------------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------------------------


def freeze(time_machine: Any, at: datetime = T0) -> None:
    """Stop the clock at `at` (the `time_machine` fixture undoes it when the test ends)."""
    time_machine.move_to(at, tick=False)


def parse_time(value: str) -> datetime:
    """A time the API answered, back to a datetime."""
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------------------------------------
# Through the ingestion service
# ---------------------------------------------------------------------------------------------

_event_ids = itertools.count()


def ingest(
    event_id: str | None = None,
    event_type: str = RESEND,
    *,
    at: datetime | None = None,
    customer_id: str = "c-1",
    method_id: str = "m-1",
    **data: Any,
) -> services.IngestResult:
    """Ingest one event of the method; without an id it gets a new one, without `at` T0 - 1 min."""
    return services.event_ingest(
        event_id=event_id if event_id is not None else f"ev-{next(_event_ids)}",
        event_type=event_type,
        customer_id=customer_id,
        occurred_at=at if at is not None else T0 - timedelta(minutes=1),
        data={"method_id": method_id, **data},
    )


def enroll(
    customer_id: str = "c-1",
    method_id: str = "m-1",
    *,
    kind: str = "sms",
    role: str = "primary",
    phone_number: str | None = PHONE,
    at: datetime = ENROLLED_AT,
    event_id: str | None = None,
    **extra: Any,
) -> Method:
    """Enrol a method (event `enrol-<method_id>`); SMS and voice methods get the phone number."""
    if kind in {"sms", "voice"}:
        extra["phone_number"] = phone_number
    result = ingest(
        event_id or f"enrol-{method_id}",
        EventType.METHOD_ENROLLED,
        at=at,
        customer_id=customer_id,
        method_id=method_id,
        kind=kind,
        role=role,
        **extra,
    )
    assert result.method is not None
    return result.method


def resends(
    method: Method | str,
    count: int,
    *,
    start: datetime | None = None,
    step: timedelta = SECOND,
    customer_id: str | None = None,
) -> None:
    """Ingest `count` resend requests, the first at `start` (T0 - 1 h), `step` apart.

    `method` is a Method (refreshed afterwards), or a method id with its `customer_id`.
    """
    if isinstance(method, Method):
        method_id, customer_id = method.method_id, method.customer.customer_id
    else:
        method_id = method
    assert customer_id is not None
    start = start if start is not None else T0 - timedelta(hours=1)
    for n in range(count):
        ingest(at=start + step * n, customer_id=customer_id, method_id=method_id)
    if isinstance(method, Method):
        method.refresh_from_db()


def lock(
    method: Method | str,
    at: datetime,
    *,
    step: timedelta = SECOND,
    customer_id: str | None = None,
) -> None:
    """Lock the method as customers do: one resend over the threshold, the last at `at`."""
    count = settings.TWOSV_RESEND_LOCK_THRESHOLD + 1
    resends(method, count, start=at - step * (count - 1), step=step, customer_id=customer_id)


# ---------------------------------------------------------------------------------------------
# As the producer API takes them
# ---------------------------------------------------------------------------------------------


def event(
    event_id: str,
    type_: str = RESEND,
    *,
    at: datetime | None = None,
    customer_id: str = "cust-1",
    method_id: str = "m-sms",
    **data: Any,
) -> dict[str, Any]:
    """One event body for POST /api/v1/events/; without `at`, at T0 - 1 min."""
    return {
        "event_id": event_id,
        "type": type_,
        "customer_id": customer_id,
        "occurred_at": iso(at if at is not None else T0 - timedelta(minutes=1)),
        "data": {"method_id": method_id, **data},
    }


def enrolment(
    event_id: str,
    *,
    at: datetime = ENROLLED_AT,
    kind: str = "sms",
    role: str = "primary",
    **data: Any,
) -> dict[str, Any]:
    """The body enrolling a method (by default `m-sms`, an SMS primary)."""
    return event(event_id, "method_enrolled", at=at, kind=kind, role=role, **data)


# ---------------------------------------------------------------------------------------------
# Callers
# ---------------------------------------------------------------------------------------------


def token_client(user: Any, **defaults: Any) -> APIClient:
    """An API client signed in with the user's token (made if they have none yet).

    `defaults` are the client's request defaults, e.g. REMOTE_ADDR.
    """
    client = APIClient(**defaults)
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def enter_panel(client: Any, user: Any) -> None:
    """Sign `client` in to the sidebar panel as `user`, as entering through a link leaves it.

    The panel's `force_login` (issue 16: the panel has an identity of its own, not Django's
    login): bound to the user's API token (made if they have none yet), for
    CRM_PANEL_SESSION_TTL.
    """
    from django.test import RequestFactory

    from crm_plugin.http import links
    from crm_plugin.panel import identity

    token, _ = Token.objects.get_or_create(user=user)
    request = RequestFactory().post("/panel/enter/")
    request.session = client.session
    credential = links.credential_fingerprint(user, token)
    identity.panel_identity_begin(request, agent=user, credential=credential)
    request.session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = request.session.session_key
