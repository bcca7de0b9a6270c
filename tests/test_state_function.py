"""The state read's PL/pgSQL function (twosv/state_sql.py): created by `migrate`, the same rows as
the plain statement, unharmed by a column changing type under it, and never required: a process
that finds no function sends the plain statement and picks the function up once it exists."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.builders import T0
from tests.test_sql import fields_of, locked_method_with_a_lookup
from twosv import state_sql
from twosv.models import Customer
from twosv.selectors import TwosvState, access_customer_state

# Each test's DDL is rolled back with its transaction; `finally` restores this process's view.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def read_state(customer_id: str) -> tuple[TwosvState, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        state = access_customer_state(customer_id=customer_id, now=T0)
    return state, [q["sql"].lstrip() for q in captured.captured_queries]


def calls_function(sent: list[str]) -> bool:
    return any(
        text.startswith(f"SELECT * FROM {state_sql.function_name('customer_id')}(") for text in sent
    )


def test_migrate_creates_the_functions_and_they_return_the_plain_statements_rows():
    method, _ = locked_method_with_a_lookup()
    customer_id = method.customer.customer_id
    with connection.cursor() as cursor:
        for key in state_sql.KEYS:
            cursor.execute("SELECT to_regproc(%s) IS NOT NULL", [state_sql.function_name(key)])
            assert cursor.fetchone() == (True,)
        cursor.execute(f"SELECT * FROM {state_sql.function_name('customer_id')}(%s)", [customer_id])
        through_function = cursor.fetchall()
        cursor.execute(state_sql.STATE_SQL_BY["customer_id"], [customer_id])
        plain = cursor.fetchall()

    assert through_function == plain
    assert len(plain) == 1


def test_a_column_changing_type_under_an_open_connection_keeps_the_state_answering():
    """As a migration changing display_name from varchar(200) to text would, on a connection
    that has already used the function (and holds its plan)."""
    method, _ = locked_method_with_a_lookup()
    customer_id = method.customer.customer_id
    state, sent = read_state(customer_id)
    assert calls_function(sent)
    table = Customer._meta.db_table
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN display_name TYPE text")
            cursor.execute(f"UPDATE {table} SET display_name = %s", ["A" * 250])

        state, sent = read_state(customer_id)
        assert calls_function(sent)
        assert state.customer.display_name == "A" * 250

        # What `migrate` does next: the function follows the new column type.
        state_sql.create_state_functions()
        state, _ = read_state(customer_id)
        assert state.customer.display_name == "A" * 250
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET display_name = left(display_name, 200)")
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN display_name TYPE varchar(200)")
        state_sql.create_state_functions()


def test_without_the_function_the_plain_statement_answers_until_migrate_creates_it(monkeypatch):
    method, lookup = locked_method_with_a_lookup()
    customer_id = method.customer.customer_id
    expected, _ = read_state(customer_id)
    name = state_sql.function_name("customer_id")
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP FUNCTION {name}")
        state_sql._available.clear()  # a process started before `migrate`

        state, sent = read_state(customer_id)
        assert not calls_function(sent)
        assert any(" c.customer_id = " in text for text in sent)
        assert fields_of(state.customer) == fields_of(expected.customer)
        assert state.latest_lookup is not None
        assert state.latest_lookup.pk == lookup.pk

        # Another process runs `migrate`; this one looks again after RECHECK_SECONDS.
        with connection.cursor() as cursor:
            types = state_sql._column_types(cursor)
            cursor.execute(state_sql.function_sql("customer_id", types))
        _, sent = read_state(customer_id)
        assert not calls_function(sent)
        monkeypatch.setattr(state_sql, "RECHECK_SECONDS", 0.0)
        _, sent = read_state(customer_id)
        assert calls_function(sent)
    finally:
        state_sql.create_state_functions()
