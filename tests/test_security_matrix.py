"""Who may call what (docs/SPEC.md §5), and the audit trail every refusal and agent action leaves.

The matrix: every API operation x {no credentials, bad token, agent, producer, superuser, staff
without a role, an agent's Bearer access token (docs/SPEC.md §9), an expired Bearer token} gives
the status docs/SPEC.md says, and a wrong role leaves an audit entry. Agents
never write events; producers never read state, sessions or lookups; nobody reaches another
agent's session. Every route of crm_plugin/api/urls.py must have a row here (a guard test).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from crm_plugin.api import urls as api_urls
from crm_plugin.crm.models import CrmIdentity
from crm_plugin.crm.tokens import access_token_issue
from tests import crm_signing, factories
from tests.builders import event, token_client
from twosv import services
from twosv.models import (
    AuditEntry,
    Customer,
    DeliveryLookup,
    Event,
    Method,
    TroubleshootingSession,
)

pytestmark = pytest.mark.django_db

PHONE = "+14155550123"
CLIENT_IP = "203.0.113.7"
SPOOFED_IP = "198.51.100.66"
_SECOND = timedelta(seconds=1)
ROLES = (
    "none",
    "bad_token",
    "agent",
    "producer",
    "staff",
    "plain_staff",
    "bearer_agent",
    "bearer_expired",
)


# ---------------------------------------------------------------------------------------------
# The world every call runs against
# ---------------------------------------------------------------------------------------------


@dataclass
class World:
    customer: Customer
    method: Method
    session: TroubleshootingSession
    lookup: DeliveryLookup
    clients: dict[str, APIClient] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)


def _token_client(user: User) -> APIClient:
    return token_client(user, REMOTE_ADDR=CLIENT_IP, HTTP_X_FORWARDED_FOR=SPOOFED_IP)


@pytest.fixture
def world(agent, producer, staff, settings, django_capture_on_commit_callbacks) -> World:
    plain_staff = factories.UserFactory(username="plain-staff", is_staff=True)
    customer = factories.CustomerFactory(customer_id="cust-matrix")
    method = factories.MethodFactory(customer=customer, method_id="m-matrix", phone_number=PHONE)
    session = services.session_start(customer=customer, agent=agent)
    with django_capture_on_commit_callbacks(execute=False):
        lookup, _ = services.lookup_request(customer=customer, actor=agent)
    AuditEntry.objects.all().delete()  # the set-up's own audit rows; each test counts its own
    users = {"agent": agent, "producer": producer, "staff": staff, "plain_staff": plain_staff}
    clients = {role: _token_client(user) for role, user in users.items()}
    clients["none"] = APIClient(REMOTE_ADDR=CLIENT_IP)
    clients["bad_token"] = APIClient(REMOTE_ADDR=CLIENT_IP)
    clients["bad_token"].credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    # The Bearer column: the agent through a CRM access token, and one that has expired.
    crm_signing.configure_crm(settings)
    CrmIdentity.objects.create(issuer=crm_signing.ISSUER, subject="crm-agent-1", user=agent)
    for role, ttl in (("bearer_agent", timedelta(minutes=15)), ("bearer_expired", -_SECOND)):
        settings.CRM_ACCESS_TOKEN_TTL = ttl
        issued = access_token_issue(user=agent, identity=None, issuer=crm_signing.ISSUER)
        clients[role] = APIClient(REMOTE_ADDR=CLIENT_IP, HTTP_X_FORWARDED_FOR=SPOOFED_IP)
        clients[role].credentials(HTTP_AUTHORIZATION=f"Bearer {issued.raw}")
    settings.CRM_ACCESS_TOKEN_TTL = timedelta(minutes=15)
    users["bearer_agent"] = agent
    AuditEntry.objects.all().delete()
    return World(customer, method, session, lookup, clients, users)


def _event(event_id: str, type_: str = "method_enrolled", **data: Any) -> dict[str, Any]:
    """An event of cust-matrix a minute ago; by default it enrols a new authenticator app."""
    if type_ == "method_enrolled":
        data = {"method_id": f"m-{event_id}", "kind": "authenticator_app", "role": "backup"}
    at = timezone.now() - timedelta(minutes=1)
    return event(event_id, type_, at=at, customer_id="cust-matrix", **data)


# ---------------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------------

AGENT_ONLY = {
    "none": 401,
    "bad_token": 401,
    "bearer_expired": 401,
    "producer": 403,
    "plain_staff": 403,
}
PRODUCER_ONLY = {
    "none": 401,
    "bad_token": 401,
    "bearer_expired": 401,
    "agent": 403,
    "staff": 403,
    "plain_staff": 403,
}
ANYONE = dict.fromkeys(ROLES, 200)


@dataclass(frozen=True)
class Operation:
    route: str  # the URL pattern's name
    method: str
    path: str  # as the OpenAPI schema writes it
    expected: dict[str, int]
    body: Callable[[World], Any] | None = None
    audited_read: str | None = None  # the audit action a successful call writes

    def url(self, world: World) -> str:
        return self.path.format(
            customer_id=world.customer.customer_id,
            session_id=world.session.id,
            lookup_id=world.lookup.id,
            method_id=world.method.method_id,
        )


OPERATIONS = [
    Operation(
        "customer-twosv-state",
        "get",
        "/api/v1/customers/{customer_id}/twosv/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        audited_read="state_read",
    ),
    Operation(
        "session-create",
        "post",
        "/api/v1/customers/{customer_id}/twosv/sessions/",
        {**AGENT_ONLY, "agent": 201, "staff": 201},
        body=lambda w: {"answers": {"has_device_access": True}},
        audited_read="session_start",
    ),
    Operation(
        "session-detail",
        "get",
        "/api/v1/twosv/sessions/{session_id}/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
    ),
    Operation(
        "session-detail",
        "patch",
        "/api/v1/twosv/sessions/{session_id}/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        body=lambda w: {"answers": {"has_device_access": True}},
        audited_read="session_update",
    ),
    Operation(
        "session-verify-phone",
        "post",
        "/api/v1/twosv/sessions/{session_id}/verify-phone/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        body=lambda w: {"phone_number": "(415) 555-0123"},
        audited_read="phone_verify",
    ),
    Operation(
        "session-close",
        "post",
        "/api/v1/twosv/sessions/{session_id}/close/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        body=lambda w: {"outcome": "resolved", "helpful": True},
        audited_read="session_close",
    ),
    Operation(
        "delivery-lookup-request",
        "post",
        "/api/v1/customers/{customer_id}/twosv/delivery-lookups/",
        # The set-up's lookup is still pending: the agent gets it back (200), not a new one.
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        body=lambda w: {},
        audited_read="lookup_request",
    ),
    Operation(
        "delivery-lookup-detail",
        "get",
        "/api/v1/twosv/delivery-lookups/{lookup_id}/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        audited_read="lookup_read",
    ),
    Operation(
        "method-timeline",
        "get",
        "/api/v1/customers/{customer_id}/twosv/methods/{method_id}/timeline/",
        {**AGENT_ONLY, "agent": 200, "staff": 200},
        audited_read="timeline_read",
    ),
    Operation(
        "panel-link-create",
        "post",
        "/api/v1/panel-links/",
        # The link signs its holder in to the panel: agents only, not even superusers.
        {**AGENT_ONLY, "agent": 201, "staff": 403},
        body=lambda w: {"customer_id": w.customer.customer_id},
        audited_read="panel_link_create",
    ),
    Operation(
        "event-create",
        "post",
        "/api/v1/events/",
        {**PRODUCER_ONLY, "producer": 201},
        body=lambda w: _event("ev-matrix"),
    ),
    Operation(
        "event-batch",
        "post",
        "/api/v1/events/batch/",
        {**PRODUCER_ONLY, "producer": 200},
        body=lambda w: {"events": [_event("ev-matrix-batch")]},
    ),
    Operation(
        "crm-token",
        "post",
        "/api/v1/auth/crm-token/",
        # Anonymous: the assertion is the credential; a bad credential sent along is still 401.
        {**ANYONE, "bad_token": 401, "bearer_expired": 401},
        body=lambda w: {"assertion": crm_signing.generic()},
    ),
    Operation("schema", "get", "/api/v1/schema/?format=json", ANYONE),
    Operation("docs", "get", "/api/v1/docs/", ANYONE),
]

CASES = [
    pytest.param(op, role, id=f"{op.method.upper()} {op.route} as {role}")
    for op in OPERATIONS
    for role in ROLES
]


def call(world: World, op: Operation, role: str, client: APIClient | None = None) -> Any:
    client = client or world.clients[role]
    kwargs: dict[str, Any] = {}
    if op.body is not None:
        kwargs = {"data": json.dumps(op.body(world)), "content_type": "application/json"}
    return getattr(client, op.method)(op.url(world), **kwargs)


@pytest.mark.parametrize(("op", "role"), CASES)
def test_each_operation_answers_each_role_as_the_spec_says(world, op, role):
    response = call(world, op, role)

    # A Bearer token of an agent opens what the agent's own token does.
    expected = op.expected.get(role, op.expected.get("agent")) if role == "bearer_agent" else None
    expected = expected if expected is not None else op.expected[role]
    assert response.status_code == expected, response.content[:300]
    if expected == 401:
        # Token authentication is listed first: the challenge names it.
        assert response["WWW-Authenticate"] == "Token"
        assert response.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
        assert not AuditEntry.objects.exists()
    elif expected == 403:
        assert response.json()["error"]["code"] == "permission_denied"
        entry = AuditEntry.objects.get()
        assert entry.action == "permission_denied"
        assert entry.result == "refused"
        assert entry.actor == world.users[role]
        assert entry.request_id == response["X-Request-ID"]
        assert entry.client_ip == CLIENT_IP  # REMOTE_ADDR, never the X-Forwarded-For header
    elif op.audited_read:
        entry = AuditEntry.objects.get(action=op.audited_read)
        assert entry.actor == world.users[role]
        assert entry.customer_ref == world.customer.customer_id
        assert entry.request_id == response["X-Request-ID"]
        assert entry.client_ip == CLIENT_IP


def _api_routes(patterns: list[Any], prefix: str = "") -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            names |= _api_routes(pattern.url_patterns, prefix)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(pattern.name)
    return names


def test_every_api_route_has_a_row_in_the_matrix():
    covered = {op.route for op in OPERATIONS}
    missing = _api_routes(api_urls.urlpatterns) - covered
    assert not missing, f"add these routes to the security matrix: {sorted(missing)}"


def test_every_operation_of_the_schema_has_a_row_in_the_matrix(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    documented = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert documented <= {(op.method, op.path) for op in OPERATIONS}


# ---------------------------------------------------------------------------------------------
# Credentials: tokens of inactive users, sessions and CSRF
# ---------------------------------------------------------------------------------------------


def test_an_inactive_users_token_is_refused(world):
    world.users["agent"].is_active = False
    world.users["agent"].save()

    response = world.clients["agent"].get(f"/api/v1/customers/{world.customer.customer_id}/twosv/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_logged_in_agent_reads_with_the_session_but_writes_only_with_a_csrf_token(world):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.users["agent"])
    url = f"/api/v1/customers/{world.customer.customer_id}/twosv/sessions/"

    assert client.get(f"/api/v1/customers/{world.customer.customer_id}/twosv/").status_code == 200
    forged = client.post(url, {}, format="json")

    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]["message"]
    assert TroubleshootingSession.objects.count() == 1


def test_a_producer_session_cannot_post_events_without_csrf(world):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.users["producer"])

    response = client.post("/api/v1/events/", _event("ev-csrf"), format="json")

    assert response.status_code == 403
    assert not Event.objects.filter(event_id="ev-csrf").exists()


# ---------------------------------------------------------------------------------------------
# BOLA: another agent's session is as good as nonexistent; customer ids can't be probed
# ---------------------------------------------------------------------------------------------

SESSION_CALLS = [
    ("get", "", None),
    ("patch", "", {"answers": {"has_device_access": False}}),
    ("post", "verify-phone/", {"phone_number": PHONE}),
    ("post", "close/", {"outcome": "resolved"}),
]


@pytest.mark.parametrize(("method", "suffix", "body"), SESSION_CALLS)
def test_another_agents_session_answers_404_like_an_unknown_one(world, method, suffix, body):
    other = factories.UserFactory(username="agent-2", groups=["support_agent"])
    client = _token_client(other)
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body else {}

    theirs = getattr(client, method)(
        f"/api/v1/twosv/sessions/{world.session.id}/{suffix}", **kwargs
    )
    unknown = getattr(client, method)(
        f"/api/v1/twosv/sessions/00000000-0000-4000-8000-000000000000/{suffix}", **kwargs
    )

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    session = TroubleshootingSession.objects.get(pk=world.session.pk)
    assert session.closed_at is None
    assert session.phone_verify_tries == 0
    assert session.has_device_access is None


@pytest.mark.parametrize(
    "customer_id",
    ["nobody", "x" * 65, "a'b OR 1=1", "%F0%9F%98%80", "..", "cust%00matrix", "%E2%80%AEcust"],
)
@pytest.mark.parametrize("suffix", ["", "sessions/", "delivery-lookups/"])
def test_unknown_and_malformed_customer_ids_answer_the_same_404(world, customer_id, suffix):
    client = world.clients["agent"]
    method = "get" if not suffix else "post"
    url = f"/api/v1/customers/{customer_id}/twosv/{suffix}"

    response = getattr(client, method)(url, {}, format="json") if suffix else client.get(url)

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "unknown_customer", "message": "No customer with this id."}
    }


@pytest.mark.parametrize(
    "op",
    [op for op in OPERATIONS if "{customer_id}" in op.path],
    ids=lambda op: f"{op.method.upper()} {op.route}",
)
def test_every_customer_id_view_goes_through_access_customer(world, op, monkeypatch):
    from django.urls import resolve

    from twosv import selectors

    view_module = __import__(
        resolve(op.url(world)).func.view_class.__module__, fromlist=["access_customer"]
    )
    seen: list[str] = []

    def spying(name: str):
        original = getattr(selectors, name)

        def spy(*, customer_id: str, **kwargs):
            seen.append(customer_id)
            return original(customer_id=customer_id, **kwargs)

        return spy

    # The access functions: access_customer, or access_customer_state for the state read.
    spied = [
        name for name in ("access_customer", "access_customer_state") if hasattr(view_module, name)
    ]
    assert spied, f"{view_module.__name__} imports no access function"
    for name in spied:
        monkeypatch.setattr(view_module, name, spying(name))

    response = call(world, op, "agent")

    assert response.status_code < 300
    assert seen == [world.customer.customer_id]


def test_a_lookup_read_reaches_its_customer_through_access_customer(world, monkeypatch):
    from twosv import selectors
    from twosv.services import audited_reads

    seen: list[str] = []

    def spy(*, customer_id: str) -> Customer:
        seen.append(customer_id)
        return selectors.access_customer(customer_id=customer_id)

    monkeypatch.setattr(audited_reads, "access_customer", spy)

    response = world.clients["agent"].get(f"/api/v1/twosv/delivery-lookups/{world.lookup.id}/")

    assert response.status_code == 200
    assert seen == [world.customer.customer_id]


# ---------------------------------------------------------------------------------------------
# Audit: what each action leaves, and what it never holds
# ---------------------------------------------------------------------------------------------


def _audit_text() -> str:
    """Every audit row, every column, as one string (details as JSON)."""
    rows = AuditEntry.objects.values()
    return "\n".join(json.dumps(row, default=str) for row in rows)


@pytest.mark.parametrize(
    ("typed", "result"),
    [
        ("(415) 555-0123", "match"),
        ("+1 415 555 0199", "mismatch"),
        ("+1 (415) 555-01", "invalid"),
    ],
)
def test_phone_verification_audits_the_result_never_the_number_typed(world, typed, result):
    url = f"/api/v1/twosv/sessions/{world.session.id}/verify-phone/"

    response = world.clients["agent"].post(url, {"phone_number": typed}, format="json")

    assert response.status_code == (400 if result == "invalid" else 200)
    entry = AuditEntry.objects.get(action="phone_verify")
    assert entry.result == result
    assert entry.actor == world.users["agent"]
    assert entry.customer_ref == world.customer.customer_id
    assert entry.object_type == "TroubleshootingSession"
    assert entry.object_id == str(world.session.id)
    assert entry.request_id == response["X-Request-ID"]
    assert entry.client_ip == CLIENT_IP
    text = _audit_text()
    digits_only = re.sub(r"\D", "", text)
    for form in {typed, re.sub(r"\D", "", typed), PHONE, PHONE.lstrip("+"), "4155550123"}:
        assert form not in text
    # Not even spread out over punctuation or split across fields.
    assert re.sub(r"\D", "", typed)[-7:] not in digits_only


def test_too_many_tries_is_audited_and_answers_429(world, settings):
    settings.TWOSV_PHONE_VERIFY_MAX_TRIES = 2
    url = f"/api/v1/twosv/sessions/{world.session.id}/verify-phone/"
    client = world.clients["agent"]

    for _ in range(2):
        assert client.post(url, {"phone_number": "+14155550100"}, format="json").status_code == 200
    response = client.post(url, {"phone_number": PHONE}, format="json")

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_tries"
    results = list(
        AuditEntry.objects.filter(action="phone_verify")
        .order_by("id")
        .values_list("result", flat=True)
    )
    assert results == ["mismatch", "mismatch", "too_many_tries"]
    assert PHONE.lstrip("+") not in _audit_text()


def test_session_changes_are_audited_with_request_id_and_remote_addr(world):
    client = world.clients["agent"]
    created = client.post(
        f"/api/v1/customers/{world.customer.customer_id}/twosv/sessions/",
        {"method_id": "m-matrix"},
        format="json",
        HTTP_X_REQUEST_ID="req-start-1",
    )
    session_url = f"/api/v1/twosv/sessions/{created.json()['id']}/"
    client.patch(
        session_url,
        {"answers": {"has_device_access": False}},
        format="json",
        HTTP_X_REQUEST_ID="r2",
    )
    client.post(session_url + "close/", {"outcome": "escalated"}, format="json")

    rows = list(AuditEntry.objects.order_by("id"))
    assert [(row.action, row.result) for row in rows] == [
        ("session_start", "ok"),
        ("session_update", "ok"),
        ("session_close", "escalated"),
    ]
    assert [row.request_id for row in rows[:2]] == ["req-start-1", "r2"]
    for row in rows:
        assert row.actor_username == "agent"
        assert row.customer_ref == "cust-matrix"
        assert row.object_id == created.json()["id"]
        assert row.client_ip == CLIENT_IP
        assert row.created_at is not None


def test_agent_posting_an_event_is_refused_audited_and_stores_nothing(world):
    before = Event.objects.count()

    response = world.clients["agent"].post("/api/v1/events/", _event("ev-agent"), format="json")

    assert response.status_code == 403
    assert Event.objects.count() == before
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.result, entry.actor_username) == (
        "permission_denied",
        "refused",
        "agent",
    )
    assert entry.details["view"] == "EventCreateApi"


def test_producer_posting_lock_lifted_is_403_and_audited(world):
    body = _event("ev-lift", "lock_lifted", method_id="m-matrix")

    response = world.clients["producer"].post("/api/v1/events/", body, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_event_type"
    assert not Event.objects.filter(event_id="ev-lift").exists()
    entry = AuditEntry.objects.get()
    assert entry.action == "permission_denied"
    assert entry.result == "refused"
    assert entry.actor_username == "producer"
    assert entry.customer_ref == "cust-matrix"
    assert entry.details["code"] == "forbidden_event_type"
    assert entry.details["event_type"] == "lock_lifted"
    assert entry.request_id == response["X-Request-ID"]
    assert entry.client_ip == CLIENT_IP


def test_lock_lifted_inside_a_batch_is_rejected_and_audited_the_rest_goes_through(world):
    body = {
        "events": [
            _event("ev-lift-b", "lock_lifted", method_id="m-matrix"),
            _event("ev-ok-b"),
        ]
    }

    response = world.clients["producer"].post("/api/v1/events/batch/", body, format="json")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "accepted"]
    assert results[0]["error"]["code"] == "forbidden_event_type"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.details["event_id"]) == ("permission_denied", "ev-lift-b")
    assert entry.request_id == response["X-Request-ID"]


def test_admin_lock_lift_is_audited_with_the_remote_addr(world, client, settings):
    now = timezone.now()
    Method.objects.filter(pk=world.method.pk).update(
        locked_at=now - timedelta(hours=1), locked_until=now + timedelta(hours=23)
    )
    client.force_login(world.users["staff"])

    response = client.post(
        reverse("admin:twosv_method_changelist"),
        {
            "action": "lift_lock",
            "_selected_action": [world.method.pk],
            "apply": "yes",
            "reason": "Identity proofed by video",
        },
        REMOTE_ADDR=CLIENT_IP,
        HTTP_X_FORWARDED_FOR=SPOOFED_IP,
        HTTP_X_REQUEST_ID="req-admin-lift",
    )

    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="lock_lift")
    assert entry.result == "lifted"
    assert entry.actor_username == "admin"
    assert entry.customer_ref == "cust-matrix"
    assert entry.request_id == "req-admin-lift"
    assert entry.client_ip == CLIENT_IP


# ---------------------------------------------------------------------------------------------
# Audit rows can't be changed or deleted: not in the admin (superusers included), not by the API
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def audit_entry(world) -> AuditEntry:
    world.clients["agent"].get(f"/api/v1/customers/{world.customer.customer_id}/twosv/")
    return AuditEntry.objects.get(action="state_read")


def test_audit_entry_change_post_in_the_admin_is_refused(world, client, audit_entry):
    client.force_login(world.users["staff"])
    url = reverse("admin:twosv_auditentry_change", args=[audit_entry.pk])

    response = client.post(url, {"action": "forged", "result": "ok", "actor_username": "x"})

    assert response.status_code == 403
    audit_entry.refresh_from_db()
    assert (audit_entry.action, audit_entry.actor_username) == ("state_read", "agent")


def test_audit_entry_delete_in_the_admin_is_refused(world, client, audit_entry):
    client.force_login(world.users["staff"])
    url = reverse("admin:twosv_auditentry_delete", args=[audit_entry.pk])

    assert client.get(url).status_code == 403
    assert client.post(url, {"post": "yes"}).status_code == 403
    bulk = client.post(
        reverse("admin:twosv_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [audit_entry.pk], "post": "yes"},
    )
    assert bulk.status_code in {200, 302}
    assert AuditEntry.objects.filter(pk=audit_entry.pk).exists()


def test_audit_entries_cannot_be_added_in_the_admin(world, client):
    client.force_login(world.users["staff"])

    response = client.post(reverse("admin:twosv_auditentry_add"), {"action": "forged"})

    assert response.status_code == 403
    assert not AuditEntry.objects.filter(action="forged").exists()


def test_the_api_has_no_way_to_write_audit_rows(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    assert not [path for path in schema["paths"] if "audit" in path.lower()]


@pytest.mark.parametrize("method", ["put", "delete"])
@pytest.mark.parametrize(
    "op", [op for op in OPERATIONS if op.route not in {"schema", "docs"}], ids=lambda o: o.route
)
def test_undocumented_methods_are_405_for_the_right_role(world, op, method):
    role = "producer" if op.route.startswith("event") else "agent"
    before = AuditEntry.objects.count()

    response = getattr(world.clients[role], method)(op.url(world))

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert AuditEntry.objects.count() == before


# ---------------------------------------------------------------------------------------------
# Twilio's status callbacks: outside /api/ and its roles; only Twilio's signature opens them
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_the_twilio_webhook_ignores_api_credentials_and_wants_a_signature(world, role, twilio_ats):
    from twosv.receipt_models import DeliveryReceipt

    body = "MessageSid=SM" + "0" * 32 + "&MessageStatus=delivered&To=%2B14155550123"

    response = world.clients[role].post(
        "/webhooks/twilio/message-status/",
        body,
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not DeliveryReceipt.objects.exists()
    # A forged callback is not an agent's refusal: nothing in the audit trail.
    assert not AuditEntry.objects.exists()


def test_the_twilio_webhook_is_not_part_of_the_api_schema(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    assert not [path for path in schema["paths"] if "webhook" in path]
