"""Responses carry only the fields the OpenAPI schema lists: an explicit, reviewed allow-list.

Three layers: the published schema closes every response object (``additionalProperties:
false``); the fields of every response object are snapshotted here, so a new field needs a
deliberate change to this file; and real responses of every operation, in rich states (locks,
lookups with attempts, hidden backups, every error), are validated against the schema. The
suite-wide fixture in tests/conftest.py validates every other API response of the suite too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from crm_plugin.crm.models import CrmIdentity
from tests import crm_signing, factories, openapi_check
from tests.builders import event
from twosv.models import LocalDeliveryRecord

pytestmark = pytest.mark.django_db

US = "+14155550123"
IN = "+919876543210"

# Every response object of the API and the fields it may carry. A field added to a serializer
# fails here first: check that it exposes nothing a caller could "confirm" (a full number, a
# code, a secret, a raw ATS payload), then add it.
RESPONSE_FIELDS = {
    "ActionOutput": {"label", "method", "url"},
    "AdvisoryOutput": {
        "code",
        "locked_until",
        "message",
        "method_id",
        "region",
        "severity",
        "since",
    },
    "AnswersOutput": {"has_backup_device_access", "has_device_access", "phone_number_changed"},
    "BatchOutput": {"results"},
    "BatchResultOutput": {"error", "event_id", "method", "status"},
    "CustomerOutput": {"customer_id", "display_name"},
    "ErrorDetailOutput": {"code", "field", "message"},
    "ErrorOutput": {"error"},
    "EventResultOutput": {"method", "status"},
    "LatestLookupOutput": {
        "created_at",
        "failure_reason",
        "finished_at",
        "id",
        "method_id",
        "status",
        "url",
        "verdict",
    },
    "LockOutput": {"locked_at", "locked_until", "reason", "seconds_remaining"},
    "LookupOutput": {
        "attempts",
        "created_at",
        "customer_id",
        "failure_reason",
        "finished_at",
        "id",
        "method_id",
        "period_start",
        "source",
        "started_at",
        "status",
        "tries",
        "verdict",
    },
    "LookupAttemptOutput": {"error_code", "provider", "sender", "sent_at", "status"},
    "MaskedPhoneOutput": {"changed_at", "country_code", "masked", "region"},
    "MethodOutput": {
        "hidden_from_crm",
        "id",
        "kind",
        "label",
        "lock",
        "phone",
        "resends",
        "role",
        "status",
    },
    "PanelLinkOutput": {"expires_at", "url"},
    "CrmAgentOutput": {"email", "name", "username"},
    "CrmTokenOutput": {"access_token", "agent", "expires_in", "token_type"},
    "QuestionOutput": {"field", "prompt"},
    "ResendsOutput": {"blocked", "count", "threshold"},
    "TimelineItemOutput": {"at", "detail", "error_code", "status", "type"},
    "TimelineOutput": {"items", "next_cursor"},
    "SessionOutput": {
        "answers",
        "closed_at",
        "created_at",
        "customer_id",
        "id",
        "method_id",
        "next_step",
        "outcome",
        "phone_number_matches",
        "phone_verification_tries_left",
    },
    "StateOutput": {
        "advisories",
        "customer",
        "latest_lookup",
        "methods",
        "next_step",
        "no_code_link_visible",
        "server_time",
    },
    "StepOutput": {
        "action",
        "alternatives",
        "article_section",
        "code",
        "instructions",
        "method_id",
        "question",
        "reason",
        "rule",
        "seconds_remaining",
        "title",
    },
    "VerifyPhoneOutput": {"match", "next_step", "tries_left"},
}


@pytest.fixture
def schema(client) -> dict[str, Any]:
    return client.get("/api/v1/schema/?format=json").json()


def _response_components(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        name: component
        for name, component in schema["components"]["schemas"].items()
        if not name.endswith("Request") and "properties" in component
    }


# ---------------------------------------------------------------------------------------------
# The schema itself
# ---------------------------------------------------------------------------------------------


def test_the_served_schema_is_the_one_responses_are_checked_against(schema):
    assert schema == openapi_check.openapi_schema()


def test_every_response_object_lists_exactly_the_approved_fields(schema):
    found = {name: set(c["properties"]) for name, c in _response_components(schema).items()}
    assert found == RESPONSE_FIELDS


def test_every_response_object_is_closed(schema):
    def objects(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if "properties" in node:
                yield where, node
            for key, value in node.items():
                yield from objects(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from objects(value, f"{where}[{i}]")

    for name, component in _response_components(schema).items():
        for where, node in objects(component, name):
            assert node.get("additionalProperties") is False, where


def test_every_operation_documents_its_errors_in_the_error_shape(schema):
    error_ref = {"$ref": "#/components/schemas/ErrorOutput"}
    for path, item in schema["paths"].items():
        if path in {"/api/v1/schema/", "/api/v1/docs/"}:
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            errors = {code: r for code, r in responses.items() if code.startswith("4")}
            assert {"401", "403"} <= set(errors), (method, path)
            if "{" in path:
                assert "404" in errors, (method, path)
            if method in {"post", "patch"}:
                assert {"400", "415"} <= set(errors), (method, path)
            for code, response in errors.items():
                assert response["content"]["application/json"]["schema"] == error_ref, (path, code)
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True


def test_every_operation_has_its_own_summary_and_description(schema):
    """Not a base class's docstring ("An APIView that writes an audit entry...")."""
    from crm_plugin.api.base import AuditedApiView

    internal = " ".join((AuditedApiView.__doc__ or "").split())
    for path, item in schema["paths"].items():
        if path in {"/api/v1/schema/", "/api/v1/docs/"}:
            continue
        for method, operation in item.items():
            description = " ".join(operation.get("description", "").split())
            assert operation.get("summary"), (method, path)
            assert description, (method, path)
            assert description != internal, (method, path)
            assert "APIView" not in description, (method, path)


def test_no_response_object_names_a_secret_or_a_full_number(schema):
    forbidden = {"phone_number", "e164", "to", "code_value", "otp", "secret", "token", "raw"}
    for name, fields in RESPONSE_FIELDS.items():
        assert not fields & forbidden, name


# ---------------------------------------------------------------------------------------------
# The checker catches what it must
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def state_response(agent_client) -> Any:
    customer = factories.CustomerFactory(customer_id="cust-allow")
    factories.MethodFactory(customer=customer, phone_number=US)
    response = agent_client.get("/api/v1/customers/cust-allow/twosv/")
    assert response.status_code == 200
    return response


def _problems(response: Any, body: Any) -> list[str]:
    return openapi_check.response_problems(
        "GET", response.request["PATH_INFO"], 200, "application/json", json.dumps(body).encode()
    )


def test_the_checker_passes_the_real_response(state_response):
    assert _problems(state_response, state_response.json()) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body: body.update(debug={"sql": "select"}),
        lambda body: body["methods"][0].update(phone_number=US),
        lambda body: body["methods"][0]["phone"].update(e164=US),
        lambda body: body["next_step"].update(otp="123456"),
        lambda body: body["customer"].update(email="ada@example.com"),
    ],
    ids=["top level", "method", "masked phone", "next step", "customer"],
)
def test_the_checker_fails_a_response_that_gains_a_field(state_response, mutate):
    body = state_response.json()
    mutate(body)

    problems = _problems(state_response, body)

    assert problems
    assert "Additional properties are not allowed" in problems[0]


def test_the_checker_fails_an_undocumented_status(state_response):
    problems = openapi_check.response_problems(
        "GET", "/api/v1/customers/x/twosv/", 418, "application/json", b"{}"
    )
    assert problems == [
        "GET /api/v1/customers/{customer_id}/twosv/ -> 418: status not documented "
        "(has ['200', '401', '403', '404', '429'])"
    ]


# ---------------------------------------------------------------------------------------------
# Every operation, in rich states, against the schema
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Check each response against the schema as it arrives; remember what was covered."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, response: Any, status: int) -> Any:
        method, path = response.request["REQUEST_METHOD"], response.request["PATH_INFO"]
        assert response.status_code == status, (method, path, response.content[:300])
        problems = openapi_check.response_problems(
            method, path, response.status_code, response.get("Content-Type", ""), response.content
        )
        assert problems == []
        found = openapi_check.find_operation(method, path)
        assert found is not None
        self.seen.add((method.lower(), found[0], status))
        return response.json()


def _event(event_id: str, type_: str, customer_id: str = "cust-rich", **data: Any) -> dict:
    at = timezone.now() - timedelta(minutes=30)
    return event(event_id, type_, at=at, customer_id=customer_id, **data)


@pytest.fixture
def rich_customer(producer_client, settings) -> Callable[[], None]:
    """A locked SMS primary, a hidden authenticator backup, an Indian voice backup, one removed."""
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 2
    events = [
        _event(
            "e1", "method_enrolled", method_id="m-sms", kind="sms", role="primary", phone_number=US
        ),
        _event("e2", "method_enrolled", method_id="m-app", kind="authenticator_app", role="backup"),
        _event(
            "e3", "method_enrolled", method_id="m-in", kind="voice", role="backup", phone_number=IN
        ),
        _event(
            "e4",
            "method_enrolled",
            method_id="m-old",
            kind="email",
            role="backup",
            email="ada@example.com",
        ),
        _event("e5", "method_removed", method_id="m-old"),
        *[_event(f"r{i}", "code_resend_requested", method_id="m-sms") for i in range(3)],
        _event("r9", "code_resend_requested", method_id="m-in"),
    ]
    response = producer_client.post("/api/v1/events/batch/", {"events": events}, format="json")
    assert response.status_code == 200
    assert {r["status"] for r in response.json()["results"]} == {"accepted"}, [
        r for r in response.json()["results"] if r["status"] != "accepted"
    ]
    return lambda: None


def test_every_operation_and_its_answers_match_the_schema(
    rich_customer,
    agent_client,
    producer_client,
    settings,
    schema,
    django_capture_on_commit_callbacks,
):
    check = Recorder()
    settings.TWOSV_PHONE_VERIFY_MAX_TRIES = 3
    agent, producer = agent_client, producer_client
    base = "/api/v1/customers/cust-rich/twosv/"

    # Events: accepted, duplicate, invalid, unknown method, forbidden type, media type, batch.
    created = check(
        producer.post(
            "/api/v1/events/", _event("e6", "code_sent", method_id="m-in"), format="json"
        ),
        201,
    )
    assert created["method"]["phone"]["masked"].endswith("10")
    check(
        producer.post(
            "/api/v1/events/", _event("e6", "code_sent", method_id="m-in"), format="json"
        ),
        200,
    )
    check(producer.post("/api/v1/events/", {"event_id": "x"}, format="json"), 400)
    check(
        producer.post(
            "/api/v1/events/", _event("e7", "code_sent", method_id="nope"), format="json"
        ),
        409,
    )
    check(
        producer.post(
            "/api/v1/events/", _event("e8", "lock_lifted", method_id="m-sms"), format="json"
        ),
        403,
    )
    check(producer.post("/api/v1/events/", "x=1", content_type="text/plain"), 415)
    check(
        agent.post("/api/v1/events/", _event("e9", "code_sent", method_id="m-in"), format="json"),
        403,
    )
    batch = check(
        producer.post(
            "/api/v1/events/batch/",
            {"events": [_event("e6", "code_sent", method_id="m-in"), {"event_id": 1}, "x"]},
            format="json",
        ),
        200,
    )
    assert [r["status"] for r in batch["results"]] == ["duplicate", "rejected", "rejected"]
    check(producer.post("/api/v1/events/batch/", {"events": "no"}, format="json"), 400)
    check(APIClient().post("/api/v1/events/batch/", {}, format="json"), 401)

    # State: locked primary, hidden backup, regional advisory, no lookup yet; unknown customer.
    state = check(agent.get(base), 200)
    methods = {m["id"]: m for m in state["methods"]}
    assert methods["m-sms"]["status"] == "locked"
    assert methods["m-sms"]["lock"]["seconds_remaining"] > 0
    assert methods["m-app"]["hidden_from_crm"] is True
    assert methods["m-old"]["status"] == "removed"
    assert {a["code"] for a in state["advisories"]} >= {"backup_hidden", "regional_provider"}
    check(agent.get("/api/v1/customers/nobody/twosv/"), 404)
    check(producer.get(base), 403)

    # Sessions: start, read, answer, switch method, verify (match, invalid, no phone, too many).
    check(agent.post(base + "sessions/", {"method_id": "m-old"}, format="json"), 409)
    check(agent.post(base + "sessions/", {"nope": 1}, format="json"), 400)
    check(agent.post("/api/v1/customers/nobody/twosv/sessions/", {}, format="json"), 404)
    session = check(agent.post(base + "sessions/", {"method_id": "m-in"}, format="json"), 201)
    url = f"/api/v1/twosv/sessions/{session['id']}/"
    check(agent.get(url), 200)
    check(agent.get("/api/v1/twosv/sessions/00000000-0000-4000-8000-000000000000/"), 404)
    answered = check(agent.patch(url, {"answers": {"has_device_access": True}}, format="json"), 200)
    assert answered["next_step"]["code"] == "verify_phone_number"
    check(agent.patch(url, {"answers": {"nope": True}}, format="json"), 400)
    verified = check(
        agent.post(url + "verify-phone/", {"phone_number": "098765 43210"}, format="json"), 200
    )
    assert verified["match"] is True
    check(agent.post(url + "verify-phone/", {"phone_number": "12"}, format="json"), 400)
    check(agent.patch(url, {"method_id": "m-app"}, format="json"), 200)
    check(agent.post(url + "verify-phone/", {"phone_number": US}, format="json"), 409)
    check(agent.patch(url, {"method_id": "m-sms"}, format="json"), 200)
    check(agent.post(url + "verify-phone/", {"phone_number": US}, format="json"), 200)
    check(agent.post(url + "verify-phone/", {"phone_number": US}, format="json"), 429)

    # Lookups: a new one runs on commit against the local ATS; fresh reuse; no codes; unknown.
    LocalDeliveryRecord.objects.create(
        to=IN,
        sender="+14803605516",
        provider="twilio",
        status="undelivered",
        error_code=30003,
        created_at=timezone.now() - timedelta(minutes=20),
        updated_at=timezone.now() - timedelta(minutes=19),
        external_id="SM1",
    )
    with django_capture_on_commit_callbacks(execute=True):
        requested = check(
            agent.post(base + "delivery-lookups/", {"method_id": "m-in"}, format="json"), 202
        )
    lookup = check(agent.get(f"/api/v1/twosv/delivery-lookups/{requested['id']}/"), 200)
    assert lookup["status"] == "succeeded"
    assert lookup["verdict"] == "regional_provider_issue"
    assert lookup["attempts"][0]["error_code"] == 30003
    check(agent.post(base + "delivery-lookups/", {"method_id": "m-in"}, format="json"), 200)
    check(agent.post(base + "delivery-lookups/", {"method_id": "m-app"}, format="json"), 409)
    check(agent.post(base + "delivery-lookups/", {"force": "maybe"}, format="json"), 400)
    check(agent.get("/api/v1/twosv/delivery-lookups/00000000-0000-4000-8000-000000000000/"), 404)
    check(producer.get(f"/api/v1/twosv/delivery-lookups/{requested['id']}/"), 403)

    # The state with a latest lookup for P, from the session's point of view; closing.
    check(agent.patch(url, {"method_id": "m-in"}, format="json"), 200)
    check(agent.get(url), 200)
    closed = check(
        agent.post(url + "close/", {"outcome": "escalated", "helpful": False}, format="json"), 200
    )
    assert closed["outcome"] == "escalated"
    check(agent.post(url + "close/", {"outcome": "resolved"}, format="json"), 409)
    check(agent.post(url + "close/", {"outcome": "maybe"}, format="json"), 400)

    # The timeline: events, the lookup's attempt with its error code in words.
    timeline = check(agent.get(base + "methods/m-in/timeline/"), 200)
    assert {item["type"] for item in timeline["items"]} >= {"code_sent", "delivery_attempt"}
    check(agent.get(base + "methods/m-in/timeline/?limit=1"), 200)
    check(agent.get(base + "methods/m-in/timeline/?since=soon"), 400)
    check(agent.get(base + "methods/nope/timeline/"), 404)
    check(producer.get(base + "methods/m-in/timeline/"), 403)

    # Panel links.
    check(agent.post("/api/v1/panel-links/", {"customer_id": "cust-rich"}, format="json"), 201)
    check(agent.post("/api/v1/panel-links/", {}, format="json"), 400)
    check(agent.post("/api/v1/panel-links/", {"customer_id": "nobody"}, format="json"), 404)

    # The CRM token exchange (docs/integrations.md): exchanged, a bad assertion, no such agent.
    crm_signing.configure_crm(settings)
    agent_user = User.objects.get(username="agent")
    CrmIdentity.objects.create(issuer=crm_signing.ISSUER, subject="crm-agent-1", user=agent_user)
    crm, exchange_url = APIClient(), "/api/v1/auth/crm-token/"
    check(crm.post(exchange_url, {"assertion": crm_signing.generic()}, format="json"), 200)
    check(crm.post(exchange_url, {"assertion": "not-a-jwt"}, format="json"), 401)
    check(crm.post(exchange_url, {"assertion": crm_signing.generic(sub="x")}, format="json"), 403)

    # Every operation of the schema was exercised, each with a success and with an error.
    operations = {(m, p) for p, item in schema["paths"].items() for m in item}
    operations -= {("get", "/api/v1/schema/"), ("get", "/api/v1/docs/")}
    succeeded = {(m, p) for m, p, status in check.seen if status < 300}
    failed = {(m, p) for m, p, status in check.seen if status >= 400}
    assert operations - succeeded == set()
    assert operations - failed == set()


@pytest.mark.parametrize("locked", [True, False], ids=["locked-with-phone", "app-no-lock"])
def test_the_written_out_method_rendering_equals_the_declared_fields(locked):
    """MethodOutput renders by hand for speed; it must say exactly what its fields say."""
    from rest_framework import serializers as drf

    from crm_plugin.api.representations import MethodOutput
    from twosv.selectors import method_state

    now = timezone.now()
    if locked:
        method = factories.MethodFactory(
            phone_number=IN,
            label="Work phone",
            resend_times=[(now - timedelta(minutes=m)).isoformat() for m in range(3)],
            locked_at=now - timedelta(hours=1),
            locked_until=now + timedelta(hours=23),
        )
    else:
        method = factories.AuthenticatorMethodFactory()
    state = method_state(method, now=now)
    assert (state.lock is not None) is locked

    output = MethodOutput()

    assert output.to_representation(state) == drf.Serializer.to_representation(output, state)
