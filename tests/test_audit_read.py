"""A read's audit row (`twosv.audit.audit_read`): on PostgreSQL outside a transaction, its own
transaction committed without waiting for the disk, in one round trip, leaving nothing behind on
the connection; inside a transaction, part of it; a failure leaves the connection usable."""

from __future__ import annotations

import psycopg2
import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from tests.infra import django_database_url
from twosv.audit import AuditAction, audit_read
from twosv.models import AuditEntry

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def rows_seen_elsewhere(customer_ref: str) -> int:
    """Count the rows from a connection of its own: only committed rows show."""
    other = psycopg2.connect(django_database_url(connection.settings_dict), connect_timeout=5)
    try:
        with other.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM {AuditEntry._meta.db_table} WHERE customer_ref = %s",
                [customer_ref],
            )
            return int(cursor.fetchone()[0])
    finally:
        other.close()


def server_state() -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        setting = str(cursor.fetchone()[0])
    return connection.connection.get_transaction_status(), setting


def test_a_read_row_is_committed_in_one_round_trip_and_leaves_the_connection_as_it_was():
    with CaptureQueriesContext(connection) as captured:
        audit_read(actor=None, action=AuditAction.STATE_READ, customer_ref="c-read")

    assert len(captured.captured_queries) == 1
    sent = captured.captured_queries[0]["sql"]
    assert sent.startswith("BEGIN; SET LOCAL synchronous_commit TO OFF; INSERT")
    assert sent.endswith("; COMMIT")
    assert rows_seen_elsewhere("c-read") == 1
    entry = AuditEntry.objects.get(customer_ref="c-read")
    assert (entry.action, entry.result) == ("state_read", "ok")
    # Back in autocommit with the server's own setting: SET LOCAL ended with the transaction.
    assert server_state() == (TRANSACTION_STATUS_IDLE, "on")


def test_a_failed_read_row_raises_and_leaves_the_connection_usable():
    with pytest.raises(DataError):
        audit_read(actor=None, action=AuditAction.STATE_READ, customer_ref="x" * 65)

    assert server_state() == (TRANSACTION_STATUS_IDLE, "on")
    assert AuditEntry.objects.count() == 0
    audit_read(actor=None, action=AuditAction.STATE_READ, customer_ref="c-after")
    assert rows_seen_elsewhere("c-after") == 1


def test_inside_a_transaction_the_row_is_the_transactions_and_waits_for_it():
    with transaction.atomic():
        with CaptureQueriesContext(connection) as captured:
            audit_read(actor=None, action=AuditAction.SESSION_READ, customer_ref="c-atomic")
        assert not captured.captured_queries[0]["sql"].startswith("BEGIN")
        assert rows_seen_elsewhere("c-atomic") == 0
    assert rows_seen_elsewhere("c-atomic") == 1

    def read_then_fail() -> None:
        with transaction.atomic():
            audit_read(actor=None, action=AuditAction.SESSION_READ, customer_ref="c-rolled-back")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        read_then_fail()
    assert not AuditEntry.objects.filter(customer_ref="c-rolled-back").exists()
