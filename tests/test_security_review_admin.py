"""Issue 16, the security review: findings 2, 8, 9, 10 and 11, one test (at least) each.

2  admin phone search takes exactly the last 4 digits (docs/SPEC.md §6);
8  every admin change writes an audit entry with before/after, numbers masked;
9  the audit address honours NUM_PROXIES, as the throttles do;
10 refused calls are audited at a bounded rate, counted in the database;
11 the embedded default's SECRET_KEY is made per checkout, and runserver stays on loopback.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.core.management.commands.runserver import Command as CoreRunserver
from django.db import DatabaseError
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests import factories
from tests.builders import T0, freeze, token_client
from twosv.audit import audit_refusal
from twosv.models import (
    AuditEntry,
    Customer,
    LocalDeliveryRecord,
    Method,
    RegionalAdvisory,
    SenderNumber,
)

ROOT = Path(__file__).resolve().parent.parent
PHONE = "+14155550123"
PROXY_IP = "10.0.0.5"
CLIENT_IP = "203.0.113.7"
SPOOFED_IP = "198.51.100.66"


def view_only_staff(*codenames: str) -> Client:
    user = factories.UserFactory(username="viewer", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="twosv", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def changelist(model: type) -> str:
    return reverse(f"admin:twosv_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


# ---------------------------------------------------------------------------------------------
# Finding 2: admin phone search
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_finding_02_admin_phone_search_takes_exactly_the_last_four_digits():
    method = factories.MethodFactory(
        phone_number=PHONE, customer__customer_id="cust-55501", customer__display_name="Carol"
    )
    factories.LocalDeliveryRecordFactory(to=PHONE, external_id="rec-1")
    client = view_only_staff("view_customer", "view_method", "view_localdeliveryrecord")

    def found(model: type, term: str) -> int:
        response = client.get(changelist(model), {"q": term})
        assert response.status_code == 200
        return len(response.context["cl"].result_list)

    for model in (Customer, Method, LocalDeliveryRecord):
        # Exactly the last four digits, punctuation allowed: found.
        assert found(model, "0123") == 1, model
        assert found(model, "01-23") == 1, model
        # Any other count of digits is no phone search: a number can't be rebuilt digit by digit
        # (the full number isn't tried: the page echoes the search term).
        for term in ("23", "123", "50123", "550123", "5550123", "55550123", "+155550123"):
            assert found(model, term) == 0, (model, term)
        assert found(model, "9999") == 0, model
    # Id and name search still work, digits in the id included.
    assert found(Customer, "55501") == 1
    assert found(Customer, "Carol") == 1
    assert found(Method, method.method_id) == 1


# ---------------------------------------------------------------------------------------------
# Finding 8: admin changes audited
# ---------------------------------------------------------------------------------------------


def _admin_entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


@pytest.mark.django_db
def test_finding_08_admin_changes_are_audited_with_before_and_after(root_client, root):
    headers = {"REMOTE_ADDR": CLIENT_IP, "HTTP_X_REQUEST_ID": "req-admin-edit"}
    method = factories.MethodFactory(phone_number=PHONE, label="Mobile")
    customer = method.customer
    old_name = customer.display_name

    # A customer renamed (the read-only methods inline posts along).
    response = root_client.post(
        change(customer),
        {
            "display_name": "Renamed",
            "methods-TOTAL_FORMS": "1",
            "methods-INITIAL_FORMS": "1",
            "methods-MIN_NUM_FORMS": "0",
            "methods-MAX_NUM_FORMS": "1000",
            "methods-0-id": str(method.pk),
            "methods-0-customer": str(customer.pk),
        },
        **headers,
    )
    assert response.status_code == 302
    [entry] = _admin_entries("admin_change")
    assert (entry.result, entry.actor_username, entry.customer_ref) == (
        "changed",
        "root",
        customer.customer_id,
    )
    assert (entry.object_type, entry.object_id) == ("Customer", str(customer.pk))
    assert (entry.request_id, entry.client_ip) == ("req-admin-edit", CLIENT_IP)
    assert entry.details["model"] == "twosv.customer"
    assert entry.details["changes"] == {"display_name": {"before": old_name, "after": "Renamed"}}

    # A method's label: only what changed, and the number on file never in the entry.
    data = {"label": "Work", "visible_in_crm": "on"}
    assert root_client.post(change(method), data, **headers).status_code == 302
    entry = _admin_entries("admin_change")[-1]
    assert entry.customer_ref == customer.customer_id
    assert entry.details["changes"] == {"label": {"before": "Mobile", "after": "Work"}}

    # A sender number added, renumbered and deleted: numbers masked before and after.
    add_url = reverse("admin:twosv_sendernumber_add")
    data = {"phone_number": "+14155550188", "label": "Twilio US", "active": "on"}
    assert root_client.post(add_url, data, **headers).status_code == 302
    sender = SenderNumber.objects.get(phone_number="+14155550188")
    [added] = _admin_entries("admin_add")
    assert added.result == "added"
    assert added.object_type == "SenderNumber"
    assert added.details["changes"]["phone_number"] == {"before": None, "after": "+1 ••••••••88"}
    assert added.details["changes"]["label"] == {"before": None, "after": "Twilio US"}
    data = {"phone_number": "+14155550199", "label": "Twilio US", "active": "on"}
    assert root_client.post(change(sender), data, **headers).status_code == 302
    entry = _admin_entries("admin_change")[-1]
    assert entry.details["changes"] == {
        "phone_number": {"before": "+1 ••••••••88", "after": "+1 ••••••••99"}
    }
    delete_url = reverse("admin:twosv_sendernumber_delete", args=[sender.pk])
    assert root_client.post(delete_url, {"post": "yes"}, **headers).status_code == 302
    [deleted] = _admin_entries("admin_delete")
    assert (deleted.result, deleted.object_id) == ("deleted", str(sender.pk))
    assert deleted.details["changes"]["phone_number"] == {"before": "+1 ••••••••99", "after": None}

    # Advisories deleted through the admin's bulk action: one entry each.
    advisories = [
        RegionalAdvisory.objects.create(region=region, message=f"SMS to {region} delayed")
        for region in ("IN", "BR")
    ]
    response = root_client.post(
        changelist(RegionalAdvisory),
        {
            "action": "delete_selected",
            "_selected_action": [a.pk for a in advisories],
            "post": "yes",
        },
        **headers,
    )
    assert response.status_code == 302
    assert not RegionalAdvisory.objects.filter(pk__in=[a.pk for a in advisories]).exists()
    messages = {
        e.details["changes"]["message"]["before"]
        for e in _admin_entries("admin_delete")
        if e.object_type == "RegionalAdvisory"
    }
    assert {"SMS to IN delayed", "SMS to BR delayed"} <= messages

    # A local ATS record's recipient: masked too.
    record = factories.LocalDeliveryRecordFactory(to=PHONE)
    data = {
        "external_id": record.external_id,
        "to": "+14155550177",
        "sender": record.sender,
        "provider": record.provider,
        "status": record.status,
        "created_at_0": "2026-03-02",
        "created_at_1": "11:55:00",
        "updated_at_0": "2026-03-02",
        "updated_at_1": "11:55:05",
    }
    response = root_client.post(change(record), data, **headers)
    assert response.status_code == 302, response.content[:500]
    entry = _admin_entries("admin_change")[-1]
    assert entry.details["changes"]["to"] == {"before": "+1 ••••••••23", "after": "+1 ••••••••77"}

    # Granting a role is an admin change too; a token's key never enters the trail.
    agent = factories.UserFactory(username="new-agent", is_staff=False)
    group = Group.objects.get(name="support_agent")
    add_token = reverse("admin:authtoken_tokenproxy_add")
    assert root_client.post(add_token, {"user": agent.pk}, **headers).status_code == 302
    key = Token.objects.get(user=agent).key
    token_entry = _admin_entries("admin_add")[-1]
    assert token_entry.object_type == "TokenProxy"
    assert key not in json.dumps(token_entry.details) + token_entry.object_id
    group_page = root_client.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": "support_agent", "permissions": []},
        **headers,
    )
    assert group_page.status_code == 302
    assert _admin_entries("admin_change")[-1].object_type == "Group"

    # No full number anywhere in the trail's admin rows.
    trail = json.dumps([e.details for e in AuditEntry.objects.filter(action__startswith="admin_")])
    for number in (PHONE, "+14155550188", "+14155550199", "+14155550177"):
        assert number.lstrip("+") not in trail
        assert number[2:] not in trail


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_finding_08_a_bulk_delete_that_fails_leaves_no_audit_entry(root, monkeypatch):
    """Django's bulk delete writes the entries (`log_deletions`), then deletes: a delete that
    fails must take its entries with it, or the trail says advisories went that are still
    there."""
    client = Client()
    client.force_login(root)
    advisories = [
        RegionalAdvisory.objects.create(region=region, message=f"SMS to {region} delayed")
        for region in ("IN", "BR")
    ]
    model_admin = admin.site._registry[RegionalAdvisory]

    def failing_delete(request, queryset):
        queryset.filter(region="IN").delete()  # half done, then the database gives up
        raise DatabaseError("connection lost")

    monkeypatch.setattr(model_admin, "delete_queryset", failing_delete)
    body = {
        "action": "delete_selected",
        "_selected_action": [a.pk for a in advisories],
        "post": "yes",
    }
    with pytest.raises(DatabaseError):
        client.post(changelist(RegionalAdvisory), body)

    assert RegionalAdvisory.objects.filter(pk__in=[a.pk for a in advisories]).count() == 2
    assert _admin_entries("admin_delete") == []

    monkeypatch.undo()
    assert client.post(changelist(RegionalAdvisory), body).status_code == 302
    assert not RegionalAdvisory.objects.filter(pk__in=[a.pk for a in advisories]).exists()
    assert len(_admin_entries("admin_delete")) == 2


@pytest.mark.django_db
def test_finding_08_every_admin_that_can_write_is_audited(root):
    from twosv.admin.auditing import AuditedAdminMixin

    request = RequestFactory().get("/admin/")
    request.user = root
    writable = [
        type(model_admin).__name__
        for model_admin in admin.site._registry.values()
        if model_admin.has_add_permission(request)
        or model_admin.has_change_permission(request)
        or model_admin.has_delete_permission(request)
    ]
    unaudited = [
        type(model_admin).__name__
        for model_admin in admin.site._registry.values()
        if type(model_admin).__name__ in writable and not isinstance(model_admin, AuditedAdminMixin)
    ]
    assert "CustomerAdmin" in writable
    assert unaudited == []


# ---------------------------------------------------------------------------------------------
# Finding 9: the audit address and NUM_PROXIES
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def one_proxy(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock", "one_proxy")
def test_finding_09_audit_address_honours_num_proxies(agent, root_client):
    method = factories.MethodFactory(phone_number=PHONE)
    customer = method.customer
    forwarded = {
        "REMOTE_ADDR": PROXY_IP,
        # The client wrote the first address; our one proxy appended what it saw.
        "HTTP_X_FORWARDED_FOR": f"{SPOOFED_IP}, {CLIENT_IP}",
    }

    # The API.
    client = token_client(agent, **forwarded)
    assert client.get(f"/api/v1/customers/{customer.customer_id}/twosv/").status_code == 200
    assert AuditEntry.objects.get(action="state_read").client_ip == CLIENT_IP

    # The admin (an action and an edit).
    Method.objects.filter(pk=method.pk).update(
        locked_at=T0 - timedelta(hours=1), locked_until=T0 + timedelta(hours=23)
    )
    response = root_client.post(
        changelist(Method),
        {
            "action": "lift_lock",
            "_selected_action": [method.pk],
            "apply": "yes",
            "reason": "Verified ID",
        },
        **forwarded,
    )
    assert response.status_code == 302
    assert AuditEntry.objects.get(action="lock_lift").client_ip == CLIENT_IP
    data = {"label": "Work", "visible_in_crm": "on"}
    assert root_client.post(change(method), data, **forwarded).status_code == 302
    assert AuditEntry.objects.get(action="admin_change").client_ip == CLIENT_IP


@pytest.mark.django_db
def test_finding_09_the_address_rule_is_drfs(settings):
    """The one function the API, the panel and the admin use, against DRF's throttle rule."""
    from rest_framework.throttling import SimpleRateThrottle

    from crm_plugin.http.context import audit_context

    def both(num_proxies: int, **meta: str) -> tuple[str | None, str]:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": num_proxies}
        request = RequestFactory().get("/panel/", **meta)
        return audit_context(request).client_ip, SimpleRateThrottle.get_ident(None, request)  # type: ignore[arg-type]

    chain = {"REMOTE_ADDR": PROXY_IP, "HTTP_X_FORWARDED_FOR": f"{SPOOFED_IP}, {CLIENT_IP}"}
    assert both(0, **chain) == (PROXY_IP, PROXY_IP)  # no proxy: the header is the caller's
    assert both(1, **chain) == (CLIENT_IP, CLIENT_IP)
    assert both(2, **chain) == (SPOOFED_IP, SPOOFED_IP)
    assert both(5, **chain) == (SPOOFED_IP, SPOOFED_IP)  # fewer entries: the leftmost, as DRF
    assert both(1, REMOTE_ADDR=PROXY_IP) == (PROXY_IP, PROXY_IP)  # no header: REMOTE_ADDR
    # Not an address (the column is inet): REMOTE_ADDR rather than a failed insert.
    ip, _ = both(1, REMOTE_ADDR=PROXY_IP, HTTP_X_FORWARDED_FOR="unknown")
    assert ip == PROXY_IP


# ---------------------------------------------------------------------------------------------
# Finding 10: refusals at a bounded rate
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_finding_10_refused_calls_are_audited_at_a_bounded_rate(producer, agent, time_machine):
    freeze(time_machine)
    customer = factories.MethodFactory(phone_number=PHONE).customer
    url = f"/api/v1/customers/{customer.customer_id}/twosv/"
    producer_client = token_client(producer, REMOTE_ADDR=CLIENT_IP)

    for _ in range(100):
        assert producer_client.get(url).status_code == 403

    [entry] = AuditEntry.objects.filter(action="permission_denied")
    assert (entry.actor_username, entry.result, entry.customer_ref) == (
        "producer",
        "refused",
        customer.customer_id,
    )
    assert entry.details["count"] == 100
    assert (entry.details["view"], entry.details["method"]) == ("CustomerTwosvStateApi", "GET")

    # Another actor is another row.
    agent_client = token_client(agent, REMOTE_ADDR=CLIENT_IP)
    assert agent_client.post("/api/v1/events/", {}, format="json").status_code == 403
    assert AuditEntry.objects.filter(action="permission_denied").count() == 2

    # What the caller writes (customer ids, HTTP methods) doesn't make new rows: the customers
    # are listed on the row, up to a cap.
    for n in range(30):
        path = f"/api/v1/customers/cust-probe-{n}/twosv/"
        assert producer_client.generic("GET" if n % 2 else f"PROBE{n}", path).status_code == 403
    assert AuditEntry.objects.filter(action="permission_denied").count() == 2
    entry.refresh_from_db()
    assert entry.details["count"] == 130
    assert entry.details["customers"][:2] == [customer.customer_id, "cust-probe-0"]
    assert len(entry.details["customers"]) == 20
    assert entry.details["customers_truncated"] is True

    # A minute on, the same refusal starts a new row.
    time_machine.move_to(T0 + timedelta(seconds=61), tick=False)
    assert producer_client.get(url).status_code == 403
    rows = AuditEntry.objects.filter(action="permission_denied", actor_username="producer")
    assert [row.details["count"] for row in rows.order_by("created_at")] == [130, 1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_finding_10_refusals_fold_across_connections():
    """Separate connections (as separate workers) share one row and its count: the database
    locks it, no cache is involved."""
    import threading

    from django.db import connection

    user = factories.UserFactory(username="leaked-producer")
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def refuse() -> None:
        try:
            start.wait(timeout=30)
            for _ in range(per_thread):
                audit_refusal(
                    actor=user,
                    customer_ref="cust-x",
                    details={"method": "GET", "view": "CustomerTwosvStateApi"},
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=refuse) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert errors == []
    rows = list(AuditEntry.objects.filter(action="permission_denied", customer_ref="cust-x"))
    assert sum(row.details["count"] for row in rows) == threads * per_thread
    # Only first refusals racing each other may each write a row.
    assert 1 <= len(rows) <= threads


# ---------------------------------------------------------------------------------------------
# Finding 11: the dev SECRET_KEY and runserver
# ---------------------------------------------------------------------------------------------


def test_finding_11_dev_secret_key_is_per_install_and_runserver_stays_on_loopback(
    tmp_path, settings, monkeypatch
):
    from crm_plugin.settings import dev_secret_key

    # A random key made on first start, kept with mode 600, the same on every later start.
    first = tmp_path / "one" / "var" / "secret_key"
    key = dev_secret_key(first)
    assert len(key) >= 50
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert dev_secret_key(first) == key
    assert dev_secret_key(tmp_path / "two" / "var" / "secret_key") != key  # per checkout
    assert not list(first.parent.glob(".secret_key.*"))  # no candidate left behind

    # This checkout's embedded default uses its own var/secret_key, which git ignores, and no
    # key is written in the settings.
    settings_text = (ROOT / "crm_plugin" / "settings.py").read_text()
    assert "dev-only-insecure" not in settings_text
    if not os.environ.get("SECRET_KEY"):
        assert (ROOT / "var" / "secret_key").read_text().strip() == django_settings.SECRET_KEY
        assert django_settings.SECRET_KEY not in settings_text
    ignored = subprocess.run(["git", "check-ignore", "-q", "var/secret_key"], cwd=ROOT, check=False)
    assert ignored.returncode == 0

    # Our runserver is the one Django runs; on the dev key it serves on loopback only.
    assert get_commands()["runserver"] == "twosv"
    served: list[str] = []
    monkeypatch.setattr(CoreRunserver, "inner_run", lambda self, *a, **k: served.append(self.addr))
    settings.DEV_SECRET_KEY_IN_USE = True
    for addrport in ("127.0.0.1:8000", "[::1]:8000", "localhost:8000", "8000"):
        call_command("runserver", addrport, use_reloader=False)
    assert served == ["127.0.0.1", "::1", "localhost", "127.0.0.1"]
    for addrport in ("0.0.0.0:8000", "0:8000", "192.0.2.10:8000", "[::]:8000", "example.com:80"):
        with pytest.raises(CommandError, match="loopback"):
            call_command("runserver", addrport, use_reloader=False)
    assert len(served) == 4
    # With a SECRET_KEY of one's own, any address.
    settings.DEV_SECRET_KEY_IN_USE = False
    call_command("runserver", "0.0.0.0:8000", use_reloader=False)
    assert served[-1] == "0.0.0.0"


def test_finding_11_a_non_loopback_runserver_on_the_dev_key_refuses_to_start():
    env = {name: value for name, value in os.environ.items() if name != "SECRET_KEY"}
    env["DEBUG"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", "runserver", "0.0.0.0:8765", "--noreload"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("runserver 0.0.0.0 started on the dev key")
    assert done.returncode != 0
    assert "loopback" in done.stderr
    assert "SECRET_KEY" in done.stderr
