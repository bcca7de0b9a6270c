"""The Django admin as admins use it (docs/SPEC.md §6): pages, masking, actions, read-only, CSV."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import NoReverseMatch, reverse
from rest_framework.authtoken.models import Token

from crm_plugin.crm.models import CrmIdentity
from tests import factories
from tests.builders import SMALL_THRESHOLD as THRESHOLD
from tests.builders import T0, resends
from twosv.audit import audit_record
from twosv.models import (
    AuditEntry,
    DeliveryAttempt,
    DeliveryLookup,
    DeliveryReceipt,
    Event,
    EventType,
    Incident,
    LocalDeliveryRecord,
    LookupStatus,
    Method,
    PhoneCheck,
    RegionalAdvisory,
    SenderNumber,
    TroubleshootingSession,
    TwilioMessage,
    Verdict,
)
from twosv.services import event_ingest

PHONE = "+14155550123"
PHONE_DIGITS = "4155550123"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock", "small_threshold")]


def staff_with(*codenames: str) -> Client:
    user = factories.UserFactory(username=f"staff-{'-'.join(codenames) or 'none'}", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="twosv", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def locked_method(**kwargs) -> Method:
    method = factories.MethodFactory(**kwargs)
    resends(method, THRESHOLD + 1)
    assert Event.objects.filter(method=method, outcome="locked").count() == 1
    return method


def action_choices(page) -> list[str]:
    form = page.context["action_form"]
    return [name for name, _label in form.fields["action"].choices] if form else []


def changelist(model: type) -> str:
    return reverse(f"admin:twosv_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:twosv_{obj._meta.model_name}_change", args=[obj.pk])


def delete(obj) -> str:
    return reverse(f"admin:twosv_{obj._meta.model_name}_delete", args=[obj.pk])


@pytest.fixture
def one_of_each(root: User) -> dict[type, object]:
    """One row of every model the admin shows, phone numbers included."""
    method = locked_method(phone_number=PHONE)
    event_ingest(
        event_id="phone-change-1",
        event_type=EventType.PHONE_NUMBER_CHANGED,
        customer_id=method.customer.customer_id,
        occurred_at=T0 - timedelta(minutes=30),
        data={"method_id": method.method_id, "phone_number": PHONE},
    )
    lookup = DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        status=LookupStatus.SUCCEEDED,
        verdict=Verdict.DELIVERED,
        period_start=T0 - timedelta(days=1),
        finished_at=T0,
    )
    DeliveryAttempt.objects.create(
        lookup=lookup, external_id="SM1", sent_at=T0 - timedelta(minutes=5), status="delivered"
    )
    session = TroubleshootingSession.objects.create(
        customer=method.customer,
        agent=root,
        method=method,
        closed_at=T0,
        outcome="resolved",
        helpful=True,
        final_step_code="check_carrier_block",
        comment=f"Customer read out {PHONE} and 415 555 0123 twice.",
    )
    audit = AuditEntry.objects.get(
        pk=audit_record(actor=root, action="lock_lift", result="lifted", obj=method)
    )
    record = factories.LocalDeliveryRecordFactory(to=PHONE)
    Token.objects.create(user=root)  # the authtoken app's admin page lists tokens
    CrmIdentity.objects.create(issuer="https://crm.example.com", subject="agent-1", user=root)
    phone_check = PhoneCheck.objects.create(
        customer=method.customer, session=session, actor=root, matched=False
    )
    incident = Incident.objects.create(
        region="IN",
        attempts=40,
        failures=30,
        share=0.75,
        baseline=0.05,
        top_error_codes=[{"code": 30008, "count": 30}],
        opened_at=T0 - timedelta(minutes=10),
        updated_at=T0,
    )
    message = TwilioMessage.objects.create(
        message_sid="SM" + "a" * 32,
        method=method,
        status="undelivered",
        rank=3,
        error_code=30003,
        sender="+15005550006",
        sent_at=T0 - timedelta(minutes=3),
        updated_at=T0 - timedelta(minutes=2),
    )
    receipt = DeliveryReceipt.objects.create(
        message=message,
        method=method,
        status="undelivered",
        error_code=30003,
        received_at=T0 - timedelta(minutes=2),
    )
    return {
        Incident: incident,
        TwilioMessage: message,
        DeliveryReceipt: receipt,
        Method: method,
        type(method.customer): method.customer,
        Event: Event.objects.get(event_id="phone-change-1"),
        DeliveryLookup: lookup,
        TroubleshootingSession: session,
        AuditEntry: audit,
        LocalDeliveryRecord: record,
        SenderNumber: SenderNumber.objects.first(),
        RegionalAdvisory: RegionalAdvisory.objects.first(),
        PhoneCheck: phone_check,
    }


# ---------------------------------------------------------------------------------------------
# Every page renders; no full phone number anywhere in lists and read-only pages
# ---------------------------------------------------------------------------------------------


def test_every_admin_changelist_and_change_page_renders(root_client, one_of_each):
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        response = root_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert response.status_code == 200, opts.label
        obj = model._default_manager.first()
        assert obj is not None, f"no {opts.label} to open"
        response = root_client.get(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )
        assert response.status_code == 200, opts.label
        if model_admin.has_add_permission(response.wsgi_request):
            add = root_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
            assert add.status_code == 200, opts.label


@pytest.mark.parametrize(
    "model",
    [
        Method,
        Event,
        TroubleshootingSession,
        LocalDeliveryRecord,
        "customer",
        TwilioMessage,
        DeliveryReceipt,
    ],
)
def test_no_full_phone_number_in_lists_and_read_only_pages(root_client, one_of_each, model):
    obj = next(o for m, o in one_of_each.items() if m == model or m._meta.model_name == model)
    pages = [changelist(type(obj))]
    if not isinstance(obj, LocalDeliveryRecord):  # its change form edits the number itself
        pages.append(change(obj))
    for url in pages:
        html = root_client.get(url).content.decode()
        assert PHONE_DIGITS not in html, url
        assert "555 0123" not in html, url
    if not isinstance(obj, TroubleshootingSession):
        assert "+1 ••••••••23" in root_client.get(pages[-1]).content.decode()


def test_method_list_shows_lock_state_and_resend_count(root_client, settings):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 200
    counting = factories.MethodFactory(method_id="m-counting")
    resends(counting, 2)
    html = root_client.get(changelist(Method)).content.decode()
    assert "2 / 200" in html
    assert "active" in html


def test_locked_method_shows_until_when(root_client):
    method = locked_method()
    html = root_client.get(changelist(Method)).content.decode()
    until = method.locked_until
    assert f"locked until {until:%Y-%m-%d %H:%M}" in html


def test_customer_search_by_id_name_and_last_digits_of_a_phone(root_client):
    alice = factories.MethodFactory(phone_number="+14155550177", customer__display_name="Alice")
    bob = factories.MethodFactory(phone_number="+919876543210", customer__display_name="Bob")
    url = changelist(type(alice.customer))

    def found(term: str) -> set[str]:
        response = root_client.get(url, {"q": term})
        return {c.customer_id for c in response.context["cl"].result_list}

    assert found("0177") == {alice.customer.customer_id}
    assert found("3 210") == {bob.customer.customer_id}
    # Exactly the last 4 digits (docs/SPEC.md §6): a longer tail matches nothing by phone.
    assert found("543 210") == set()
    assert found("Alice") == {alice.customer.customer_id}
    assert found(bob.customer.customer_id) == {bob.customer.customer_id}
    assert found("9999") == set()


def test_locked_now_filter(root_client):
    locked = locked_method(method_id="m-locked")
    lifted = locked_method(method_id="m-lifted")
    Method.objects.filter(pk=lifted.pk).update(lock_lifted_at=T0 - timedelta(minutes=1))
    expired = factories.MethodFactory(method_id="m-expired")
    resends(expired, THRESHOLD + 1, start=T0 - timedelta(days=2))
    never = factories.MethodFactory(method_id="m-never")

    def listed(value: str) -> set[str]:
        response = root_client.get(changelist(Method), {"locked_now": value})
        return {m.method_id for m in response.context["cl"].result_list}

    assert listed("yes") == {locked.method_id}
    assert listed("no") == {lifted.method_id, expired.method_id, never.method_id}


# ---------------------------------------------------------------------------------------------
# Lift lock
# ---------------------------------------------------------------------------------------------


def lift(client: Client, methods: list[Method], **extra: str):
    data = {"action": "lift_lock", "_selected_action": [m.pk for m in methods], **extra}
    return client.post(changelist(Method), data, HTTP_X_REQUEST_ID="req-lift-1")


def test_lift_lock_asks_for_a_reason_first(root_client):
    method = locked_method()
    page = lift(root_client, [method])
    assert page.status_code == 200
    assert page.templates[0].name == "admin/twosv/method/lift_lock.html"
    assert 'name="reason"' in page.content.decode()

    again = lift(root_client, [method], apply="yes", reason="   ")
    assert again.status_code == 200
    assert again.context["form"].errors["reason"]
    assert not Event.objects.filter(type=EventType.LOCK_LIFTED).exists()
    assert not AuditEntry.objects.filter(action="lock_lift").exists()


def test_lifting_writes_one_event_and_one_audit_row_per_lock(root_client, root):
    first, second = locked_method(), locked_method()
    not_locked = factories.MethodFactory()

    response = lift(root_client, [first, second, not_locked], apply="yes", reason="Verified ID")

    assert response.status_code == 302
    for method in (first, second):
        event = Event.objects.get(method=method, type=EventType.LOCK_LIFTED)
        assert event.actor == root
        assert event.data["reason"] == "Verified ID"
        entry = AuditEntry.objects.get(action="lock_lift", object_id=str(method.pk))
        assert entry.result == "lifted"
        assert entry.actor_username == "root"
        assert entry.request_id == "req-lift-1"
        assert entry.client_ip == "127.0.0.1"
        method.refresh_from_db()
        assert method.lock_lifted_at == T0
    assert Event.objects.filter(type=EventType.LOCK_LIFTED).count() == 2
    assert AuditEntry.objects.filter(action="lock_lift", result="lifted").count() == 2
    assert not Event.objects.filter(method=not_locked, type=EventType.LOCK_LIFTED).exists()

    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == ["Lifted 2 locks. 1 selected method wasn't locked; nothing changed for it."]
    listed = root_client.get(changelist(Method), {"locked_now": "yes"})
    assert list(listed.context["cl"].result_list) == []


def test_staff_without_lift_lock_cannot_lift(settings):
    method = locked_method()
    client = staff_with("view_method", "change_method")

    page = client.get(changelist(Method))
    assert page.status_code == 200
    choices = action_choices(page)
    assert "lift_lock" not in choices

    lift(client, [method], apply="yes", reason="trying anyway")
    lift(client, [method])
    assert not Event.objects.filter(type=EventType.LOCK_LIFTED).exists()
    assert not AuditEntry.objects.filter(action="lock_lift").exists()
    method.refresh_from_db()
    assert method.lock_lifted_at is None


def test_staff_with_lift_lock_can_lift():
    method = locked_method()
    client = staff_with("view_method", "lift_lock")
    response = lift(client, [method], apply="yes", reason="Customer verified by phone")
    assert response.status_code == 302
    assert Event.objects.filter(method=method, type=EventType.LOCK_LIFTED).count() == 1


# ---------------------------------------------------------------------------------------------
# Run delivery lookup
# ---------------------------------------------------------------------------------------------


def test_run_delivery_lookup_enqueues_for_code_receiving_methods(root_client, root):
    sms = factories.MethodFactory()
    app = factories.AuthenticatorMethodFactory(customer=sms.customer)
    data = {"action": "run_delivery_lookup", "_selected_action": [sms.pk, app.pk]}

    response = root_client.post(changelist(Method), data)

    assert response.status_code == 302
    lookup = DeliveryLookup.objects.get()
    assert (lookup.method, lookup.requested_by) == (sms, root)
    messages = [str(m) for m in response.wsgi_request._messages]
    # Its task is published after the commit, which this test's transaction never reaches.
    assert messages == [
        "Queued 1 delivery lookup for a worker. 1 method receives no codes and was skipped."
    ]

    again = root_client.post(changelist(Method), data)
    assert DeliveryLookup.objects.count() == 1
    assert "1 lookup was already pending or running: no new one." in str(
        list(again.wsgi_request._messages)[-1]
    )


# Committed for real, as in the dev server: the task runs (eagerly) when the request commits.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_run_delivery_lookup_says_it_ran_when_it_ran_eagerly(root_client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    sms = factories.MethodFactory(method_id="m-eager")
    factories.LocalDeliveryRecordFactory(to=sms.phone_number)
    data = {"action": "run_delivery_lookup", "_selected_action": [sms.pk]}

    response = root_client.post(changelist(Method), data)

    lookup = DeliveryLookup.objects.get()
    assert (lookup.status, lookup.verdict) == (LookupStatus.SUCCEEDED, Verdict.DELIVERED)
    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == ["Ran 1 delivery lookup now (m-eager: Delivered)."]
    assert not any("Enqueued" in m or "Queued" in m for m in messages)

    # Asked again within TWOSV_LOOKUP_FRESHNESS: the fresh result is reused, and said so.
    again = root_client.post(changelist(Method), data)
    assert DeliveryLookup.objects.count() == 1
    assert [str(m) for m in again.wsgi_request._messages][-1] == (
        "1 method has a fresh result (under 10 min old), reused."
    )


def test_run_delivery_lookup_needs_the_lookup_permission():
    sms = factories.MethodFactory()
    client = staff_with("view_method")
    page = client.get(changelist(Method))
    choices = action_choices(page)
    assert "run_delivery_lookup" not in choices
    client.post(changelist(Method), {"action": "run_delivery_lookup", "_selected_action": [sms.pk]})
    assert not DeliveryLookup.objects.exists()


# ---------------------------------------------------------------------------------------------
# Read-only pages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [AuditEntry, Event, DeliveryLookup, TroubleshootingSession, TwilioMessage, DeliveryReceipt],
)
def test_read_only_pages_refuse_edits_and_deletes(root_client, one_of_each, model):
    obj = one_of_each[model]
    before = model.objects.count()

    assert root_client.post(change(obj), {"result": "tampered"}).status_code == 403
    assert root_client.post(delete(obj), {"post": "yes"}).status_code == 403
    assert root_client.get(delete(obj)).status_code == 403
    add_url = reverse(f"admin:twosv_{model._meta.model_name}_add")
    assert root_client.post(add_url, {}).status_code == 403

    page = root_client.get(changelist(model))
    choices = action_choices(page)
    assert "delete_selected" not in choices
    root_client.post(changelist(model), {"action": "delete_selected", "_selected_action": [obj.pk]})
    root_client.post(
        changelist(model),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert model.objects.count() == before


def test_audit_entry_change_page_is_view_only(root_client, one_of_each):
    entry = one_of_each[AuditEntry]
    html = root_client.get(change(entry)).content.decode()
    assert 'name="_save"' not in html
    assert "deletelink" not in html
    entry.refresh_from_db()
    assert entry.result == "lifted"


def test_methods_cannot_be_added_or_deleted_here(root_client):
    method = factories.MethodFactory()
    assert root_client.get(reverse("admin:twosv_method_add")).status_code == 403
    assert root_client.post(delete(method), {"post": "yes"}).status_code == 403
    assert Method.objects.filter(pk=method.pk).exists()


def test_event_page_masks_the_number_in_its_data(root_client, one_of_each):
    html = root_client.get(change(one_of_each[Event])).content.decode()
    assert "+1 ••••••••23" in html
    assert PHONE not in html


def test_admin_index_links_to_insights(root_client):
    html = root_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:twosv_insights") in html
    assert reverse("admin:twosv_insights") == "/admin/twosv/event/insights/"


# ---------------------------------------------------------------------------------------------
# CSV export
# ---------------------------------------------------------------------------------------------


def export_csv(client: Client, model: type) -> list[list[str]]:
    url = reverse(f"admin:twosv_{model._meta.model_name}_export")
    form = client.get(url).context["form"]
    data = {"format": "0", "resource": "0"}
    data.update({name: "on" for name in form.fields if name not in (*data, "export_items")})
    response = client.post(url, data)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = response.content.decode()
    assert PHONE_DIGITS not in text
    assert "555 0123" not in text
    return list(csv.reader(io.StringIO(text)))


def test_sessions_export_as_csv_without_phone_numbers(root_client, one_of_each):
    rows = export_csv(root_client, TroubleshootingSession)
    assert rows[0] == [
        "id",
        "created_at",
        "closed_at",
        "customer_id",
        "agent",
        "method_id",
        "method_kind",
        "has_device_access",
        "has_backup_device_access",
        "phone_number_matches",
        "phone_verify_tries",
        "outcome",
        "helpful",
        "final_step_code",
        "comment",
    ]
    session = one_of_each[TroubleshootingSession]
    (row,) = rows[1:]
    assert row[0] == str(session.pk)
    assert row[3] == session.customer.customer_id
    assert row[-1] == "Customer read out •••••••••23 and ••••••••23 twice."


def test_audit_entries_export_as_csv(root_client, one_of_each):
    entry = one_of_each[AuditEntry]
    audit_record(
        actor=None, action="=HYPERLINK(1)", result="ok", customer_ref="-cust", details={"a": 1}
    )
    rows = export_csv(root_client, AuditEntry)
    assert rows[0] == [
        "id",
        "created_at",
        "actor_username",
        "action",
        "customer_ref",
        "object_type",
        "object_id",
        "result",
        "details",
        "request_id",
        "client_ip",
    ]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id[str(entry.pk)][2:4] == ["root", "lock_lift"]
    formula = next(row for row in rows[1:] if row[0] != str(entry.pk))
    assert formula[3:5] == ["'=HYPERLINK(1)", "'-cust"]


def test_export_only_no_import(root_client):
    for model in (AuditEntry, TroubleshootingSession):
        with pytest.raises(NoReverseMatch):
            reverse(f"admin:twosv_{model._meta.model_name}_import")


def test_customer_name_is_editable_and_methods_stay_read_only(root_client):
    method = factories.MethodFactory(label="Work phone")
    customer = method.customer
    data = {
        "display_name": "Renamed",
        "methods-TOTAL_FORMS": "1",
        "methods-INITIAL_FORMS": "1",
        "methods-MIN_NUM_FORMS": "0",
        "methods-MAX_NUM_FORMS": "1000",
        "methods-0-id": str(method.pk),
        "methods-0-customer": str(customer.pk),
        "methods-0-label": "tampered",
        "customer_id": "tampered",
    }
    response = root_client.post(change(customer), data)
    assert response.status_code == 302
    customer.refresh_from_db()
    method.refresh_from_db()
    assert customer.display_name == "Renamed"
    assert customer.customer_id != "tampered"
    assert method.label == "Work phone"


def test_method_page_edits_only_what_the_crm_shows(root_client):
    method = factories.MethodFactory(phone_number=PHONE, label="Mobile")
    data = {"label": "Work", "visible_in_crm": "on", "phone_number": "+14155550199"}
    assert root_client.post(change(method), data).status_code == 302
    method.refresh_from_db()
    assert (method.label, method.phone_number) == ("Work", PHONE)


# ---------------------------------------------------------------------------------------------
# Issue 17, item 10: sessions name their method, lists fit 1280 px, no 404 link, masked emails
# ---------------------------------------------------------------------------------------------


def test_a_session_started_without_a_method_records_the_subject_method(root_client, root):
    from twosv import services

    primary = factories.MethodFactory(method_id="m-primary")
    backup = factories.AuthenticatorMethodFactory(
        customer=primary.customer, method_id="m-backup", role="backup"
    )
    session = services.session_start(customer=primary.customer, agent=root)
    assert session.method == primary

    # Switching (PATCH method_id) keeps it current; back to the default (null) too.
    session = services.session_update(session=session, actor=root, method_id="m-backup")
    assert session.method == backup
    session = services.session_update(session=session, actor=root, method_id=None)
    assert session.method == primary
    services.session_close(
        session=session, actor=root, outcome="resolved", helpful=True, comment=""
    )

    rows = export_csv(root_client, TroubleshootingSession)
    header, (row,) = rows[0], rows[1:]
    assert (row[header.index("method_id")], row[header.index("method_kind")]) == (
        "m-primary",
        "sms",
    )
    html = root_client.get(changelist(TroubleshootingSession)).content.decode()
    assert "m-primary (SMS)" in html


def test_a_session_update_of_answers_keeps_the_method_current(root):
    from twosv import services
    from twosv.models import Customer

    first = factories.MethodFactory(method_id="m-first")
    second = factories.MethodFactory(customer=first.customer, method_id="m-second", role="backup")
    session = services.session_start(customer=first.customer, agent=root)
    assert session.method == first
    Method.objects.filter(pk=first.pk).update(removed_at=T0 - timedelta(minutes=1))
    session = services.session_update(
        session=session, actor=root, answers={"has_device_access": True}
    )
    assert session.method == second
    # A customer with no active method: the session records none.
    bare = Customer.objects.create(customer_id="c-bare")
    assert services.session_start(customer=bare, agent=root).method is None


# The columns each list shows: the key ones, short enough for 1280 px beside the filter.
KEY_COLUMNS = {
    Method: ["method id", "customer", "kind", "role", "phone", "status", "resends"],
    DeliveryLookup: ["created", "customer", "method", "status", "verdict", "finished"],
    TroubleshootingSession: [
        "created",
        "customer",
        "agent",
        "method",
        "outcome",
        "helpful",
        "final step",
    ],
    LocalDeliveryRecord: ["created", "to", "status", "error", "sender"],
    TwilioMessage: ["sent", "status", "error", "method", "updated"],
    DeliveryReceipt: ["received", "status", "error", "method", "via"],
}


@pytest.mark.parametrize("model", list(KEY_COLUMNS))
def test_lists_show_the_key_columns_with_short_headers(root_client, one_of_each, model):
    import re

    html = root_client.get(changelist(model)).content.decode()
    table = html[html.index('id="result_list"') :]
    cells = re.findall(r'<th scope="col"[^>]*>.*?<div class="text">(.*?)</div>', table, re.S)
    heads = [re.sub(r"<[^>]+>", "", cell).strip().lower() for cell in cells]
    assert [head for head in heads if head] == KEY_COLUMNS[model]
    # The rest is on the change page.
    obj = one_of_each[model]
    assert root_client.get(change(obj)).status_code == 200


def test_the_session_list_names_the_final_step_by_title(root_client, one_of_each):
    html = root_client.get(changelist(TroubleshootingSession)).content.decode()
    assert "Check for a carrier block" in html
    filtered = root_client.get(
        changelist(TroubleshootingSession), {"final_step_code": "check_carrier_block"}
    )
    assert len(filtered.context["cl"].result_list) == 1


def test_no_view_site_link_to_a_missing_page(root_client):
    assert admin.site.site_url is None
    html = root_client.get(reverse("admin:index")).content.decode()
    assert "View site" not in html
    # What the default link pointed at is no page of this service.
    assert root_client.get("/").status_code == 404


def test_the_local_ats_list_masks_email_addresses(root_client):
    factories.LocalDeliveryRecordFactory(to="jane.doe@example.com")
    factories.LocalDeliveryRecordFactory(to=PHONE)
    html = root_client.get(changelist(LocalDeliveryRecord)).content.decode()
    assert "jane.doe" not in html
    assert "j•••@example.com" in html
    assert "+1 ••••••••23" in html


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("jane.doe@example.com", "j•••@example.com"),
        ("j@example.com", "j•••@example.com"),
        ("a@b@example.com", "a•••@example.com"),
        ("no-at-sign", "•••"),
        ("", "—"),
    ],
)
def test_email_mask(address, masked):
    from twosv.masking import mask_email

    assert mask_email(address) == masked


# ---------------------------------------------------------------------------------------------
# Twilio receipts (issue 20, item 5)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [TwilioMessage, DeliveryReceipt])
def test_receipt_pages_open_for_view_only_staff(one_of_each, model):
    obj = one_of_each[model]
    client = staff_with(f"view_{model._meta.model_name}", "view_method")

    page = client.get(changelist(model))
    assert page.status_code == 200
    html = page.content.decode()
    # The error code with its meaning in words, the method's number masked.
    assert "30003" in html
    assert "Unreachable handset" in html
    assert "+1 ••••••••23" in html
    assert 'class="addlink"' not in html
    assert "delete_selected" not in action_choices(page)
    detail = client.get(change(obj))
    assert detail.status_code == 200
    detail_html = detail.content.decode()
    assert 'name="_save"' not in detail_html
    assert "deletelink" not in detail_html
    assert "30003: Unreachable handset" in detail_html
    # Without the view permission: no page.
    assert staff_with("view_method").get(changelist(model)).status_code == 403


@pytest.mark.parametrize("model", [TwilioMessage, DeliveryReceipt])
def test_receipt_lists_filter_by_status_and_error_code(root_client, one_of_each, model):
    other = factories.MethodFactory(phone_number="+919876543210")
    message = TwilioMessage.objects.create(
        message_sid="SM" + "b" * 32,
        method=other,
        status="delivered",
        rank=3,
        sent_at=T0,
        updated_at=T0,
    )
    DeliveryReceipt.objects.create(message=message, method=other, status="delivered")

    def listed(**params) -> int:
        response = root_client.get(changelist(model), params)
        assert response.status_code == 200
        return len(response.context["cl"].result_list)

    assert listed() == 2
    assert listed(status="delivered") == 1
    assert listed(error_code="30003") == 1
    # Phone search by exactly the last four digits of the method's number.
    assert listed(q="0123") == 1
    assert listed(q="50123") == 0
    assert listed(q="SM" + "b" * 32) == 1  # by the exact message SID


def test_the_message_page_lists_its_receipts(root_client, one_of_each):
    message = one_of_each[TwilioMessage]
    html = root_client.get(change(message)).content.decode()
    assert "30003: Unreachable handset" in html
    assert "receipts-group" in html  # the read-only inline of its receipts
    assert PHONE_DIGITS not in html
