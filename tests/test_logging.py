"""Logs: one JSON line per request, and never a full phone number, a token or a code.

The suite-wide fixture in tests/conftest.py scans every record of every test for stored
numbers and tokens; here the request line's shape, the masking filter (the safety net) and the
configured pipeline (formatter plus filter) are tested directly.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from crm_plugin.logging import MaskPhoneNumbersFilter
from tests import factories
from twosv.masking import mask_phone_numbers

PHONE = "+14155550123"


# ---------------------------------------------------------------------------------------------
# The masking filter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+14155550123", "+•••23"),
        ("call +1 415 555 0123 now", "call +•••23 now"),
        ("call +1 (415) 555-0123 now", "call +•••23 now"),
        ("national (415) 555-0123.", "national +•••23."),
        ("dots 415.555.0123", "dots +•••23"),
        ("India 098765 43210", "India +•••10"),
        ("+91 98765 43210", "+•••10"),
        ("+44 20 7946 0958", "+•••58"),
        ("to=%2B14155550123&since=2026-03-02T12:00:00Z", "to=+•••23&since=2026-03-02T12:00:00Z"),
        ("to=14155550123", "to=+•••23"),
        ("two: +14155550123, +442079460958", "two: +•••23, +•••58"),
    ],
)
def test_phone_numbers_are_masked_to_the_last_two_digits(text, masked):
    assert mask_phone_numbers(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "request 9f86d081884c7d659a2feaa0c55ad015",  # a uuid4().hex request id
        "request 0123456789abcdef0123456789abcdef",
        "lookup 550e8400-e29b-41d4-a716-446655440000",
        "at 2026-03-02 12:00:00,123",
        "at 2026-03-02T12:00:00.123456+00:00",
        "from 203.0.113.7",
        "took 12.5 ms, 1234567 rows",
        "method m-000123 customer cust-00042",
        "code 30007",
    ],
)
def test_ids_times_addresses_and_short_numbers_are_left_alone(text):
    assert mask_phone_numbers(text) == text


def _record(msg: Any, args: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _formatted(record: logging.LogRecord) -> str:
    from pythonjsonlogger.json import JsonFormatter

    config = settings.LOGGING["formatters"]["json"]
    assert MaskPhoneNumbersFilter().filter(record) is True
    return JsonFormatter(config["fmt"], rename_fields=config["rename_fields"]).format(record)


def test_the_filter_masks_the_message_its_arguments_and_extras():
    record = _record(
        "sent to %s via %s (%r)",
        (PHONE, httpx.URL(f"https://ats.example/v1/messages?to={PHONE}"), (PHONE,)),
        number=PHONE,
        nested={"to": [PHONE], "count": 3},
        request_id="9f86d081884c7d659a2feaa0c55ad015",
    )

    line = json.loads(_formatted(record))

    assert "4155550123" not in json.dumps(line)
    assert line["message"].startswith("sent to +•••23 via https://ats.example/v1/messages?to=")
    assert line["number"] == "+•••23"
    assert line["nested"] == {"to": ["+•••23"], "count": 3}
    assert line["request_id"] == "9f86d081884c7d659a2feaa0c55ad015"


def test_the_filter_masks_a_traceback_and_a_dict_message():
    try:
        raise ValueError(f"ATS refused {PHONE}")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", None, None)
        import sys

        record.exc_info = sys.exc_info()
    dict_record = _record({"event": "x", "to": PHONE})

    traceback_line = json.loads(_formatted(record))
    dict_line = json.loads(_formatted(dict_record))

    assert "ValueError: ATS refused +•••23" in traceback_line["exc_info"]
    assert "4155550123" not in json.dumps(traceback_line)
    assert dict_line["to"] == "+•••23"


def test_a_broken_format_string_still_logs_masked():
    record = _record("to %s and %s", (PHONE,))

    assert "+•••23" in json.loads(_formatted(record))["message"]


def test_the_console_handler_carries_the_filter_and_the_json_formatter():
    config = settings.LOGGING
    assert config["handlers"]["console"]["filters"] == ["mask_phones"]
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["filters"]["mask_phones"]["()"] == "crm_plugin.logging.MaskPhoneNumbersFilter"
    # httpx logs each request's URL at INFO, and an ATS URL carries the number it asks about.
    assert config["loggers"]["httpx"]["level"] == "WARNING"


# ---------------------------------------------------------------------------------------------
# The request line, through the configured pipeline
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """Point the configured console handler at a buffer, at INFO."""
    root = logging.getLogger()
    (handler,) = [
        h for h in root.handlers if any(isinstance(f, MaskPhoneNumbersFilter) for f in h.filters)
    ]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous_stream = handler.setStream(buffer)
    previous = (root.level, handler.level)
    root.setLevel(logging.INFO)
    handler.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        handler.setStream(previous_stream)
        root.setLevel(previous[0])
        handler.setLevel(previous[1])


def _lines(buffer: io.StringIO, logger: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in lines if logger is None or line["logger"] == logger]


@pytest.mark.django_db
def test_one_json_line_per_request_with_id_user_status_and_duration(agent_client, console):
    customer = factories.CustomerFactory(customer_id="cust-log")
    factories.MethodFactory(customer=customer, phone_number=PHONE)

    response = agent_client.get("/api/v1/customers/cust-log/twosv/?x=1")

    (line,) = _lines(console, "crm_plugin.request")
    assert line["message"] == "request"
    assert line["level"] == "INFO"
    assert line["request_id"] == response["X-Request-ID"]
    assert len(line["request_id"]) == 32
    assert line["user"] == "agent"
    assert line["method"] == "GET"
    assert line["path"] == "/api/v1/customers/cust-log/twosv/"  # no query string
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert "time" in line


@pytest.mark.django_db
def test_the_request_line_of_a_refused_call_has_no_user_and_no_credentials(console):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")

    response = client.get("/api/v1/customers/cust-log/twosv/")

    assert response.status_code == 401
    (line,) = _lines(console, "crm_plugin.request")
    assert line["user"] is None
    assert line["status"] == 401
    assert "0123456789abcdef0123456789abcdef01234567" not in console.getvalue()
    assert "Authorization" not in console.getvalue()


@pytest.mark.django_db
def test_a_server_error_logs_neither_the_token_nor_the_number(agent, console, monkeypatch):
    from rest_framework.authtoken.models import Token

    from crm_plugin.api import state

    customer = factories.CustomerFactory(customer_id="cust-boom")
    factories.MethodFactory(customer=customer, phone_number=PHONE)

    def explode(**kwargs: Any) -> Any:
        # Not the stored number: the suite-wide scan would (rightly) flag that in the raw record.
        raise RuntimeError("could not read +1 415 555 0199")

    monkeypatch.setattr(state, "access_customer_state", explode)
    token = Token.objects.create(user=agent)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.get("/api/v1/customers/cust-boom/twosv/")

    assert response.status_code == 500
    output = console.getvalue()
    assert token.key not in output
    assert "4155550123" not in output
    assert "4155550199" not in output
    # The API's fault handler logs the traceback (masked); the client got the JSON envelope.
    (error,) = _lines(console, "crm_plugin.faults")
    assert error["level"] == "ERROR"
    assert "RuntimeError: could not read +•••99" in error["exc_info"]
    assert response.json()["error"]["code"] == "server_error"
    assert [line["status"] for line in _lines(console, "crm_plugin.request")] == [500]


@pytest.mark.django_db
def test_a_phone_number_in_the_path_is_masked_in_the_request_line(agent_client, console):
    agent_client.get("/api/v1/customers/14155550123/twosv/")

    (line,) = _lines(console, "crm_plugin.request")
    assert line["path"] == "/api/v1/customers/+•••23/twosv/"
    assert "4155550123" not in console.getvalue()


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("req-1234.abc_DEF", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("bad id", False),
        ("evil\nINFO forged line", False),
        ('{"json":1}', False),
    ],
)
@pytest.mark.django_db
def test_a_sane_incoming_request_id_is_kept_anything_else_replaced(client, console, incoming, kept):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)

    (line,) = _lines(console, "crm_plugin.request")
    assert line["request_id"] == response["X-Request-ID"]
    assert (response["X-Request-ID"] == incoming) is kept
    if not kept:
        assert len(response["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_a_panel_link_token_in_the_query_string_is_never_logged(client, console):
    client.get("/panel/enter/", {"token": "signed-panel-link-value"})

    (line,) = _lines(console, "crm_plugin.request")
    assert line["path"] == "/panel/enter/"
    assert "signed-panel-link-value" not in console.getvalue()
