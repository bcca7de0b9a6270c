"""``POST /api/v1/auth/crm-token/`` and the Bearer access tokens it hands out (docs/SPEC.md §9)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from rest_framework.test import APIClient

from crm_plugin.crm import services as crm_services
from crm_plugin.crm.identities import identity_credential, identity_credential_is_current
from crm_plugin.crm.models import AccessToken, CrmIdentity
from crm_plugin.crm.tokens import token_hash
from tests import crm_signing as signing
from tests import factories
from twosv import services
from twosv.models import AuditEntry

pytestmark = pytest.mark.django_db

URL = "/api/v1/auth/crm-token/"
CLIENT_IP = "203.0.113.9"


@pytest.fixture(autouse=True)
def _crm(settings) -> None:
    signing.configure_crm(settings)


@pytest.fixture
def linked(agent) -> CrmIdentity:
    return CrmIdentity.objects.create(issuer=signing.ISSUER, subject="crm-agent-1", user=agent)


def exchange(assertion: str, client: APIClient | None = None) -> Any:
    client = client or APIClient(REMOTE_ADDR=CLIENT_IP)
    return client.post(URL, {"assertion": assertion}, format="json")


def bearer(raw: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=CLIENT_IP)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def access_token(assertion: str | None = None) -> str:
    response = exchange(assertion or signing.generic())
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


# ---------------------------------------------------------------------------------------------
# The exchange
# ---------------------------------------------------------------------------------------------


def test_an_assertion_is_exchanged_for_a_short_lived_bearer_token(agent, linked):
    response = exchange(signing.generic(customer_id="cust-9"))

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["agent"] == {
        "username": "agent",
        "name": agent.get_full_name(),
        "email": agent.email,
    }
    raw = body["access_token"]
    assert len(raw) >= 40
    # Stored hashed: the raw value is nowhere in the table.
    stored = AccessToken.objects.get()
    assert stored.token_hash == token_hash(raw)
    assert raw not in json.dumps(list(AccessToken.objects.values()), default=str)
    assert (stored.user, stored.identity, stored.issuer) == (agent, linked, signing.ISSUER)


def test_the_exchange_is_audited_under_the_agent_with_the_issuer(agent, linked):
    response = exchange(signing.generic(customer_id="cust-9"))

    entry = AuditEntry.objects.get(action="crm_token_exchange")
    assert (entry.actor, entry.result, entry.customer_ref) == (agent, "ok", "cust-9")
    assert entry.details["issuer"] == signing.ISSUER
    assert entry.details["subject"] == "crm-agent-1"
    assert entry.client_ip == CLIENT_IP
    assert entry.request_id == response["X-Request-ID"]
    assert response.json()["access_token"] not in json.dumps(entry.details)


def test_the_ttl_follows_the_setting(settings, linked):
    settings.CRM_ACCESS_TOKEN_TTL = timedelta(minutes=2)

    assert exchange(signing.generic()).json()["expires_in"] == 120


def test_a_zendesk_assertion_exchanges_too(agent):
    CrmIdentity.objects.create(issuer=signing.ZENDESK_ISSUER, subject="90210", user=agent)

    response = exchange(signing.zendesk())

    assert response.status_code == 200
    assert AuditEntry.objects.get(action="crm_token_exchange").details["issuer"] == (
        signing.ZENDESK_ISSUER
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: signing.generic(exp=None), "missing_claim"),
        (lambda: signing.generic(aud="https://other.example.com"), "audience_mismatch"),
        (lambda: signing.generic(key="w" * 40), "bad_signature"),
        (lambda: signing.unsigned(signing.claims()), "algorithm_not_allowed"),
        (lambda: "garbage", "malformed"),
    ],
)
def test_a_bad_assertion_is_401_invalid_assertion_with_the_reason(linked, make, reason):
    token = make()

    response = exchange(token)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"  # token authentication still listed first
    error = response.json()["error"]
    assert error["code"] == "invalid_assertion"
    assert f"({reason})" in error["message"]
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.result, entry.actor) == ("crm_assertion_refused", reason, None)
    assert token not in json.dumps(list(AuditEntry.objects.values()), default=str)
    assert not AccessToken.objects.exists()


def test_a_replayed_assertion_is_refused(linked):
    assertion = signing.generic()
    assert exchange(assertion).status_code == 200

    replay = exchange(assertion)

    assert replay.status_code == 401
    assert "(replayed)" in replay.json()["error"]["message"]
    assert AccessToken.objects.count() == 1


def test_an_expired_assertion_is_refused(linked, time_machine):
    assertion = signing.generic()
    time_machine.move_to(timedelta(minutes=5), tick=False)

    response = exchange(assertion)

    assert response.status_code == 401
    assert "(expired)" in response.json()["error"]["message"]


def test_extra_fields_and_a_missing_assertion_are_400(linked):
    client = APIClient()
    assert client.post(URL, {}, format="json").status_code == 400
    extra = client.post(URL, {"assertion": signing.generic(), "user": "admin"}, format="json")
    assert extra.json()["error"]["code"] == "unknown_field"


# ---------------------------------------------------------------------------------------------
# Who may become an agent
# ---------------------------------------------------------------------------------------------


def _refused(response: Any, reason: str) -> None:
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "agent_not_allowed"
    assert f"({reason})" in error["message"]
    assert not AccessToken.objects.exists()


def test_a_producer_cannot_exchange_into_an_agent(producer):
    CrmIdentity.objects.create(issuer=signing.ISSUER, subject="crm-agent-1", user=producer)

    _refused(exchange(signing.generic()), "producer_account")
    entry = AuditEntry.objects.get(action="crm_token_exchange")
    assert (entry.actor, entry.result) == (producer, "agent_not_allowed")
    assert entry.details["reason"] == "producer_account"


def test_a_producer_who_is_also_in_support_agent_is_still_refused(producer):
    producer.groups.add(Group.objects.get(name="support_agent"))
    CrmIdentity.objects.create(issuer=signing.ISSUER, subject="crm-agent-1", user=producer)

    _refused(exchange(signing.generic()), "producer_account")


def test_an_inactive_user_is_refused(agent, linked):
    agent.is_active = False
    agent.save()

    _refused(exchange(signing.generic()), "inactive_user")


def test_a_user_outside_support_agent_is_refused(linked, agent):
    agent.groups.clear()

    _refused(exchange(signing.generic()), "not_a_support_agent")


def test_an_unlinked_identity_is_refused_without_auto_provisioning():
    _refused(exchange(signing.generic()), "unknown_identity")
    assert not User.objects.filter(email="agent@support.example.com").exists()


def test_auto_provisioning_creates_an_agent_for_an_allowed_domain(settings):
    settings.CRM_AGENT_AUTO_PROVISION = True
    settings.CRM_AGENT_EMAIL_DOMAINS = ["support.example.com"]

    response = exchange(signing.generic(sub="new-agent", email="New.Agent@Support.Example.com"))

    assert response.status_code == 200, response.content
    user = User.objects.get(username="new.agent@support.example.com")
    assert list(user.groups.values_list("name", flat=True)) == ["support_agent"]
    assert not user.has_usable_password()
    assert CrmIdentity.objects.get(subject="new-agent").user == user
    assert AuditEntry.objects.filter(action="crm_agent_provision", actor_id=user.pk).exists()
    # The second time, the link is found: no second user.
    assert exchange(
        signing.generic(sub="new-agent", email="x@support.example.com")
    ).status_code == (200)
    assert User.objects.filter(crm_identities__subject="new-agent").count() == 1


@pytest.mark.parametrize("email", ["a@evil.example.com", "a@support.example.com.evil.io", "nobody"])
def test_auto_provisioning_refuses_other_domains(settings, email):
    settings.CRM_AGENT_AUTO_PROVISION = True
    settings.CRM_AGENT_EMAIL_DOMAINS = ["support.example.com"]

    _refused(exchange(signing.generic(email=email)), "email_domain_not_allowed")


def test_auto_provisioning_never_takes_over_an_existing_account(settings, staff):
    settings.CRM_AGENT_AUTO_PROVISION = True
    settings.CRM_AGENT_EMAIL_DOMAINS = ["example.com"]
    staff.email = "boss@example.com"
    staff.save()

    _refused(exchange(signing.generic(email="boss@example.com")), "account_exists")
    assert not CrmIdentity.objects.exists()


# ---------------------------------------------------------------------------------------------
# The Bearer token on the API
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(agent, linked, django_capture_on_commit_callbacks) -> dict[str, Any]:
    customer = factories.CustomerFactory(customer_id="cust-bearer")
    factories.MethodFactory(customer=customer, method_id="m-bearer", phone_number="+14155550123")
    session = services.session_start(customer=customer, agent=agent)
    with django_capture_on_commit_callbacks(execute=False):
        lookup, _ = services.lookup_request(customer=customer, actor=agent)
    return {"customer": customer, "session": session, "lookup": lookup}


def agent_calls(world: dict[str, Any]) -> list[tuple[str, str, dict | None]]:
    session, lookup = world["session"].id, world["lookup"].id
    return [
        ("get", "/api/v1/customers/cust-bearer/twosv/", None),
        ("post", "/api/v1/customers/cust-bearer/twosv/sessions/", {}),
        ("get", f"/api/v1/twosv/sessions/{session}/", None),
        ("patch", f"/api/v1/twosv/sessions/{session}/", {"answers": {"has_device_access": True}}),
        ("post", f"/api/v1/twosv/sessions/{session}/verify-phone/", {"phone_number": "+1415555"}),
        ("post", "/api/v1/customers/cust-bearer/twosv/delivery-lookups/", {}),
        ("get", f"/api/v1/twosv/delivery-lookups/{lookup}/", None),
        ("post", "/api/v1/panel-links/", {"customer_id": "cust-bearer"}),
        ("post", f"/api/v1/twosv/sessions/{session}/close/", {"outcome": "resolved"}),
    ]


def call(client: APIClient, method: str, url: str, body: dict | None) -> Any:
    if body is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, body, format="json")


def test_the_bearer_token_opens_every_agent_endpoint(world, agent):
    client = bearer(access_token())

    for method, url, body in agent_calls(world):
        response = call(client, method, url, body)
        # verify-phone with a short number answers 400 (a try); everything else succeeds.
        assert response.status_code in {200, 201, 202, 400}, (method, url, response.content)
        assert response.status_code != 400 or "verify-phone" in url
    actors = set(AuditEntry.objects.exclude(actor=None).values_list("actor_id", flat=True))
    assert actors == {agent.pk}
    assert AuditEntry.objects.filter(action="state_read", actor=agent).exists()


def test_the_bearer_token_does_not_open_producer_endpoints(world):
    response = bearer(access_token()).post("/api/v1/events/", {}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(
            lambda user: User.objects.filter(pk=user.pk).update(is_active=False), id="deactivate"
        ),
        pytest.param(lambda user: user.groups.clear(), id="remove-from-support_agent"),
        pytest.param(
            lambda user: user.groups.add(Group.objects.get(name="event_producer")),
            id="made-a-producer",
        ),
        pytest.param(lambda user: CrmIdentity.objects.filter(user=user).delete(), id="unlink"),
    ],
)
def test_revocation_takes_effect_on_the_very_next_request(world, agent, revoke):
    client = bearer(access_token())
    state_url = "/api/v1/customers/cust-bearer/twosv/"
    assert client.get(state_url).status_code == 200

    revoke(agent)
    response = client.get(state_url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "authentication_failed"


def test_an_expired_bearer_token_is_refused(world, time_machine):
    client = bearer(access_token())
    time_machine.move_to(timedelta(minutes=15, seconds=1), tick=False)

    response = client.get("/api/v1/customers/cust-bearer/twosv/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer unknown-token", "Bearer é"])
def test_malformed_or_unknown_bearer_headers_are_401(world, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/customers/cust-bearer/twosv/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_bearer_token_works_only_for_its_own_user(world, agent):
    other = factories.UserFactory(username="agent-2", groups=["support_agent"])
    client = bearer(access_token())

    response = client.get(f"/api/v1/twosv/sessions/{world['session'].id}/")

    assert response.status_code == 200
    assert response.wsgi_request.user == agent != other


def test_the_exchange_is_throttled_per_client_address(linked, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**ScopedRateThrottle.THROTTLE_RATES, "crm_token": "2/min"}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)

    statuses = [exchange(signing.generic()).status_code for _ in range(3)]
    other_address = exchange(signing.generic(), APIClient(REMOTE_ADDR="198.51.100.1"))

    assert statuses == [200, 200, 429]
    assert other_address.status_code == 200


def test_the_schema_documents_the_exchange_and_the_bearer_scheme(client):
    schema = client.get(reverse("schema") + "?format=json").json()

    operation = schema["paths"]["/api/v1/auth/crm-token/"]["post"]
    assert {"200", "400", "401", "403", "429"} <= set(operation["responses"])
    assert schema["components"]["securitySchemes"]["crmBearer"]["scheme"] == "bearer"
    state = schema["paths"]["/api/v1/customers/{customer_id}/twosv/"]["get"]
    assert {"crmBearer": []} in state["security"]
    assert list(state["security"][0]) == ["tokenAuth"]


# ---------------------------------------------------------------------------------------------
# What the panel's launch views call
# ---------------------------------------------------------------------------------------------


def test_a_panel_launch_names_the_agent_customer_and_credential(agent, linked):
    launch = crm_services.crm_panel_launch(
        token=signing.generic(customer_id="cust-7"), form="generic"
    )

    assert (launch.agent, launch.customer_id, launch.issuer) == (agent, "cust-7", signing.ISSUER)
    assert launch.credential == identity_credential(linked)
    assert identity_credential_is_current(agent, launch.credential)
    entry = AuditEntry.objects.get(action="crm_panel_launch")
    assert (entry.actor, entry.result, entry.customer_ref) == (agent, "ok", "cust-7")
    assert entry.details["issuer"] == signing.ISSUER
    linked.delete()
    assert not identity_credential_is_current(agent, launch.credential)


def test_a_zendesk_launch_takes_only_zendesks_token(agent, linked):
    with pytest.raises(crm_services.AssertionRejected):
        crm_services.crm_panel_launch(token=signing.generic(), form="zendesk")
    CrmIdentity.objects.create(issuer=signing.ZENDESK_ISSUER, subject="90210", user=agent)

    launch = crm_services.crm_panel_launch(token=signing.zendesk(), form="zendesk")

    assert (launch.agent, launch.customer_id) == (agent, None)
    refused = AuditEntry.objects.get(action="crm_assertion_refused")
    assert refused.details["via"] == "crm_panel_launch"


# ---------------------------------------------------------------------------------------------
# CRM identities in the admin
# ---------------------------------------------------------------------------------------------


def test_an_admin_links_a_crm_identity_and_it_is_audited(root_client, root, agent):
    response = root_client.post(
        reverse("admin:crm_crmidentity_add"),
        {"issuer": signing.ISSUER, "subject": "crm-agent-1", "user": agent.pk},
    )

    assert response.status_code == 302, response.content[:500]
    identity = CrmIdentity.objects.get()
    entry = AuditEntry.objects.get(action="admin_add")
    assert (entry.actor, entry.object_type, entry.object_id) == (
        root,
        "CrmIdentity",
        str(identity.pk),
    )
    assert entry.details["model"] == "crm.crmidentity"
    assert entry.details["changes"]["subject"] == {"before": None, "after": "crm-agent-1"}
    assert exchange(signing.generic()).status_code == 200


def test_an_identity_is_unique_per_issuer_and_subject(root_client, agent, linked):
    response = root_client.post(
        reverse("admin:crm_crmidentity_add"),
        {"issuer": signing.ISSUER, "subject": "crm-agent-1", "user": agent.pk},
    )

    assert response.status_code == 200  # the form answers with the error
    assert CrmIdentity.objects.count() == 1


def test_unlinking_in_the_admin_ends_the_identitys_tokens_and_is_audited(
    root_client, world, linked
):
    client = bearer(access_token())

    response = root_client.post(
        reverse("admin:crm_crmidentity_delete", args=[linked.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert AuditEntry.objects.filter(action="admin_delete", object_type="CrmIdentity").exists()
    assert client.get("/api/v1/customers/cust-bearer/twosv/").status_code == 401


def test_zendesk_parameters_are_carried_only_when_they_look_like_zendesks():
    good = {"origin": "https://acme.zendesk.com", "app_guid": "0a1b-2c3d", "x": "y"}

    assert crm_services.zendesk_carried_params(good) == {
        "origin": "https://acme.zendesk.com",
        "app_guid": "0a1b-2c3d",
    }
    assert (
        crm_services.zendesk_carried_params(
            {"origin": "https://evil.example.com", "app_guid": "<script>"}
        )
        == {}
    )
    assert crm_services.zendesk_origins() == ["https://acme.zendesk.com"]
