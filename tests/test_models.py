"""What the database itself refuses, phone validation, and the data the migrations install."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from tests import factories
from twosv.models import (
    Customer,
    DeliveryLookup,
    Event,
    LookupStatus,
    RegionalAdvisory,
    SenderNumber,
    TroubleshootingSession,
    validate_e164,
)

pytestmark = pytest.mark.django_db


def refused_by_database(create) -> None:
    """Assert the database (not Python validation) refuses the row.

    A constraint answers IntegrityError; PostgreSQL checks a column's length first (DataError).
    """
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        create()


# ---------------------------------------------------------------------------------------------
# Phone numbers: E.164, validated with phonenumbers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["+14155550142", "+919876543210", "+442079460958", "+14803605516"]
)
def test_valid_e164_numbers_pass(number):
    validate_e164(number)


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("00442079460958", "e164"),
        ("4155550142", "e164"),
        ("+1 415 555 0142", "e164"),
        ("+1-415-555-0142", "e164"),
        ("+1415555CALL", "e164"),
        ("", "e164"),
        ("+", "e164"),
        ("+11234567890", "invalid_phone"),  # area codes don't start with 1
        ("+1415555", "invalid_phone"),  # too short
        ("+14155550142000000", "invalid_phone"),  # too long
        ("+999123456789", "invalid_phone"),  # no such country code
    ],
)
def test_numbers_that_are_not_valid_e164_are_refused(number, code):
    with pytest.raises(ValidationError) as refused:
        validate_e164(number)

    assert refused.value.code == code


def test_full_clean_validates_the_phone_number_of_a_method_and_a_sender():
    method = factories.MethodFactory.build(
        customer=factories.CustomerFactory(), phone_number="+1 415 555 0142"
    )
    with pytest.raises(ValidationError) as refused:
        method.full_clean()
    assert set(refused.value.message_dict) == {"phone_number"}

    with pytest.raises(ValidationError) as refused:
        SenderNumber(phone_number="+11234567890").full_clean()
    assert set(refused.value.message_dict) == {"phone_number"}

    method.phone_number = "+14155550142"
    method.full_clean()


def test_full_clean_requires_a_phone_number_for_sms_and_voice():
    customer = factories.CustomerFactory()
    for kind in ("sms", "voice"):
        method = factories.MethodFactory.build(customer=customer, kind=kind, phone_number="")
        with pytest.raises(ValidationError) as refused:
            method.full_clean()
        assert "phone_number" in refused.value.message_dict

    factories.AuthenticatorMethodFactory.build(customer=customer).full_clean()


# ---------------------------------------------------------------------------------------------
# Constraints the database enforces
# ---------------------------------------------------------------------------------------------


def test_duplicate_event_id_is_refused_by_the_database():
    method = factories.MethodFactory()

    def write() -> Event:
        return Event.objects.create(
            event_id="evt-1",
            type="code_sent",
            customer=method.customer,
            method=method,
            occurred_at=timezone.now(),
        )

    write()
    refused_by_database(write)
    assert Event.objects.filter(event_id="evt-1").count() == 1


def test_unknown_event_type_is_refused_by_the_database():
    customer = factories.CustomerFactory()
    refused_by_database(
        lambda: Event.objects.create(
            event_id="evt-1", type="code_exploded", customer=customer, occurred_at=timezone.now()
        )
    )


@pytest.mark.parametrize("kind", ["sms", "voice"])
def test_sms_or_voice_method_without_phone_is_refused_by_the_database(kind):
    customer = factories.CustomerFactory()
    refused_by_database(
        lambda: factories.MethodFactory(customer=customer, kind=kind, phone_number="")
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"phone_number": "00442079460958"},
        {"phone_number": "+1 415 555 0142"},
        {"kind": "carrier_pigeon"},
        {"role": "tertiary"},
        {"locked_at": timezone.now(), "locked_until": timezone.now() - timedelta(hours=1)},
    ],
    ids=["phone 00", "phone spaces", "kind", "role", "lock ends before it starts"],
)
def test_impossible_method_rows_are_refused_by_the_database(fields):
    customer = factories.CustomerFactory()
    refused_by_database(lambda: factories.MethodFactory(customer=customer, **fields))


def test_duplicate_method_id_is_refused_by_the_database():
    factories.MethodFactory(method_id="m-1")
    refused_by_database(lambda: factories.MethodFactory(method_id="m-1"))


@pytest.mark.parametrize(
    "customer_id", ["", "cust 1", "c" * 65, "x'; DROP TABLE twosv_customer;--", "cüst"]
)
def test_malformed_customer_id_is_refused_by_the_database(customer_id):
    refused_by_database(lambda: Customer.objects.create(customer_id=customer_id))


@pytest.mark.parametrize("region", ["in", "IND", "I", "", "1N"])
def test_regional_advisory_with_a_bad_region_is_refused_by_the_database(region):
    refused_by_database(lambda: RegionalAdvisory.objects.create(region=region, message="x"))


def test_only_one_lookup_per_method_may_be_in_flight():
    method = factories.MethodFactory()
    period_start = timezone.now() - timedelta(hours=24)

    def lookup(status: str) -> DeliveryLookup:
        return DeliveryLookup.objects.create(
            customer=method.customer, method=method, status=status, period_start=period_start
        )

    first = lookup(LookupStatus.PENDING)
    refused_by_database(lambda: lookup(LookupStatus.PENDING))
    refused_by_database(lambda: lookup(LookupStatus.RUNNING))
    # Finished lookups don't count, and another method is independent.
    lookup(LookupStatus.SUCCEEDED)
    lookup(LookupStatus.FAILED)
    DeliveryLookup.objects.create(
        customer=method.customer,
        method=factories.MethodFactory(customer=method.customer),
        period_start=period_start,
    )

    first.status = LookupStatus.SUCCEEDED
    first.save()
    lookup(LookupStatus.PENDING)
    assert DeliveryLookup.objects.filter(method=method).count() == 4


def test_a_closed_session_needs_an_outcome():
    agent = factories.UserFactory()
    customer = factories.CustomerFactory()
    refused_by_database(
        lambda: TroubleshootingSession.objects.create(
            customer=customer, agent=agent, closed_at=timezone.now()
        )
    )


# ---------------------------------------------------------------------------------------------
# Data installed by the migrations
# ---------------------------------------------------------------------------------------------


def test_migrations_create_the_roles_with_their_permissions():
    agent = Group.objects.get(name="support_agent")
    producer = Group.objects.get(name="event_producer")

    agent_perms = set(agent.permissions.values_list("codename", flat=True))
    assert {
        "view_customer",
        "view_method",
        "view_deliverylookup",
        "add_deliverylookup",
        "add_troubleshootingsession",
    } <= agent_perms
    assert not {p for p in agent_perms if p.startswith(("delete_", "lift_"))}
    assert "add_event" not in agent_perms
    assert set(producer.permissions.values_list("codename", flat=True)) == {"add_event"}


def test_migrations_install_the_default_sender_and_the_india_advisory():
    sender = SenderNumber.objects.get(phone_number="+14803605516")
    assert sender.active

    india = RegionalAdvisory.objects.get(region="IN")
    assert india.active
    assert "Twilio" in india.message
    assert "India" in india.message


def test_deleting_an_agent_keeps_their_audit_trail_as_written(agent):
    from twosv.audit import audit_record
    from twosv.models import AuditEntry

    entry_id = audit_record(actor=agent, action="state_read", result="ok", customer_ref="cust-1")
    agent_id = agent.pk

    agent.delete()

    kept = AuditEntry.objects.get(pk=entry_id)
    assert kept.actor_id == agent_id
    assert kept.actor_username == "agent"
    assert (kept.action, kept.customer_ref) == ("state_read", "cust-1")
