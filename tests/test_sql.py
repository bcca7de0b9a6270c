"""The hand-written state read and audit insert: the same rows as the ORM, as plain queries.

Through a pooler and across a live ALTER TABLE: tests/test_pooler.py.
"""

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from tests import factories
from tests.builders import T0
from twosv.audit import AUDIT_COLUMNS, AuditContext, audit_record
from twosv.models import AuditEntry, DeliveryLookup, Method
from twosv.selectors import access_customer_state
from twosv.state_sql import function_name


def fields_of(instance: object) -> dict[str, object]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def locked_method_with_a_lookup() -> tuple[Method, DeliveryLookup]:
    """A method with every column filled in (JSON, nullable timestamps) and a finished lookup."""
    method = factories.MethodFactory(
        label="Work phone",
        phone_changed_at=T0 - timedelta(days=3),
        resend_times=[(T0 - timedelta(minutes=i)).isoformat() for i in range(3)],
        locked_at=T0 - timedelta(hours=1),
        locked_until=T0 + timedelta(hours=23),
        last_event_at=T0 - timedelta(minutes=1),
        last_event_id="evt-1",
    )
    lookup = DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        status="succeeded",
        verdict="carrier_filtered",
        period_start=T0 - timedelta(days=1),
        tries=2,
        enqueued_at=T0 - timedelta(minutes=3),
        started_at=T0 - timedelta(minutes=2),
        finished_at=T0 - timedelta(minutes=1),
    )
    return method, lookup


@pytest.mark.django_db
def test_the_state_read_loads_every_column_as_the_orm_does():
    method, lookup = locked_method_with_a_lookup()

    state = access_customer_state(customer_id=method.customer.customer_id, now=T0)

    assert fields_of(state.customer) == fields_of(type(state.customer).objects.get())
    assert [fields_of(m.method) for m in state.methods] == [fields_of(Method.objects.get())]
    assert state.latest_lookup is not None
    assert fields_of(state.latest_lookup) == fields_of(DeliveryLookup.objects.get(pk=lookup.pk))
    assert state.methods[0].method.resend_times == method.resend_times
    assert state.methods[0].method.locked_until == T0 + timedelta(hours=23)


@pytest.mark.django_db
def test_the_audit_row_reads_back_as_written(agent, time_machine):
    time_machine.move_to(T0, tick=False)
    method = factories.MethodFactory()

    entry_id = audit_record(
        actor=agent,
        action="state_read",
        result="ok",
        customer_ref="cust-1",
        obj=method,
        details={"next_step": "wait_for_lock", "n": 2},
        context=AuditContext(request_id="req-1", client_ip="2001:db8::1"),
    )

    stored = AuditEntry.objects.get(pk=entry_id)
    assert fields_of(stored) == {
        "id": entry_id,
        "created_at": T0,
        "actor_id": agent.pk,
        "actor_username": agent.username,
        "action": "state_read",
        "result": "ok",
        "customer_ref": "cust-1",
        "object_type": "Method",
        "object_id": str(method.pk),
        "details": {"next_step": "wait_for_lock", "n": 2},
        "request_id": "req-1",
        "client_ip": "2001:db8::1",
    }


def test_the_audit_insert_writes_every_column_of_the_model():
    """A column added to AuditEntry must be added to the hand-written insert too."""
    columns = {f.attname for f in AuditEntry._meta.concrete_fields if not f.primary_key}

    assert sorted(AUDIT_COLUMNS) == sorted(columns)


@pytest.mark.django_db
def test_the_state_read_and_the_audit_insert_are_one_plain_statement_each():
    """No PREPARE/EXECUTE or other session state: a pooler in transaction mode may run each
    statement on another server connection (tests/test_pooler.py)."""
    method, _ = locked_method_with_a_lookup()
    customer_id = method.customer.customer_id
    access_customer_state(customer_id=customer_id, now=T0)  # advisories cached

    with CaptureQueriesContext(connection) as captured:
        access_customer_state(customer_id=customer_id, now=T0)
        audit_record(actor=None, action="state_read", result="ok", customer_ref=customer_id)

    sent = [q["sql"].lstrip() for q in captured.captured_queries]
    session_state = ("PREPARE", "EXECUTE", "DEALLOCATE", "SET ", "LISTEN", "CREATE TEMP")
    assert not [text for text in sent if text.upper().startswith(session_state)]
    # On PostgreSQL the statement runs as its PL/pgSQL function (twosv/state_sql.py).
    function = f"SELECT * FROM {function_name('customer_id')}("
    assert (
        len(
            [
                text
                for text in sent
                if text.startswith(function)
                or (text.startswith("SELECT") and " c.customer_id = " in text)
            ]
        )
        == 1
    )
    assert (
        len([text for text in sent if text.startswith(f"INSERT INTO {AuditEntry._meta.db_table} ")])
        == 1
    )


def read_and_audit_then_fail(customer_id: str) -> None:
    with transaction.atomic():
        access_customer_state(customer_id=customer_id, now=T0)
        audit_record(actor=None, action="state_read", result="ok")
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")


@pytest.mark.postgres
# serialized_rollback: a plain flush re-creates the content types, which the next
# serialized_rollback test (tests/test_concurrency.py) then fails to load again.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_reads_and_audit_rows_still_work_after_a_reconnect_and_a_rolled_back_transaction():
    method, _ = locked_method_with_a_lookup()
    customer_id = method.customer.customer_id
    connection.close()  # a new database session, as after CONN_MAX_AGE
    with pytest.raises(DatabaseError):
        read_and_audit_then_fail(customer_id)
    assert access_customer_state(customer_id=customer_id, now=T0).customer.pk
    connection.close()

    state = access_customer_state(customer_id=customer_id, now=T0)
    audit_record(actor=None, action="state_read", result="ok", customer_ref=customer_id)

    assert [m.method.method_id for m in state.methods] == [method.method_id]
    # The row of the rolled-back transaction is gone; the one after the reconnect is kept.
    assert list(AuditEntry.objects.values_list("customer_ref", flat=True)) == [customer_id]


@pytest.mark.postgres
# serialized_rollback: a plain flush re-creates the content types, which the next
# serialized_rollback test (tests/test_concurrency.py) then fails to load again.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_reads_and_audit_rows_survive_a_discard_all_on_the_session():
    """A pooler's reset query (PgBouncer's server_reset_query, DISCARD ALL) costs nothing."""
    method, _ = locked_method_with_a_lookup()
    customer_id = method.customer.customer_id
    access_customer_state(customer_id=customer_id, now=T0)
    audit_record(actor=None, action="state_read", result="ok", customer_ref=customer_id)
    with connection.cursor() as cursor:
        cursor.execute("DISCARD ALL")

    state = access_customer_state(customer_id=customer_id, now=T0)
    audit_record(actor=None, action="state_read", result="ok", customer_ref=customer_id)

    assert [m.method.method_id for m in state.methods] == [method.method_id]
    assert AuditEntry.objects.filter(customer_ref=customer_id).count() == 2
