"""Schemathesis fuzzes every operation of the OpenAPI schema through the WSGI app.

Each operation gets generated input, valid (positive) and invalid (negative), sent with a
support_agent or an event_producer token, at real object ids half of the time (so the views'
insides run, not only their 404s). Every answer must not be a 5xx, must have a documented
status and content type, and must match its documented body and headers. Bounded and
derandomized: it runs the same cases every time, well under a minute.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import factories
from twosv import services
from twosv.models import Event, Method

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = 25  # per operation and generation mode
MIN_CASES = 400  # 12 operations x 25 valid + 9 x 25 invalid, less what hypothesis can't vary
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
PRODUCER_PATHS = ("/api/v1/events/",)


@pytest.fixture(autouse=True)
def _no_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Throttles are tested in test_throttling.py; here they'd only cut the fuzzing short.
    rates = dict.fromkeys(ScopedRateThrottle.THROTTLE_RATES, "1000000/min")
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)


@pytest.fixture
def api_schema(db: None) -> Any:
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from crm_plugin.wsgi import application

    # Called straight through WSGI, each request would close the test's connection (inside
    # the test transaction autocommit is off, which Django reads as "unusable"); Django's own
    # test client disconnects these handlers the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def known_ids(agent, django_capture_on_commit_callbacks) -> dict[str, str]:
    """Real objects for the path parameters: a customer with an SMS method, a session, a lookup."""
    customer = factories.CustomerFactory(customer_id="cust-fuzz")
    factories.MethodFactory(customer=customer, method_id="m-fuzz", phone_number="+14155550123")
    factories.AuthenticatorMethodFactory(customer=customer, method_id="m-fuzz-app")
    session = services.session_start(customer=customer, agent=agent)
    with django_capture_on_commit_callbacks(execute=False):
        lookup, _ = services.lookup_request(customer=customer, actor=agent)
    return {
        "customer_id": "cust-fuzz",
        "session_id": str(session.id),
        "lookup_id": str(lookup.id),
        "method_id": "m-fuzz",
    }


@pytest.fixture
def tokens(agent, producer) -> dict[str, str]:
    return {
        "agent": Token.objects.get_or_create(user=agent)[0].key,
        "producer": Token.objects.get_or_create(user=producer)[0].key,
    }


class Fuzzing:
    """Run the generated cases of one operation and keep count of what came back."""

    def __init__(self, known_ids: dict[str, str], tokens: dict[str, str]) -> None:
        self.known_ids = known_ids
        self.tokens = tokens
        self.cases: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.bodies: list[bytes] = []
        self.no_negative_case: list[str] = []

    def run(self, operation: Any, mode: GenerationMode) -> None:
        own_role = "producer" if operation.path.startswith(PRODUCER_PATHS) else "agent"

        @hypothesis.given(
            case=operation.as_strategy(generation_mode=mode),
            at_known_ids=st.booleans(),
            # Mostly the operation's own role; sometimes the other one, which must get 403.
            role=st.sampled_from([own_role, own_role, own_role, "agent", "producer"]),
        )
        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def one_case(case: Any, at_known_ids: bool, role: str) -> None:
            if at_known_ids and case.path_parameters:
                case.path_parameters = {
                    name: self.known_ids.get(name, value)
                    for name, value in case.path_parameters.items()
                }
            case.headers = {**(case.headers or {}), "Authorization": f"Token {self.tokens[role]}"}
            response = case.call()
            case.validate_response(response, checks=CHECKS)
            self.cases[f"{operation.label} ({mode.value})"] += 1
            self.statuses[response.status_code] += 1
            self.bodies.append(response.content)

        if mode is GenerationMode.NEGATIVE and not _can_be_invalid(operation):
            self.no_negative_case.append(operation.label)
            return
        one_case()


def _can_be_invalid(operation: Any) -> bool:
    """Return whether any input of the operation has a shape to break: a body or a typed id.

    A free-text path parameter and nothing else (GET customers/{customer_id}/twosv/) has no
    invalid value; hypothesis would search for one in vain.
    """
    constrained = [
        parameter
        for parameter in operation.path_parameters
        if set(parameter.definition.get("schema", {})) - {"type"}
    ]
    return bool(operation.body) or bool(constrained)


def test_every_operation_survives_generated_input_and_answers_as_documented(
    api_schema, known_ids, tokens, capsys
):
    fuzzing = Fuzzing(known_ids, tokens)
    operations = [result.ok() for result in api_schema.get_all_operations()]

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzing.run(operation, mode)

    total = sum(fuzzing.cases.values())
    with capsys.disabled():
        print(f"\nschemathesis: {total} generated cases over {len(operations)} operations")
        for label, count in sorted(fuzzing.cases.items()):
            print(f"  {count:4d}  {label}")
        print(f"  statuses: {dict(sorted(fuzzing.statuses.items()))}")
        print(f"  no negative case possible: {sorted(fuzzing.no_negative_case)}")
    assert len(operations) >= 11
    assert {label.rsplit(" (", 1)[0] for label in fuzzing.cases} == {op.label for op in operations}
    assert total >= MIN_CASES
    assert not [status for status in fuzzing.statuses if status >= 500]
    # The fuzzing reached the views' insides, not only the doors.
    assert {200, 201, 400, 403, 404} <= set(fuzzing.statuses)
    _assert_no_full_number_in(fuzzing.bodies)


def _assert_no_full_number_in(bodies: list[bytes]) -> None:
    """No answer carried a stored number, including the ones the fuzzer itself enrolled."""
    numbers = set(Method.objects.exclude(phone_number="").values_list("phone_number", flat=True))
    for data in Event.objects.values_list("data", flat=True):
        if isinstance(data.get("phone_number"), str):
            numbers.add(data["phone_number"])
    forms = {form for number in numbers for form in (number, number.lstrip("+")) if len(form) >= 7}
    leaks = [form for form in forms for body in bodies if form.encode() in body]
    assert not leaks, leaks[:5]
