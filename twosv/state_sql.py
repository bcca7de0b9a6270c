"""The state read's one statement, and on PostgreSQL the same statement as a PL/pgSQL function.

The customer, their methods and each method's latest lookup come back in one statement.
Hand-written: building the three ORM queries it replaces cost many times the statement's own
time, and the state read is the agents' most frequent request (docs/performance.md).

PostgreSQL plans a plain statement every time it is sent, and for this one planning is most of
its server time. A prepared statement would keep the plan but is session state, which a pooler
in transaction mode hands to other clients and an ALTER TABLE under traffic breaks (twosv/sql.py).
A PL/pgSQL function keeps its plans too, per server connection, and is none of those things:
it is an object of the database, so any pooled connection can call it, and PostgreSQL re-plans
its statement by itself when a table it reads changes. Each column is cast to its type without
modifier, so widening a column never changes the function's row type.

The function is named after a hash of the statement: code that selects other columns calls a
function of its own, so old and new code can run side by side during a deploy. It is created
after every `migrate` (`create_state_functions`, a post_migrate handler); until it exists
(a process started before the migration) the plain statement is sent instead.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, cast

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from twosv.models import Customer, DeliveryLookup, Method
from twosv.sql import ModelColumns

if TYPE_CHECKING:
    from django.db.backends.utils import CursorWrapper

CUSTOMER_COLUMNS = ModelColumns(Customer, "c")
METHOD_COLUMNS = ModelColumns(Method, "m")
LOOKUP_COLUMNS = ModelColumns(DeliveryLookup, "l")
_COLUMNS = (CUSTOMER_COLUMNS, METHOD_COLUMNS, LOOKUP_COLUMNS)

# Portable SQL (PostgreSQL and SQLite); the correlated subquery walks lookup_method_latest_idx.
_STATE_SQL = """
SELECT {columns}
FROM {customer} c
LEFT JOIN {method} m ON m.customer_id = c.id
LEFT JOIN {lookup} l ON l.id = (
    SELECT d.id FROM {lookup} d
    WHERE d.method_id = m.id
    ORDER BY d.created_at DESC, d.id DESC
    LIMIT 1
)
WHERE c.{key} = {value}
ORDER BY m.enrolled_at, m.id
"""
# What the state can be looked up by: the customer's pk (sessions) or their id (the API).
KEYS = ("id", "customer_id")
_TABLES = {
    "customer": Customer._meta.db_table,
    "method": Method._meta.db_table,
    "lookup": DeliveryLookup._meta.db_table,
}
STATE_SQL_BY = {
    key: _STATE_SQL.format(
        columns=", ".join(columns.select for columns in _COLUMNS), key=key, value="%s", **_TABLES
    )
    for key in KEYS
}


_FUNCTION_NAMES = {
    key: f"twosv_state_by_{key}_{hashlib.sha256(STATE_SQL_BY[key].encode()).hexdigest()[:12]}"
    for key in KEYS
}


def function_name(key: str) -> str:
    """The PL/pgSQL function of this code's statement for `key`."""
    return _FUNCTION_NAMES[key]


def _column_types(cursor: CursorWrapper) -> dict[tuple[str, str], str]:
    """Return the type of every column of the three tables, without modifier."""
    cursor.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "AND pg_table_is_visible(c.oid)",
        [list(_TABLES.values())],
    )
    return {(table, column): type_ for table, column, type_ in cursor.fetchall()}


def function_sql(key: str, types: dict[tuple[str, str], str]) -> str:
    """The CREATE FUNCTION statement for `key`, given the tables' column types."""
    outputs: list[str] = []
    selects: list[str] = []
    for columns in _COLUMNS:
        table = columns.model._meta.db_table
        for field in columns.fields:
            type_ = types[(table, field.column)]
            outputs.append(f"{columns.alias}_{field.column} {type_}")
            selects.append(f"{columns.alias}.{field.column}::{type_}")
    body = _STATE_SQL.format(columns=", ".join(selects), key=key, value="p_value", **_TABLES)
    key_type = types[(_TABLES["customer"], key)]
    return (
        f"CREATE FUNCTION {function_name(key)}(p_value {key_type}) "
        f"RETURNS TABLE ({', '.join(outputs)}) LANGUAGE plpgsql STABLE AS $body$\n"
        "#variable_conflict use_column\n"
        f"BEGIN RETURN QUERY {body}; END\n$body$"
    )


def create_state_functions(using: str = "default", **kwargs: object) -> None:
    """Create (or re-create) this code's state functions: a post_migrate handler."""
    from django.db import connections

    db = connections[using]
    if db.vendor != "postgresql":
        return
    # Re-created after every migration (a column's type may have changed), in one transaction:
    # a concurrent caller sees the old function until the new one is committed.
    with transaction.atomic(using=using), db.cursor() as cursor:
        types = _column_types(cursor)
        for key in KEYS:
            cursor.execute(f"DROP FUNCTION IF EXISTS {function_name(key)}")
            cursor.execute(function_sql(key, types))
            _available[(db.alias, function_name(key))] = (True, time.monotonic())


# Whether this process found each function, and when it looked (it looks again after a while:
# a process started before `migrate` created them starts to use them without a restart).
_available: dict[tuple[str, str], tuple[bool, float]] = {}
RECHECK_SECONDS = 60.0


def _use_function(db: BaseDatabaseWrapper, cursor: Any, key: str) -> bool:
    if db.vendor != "postgresql":
        return False
    name = function_name(key)
    known = _available.get((db.alias, name))
    if known is not None and known[0]:
        return True
    now = time.monotonic()
    if known is None or now - known[1] > RECHECK_SECONDS:
        cursor.execute("SELECT to_regproc(%s) IS NOT NULL", [name])
        known = (bool(cursor.fetchone()[0]), now)
        _available[(db.alias, name)] = known
    return known[0]


def state_rows(
    key: str, value: str | int, customer: Customer | None = None
) -> tuple[Customer | None, tuple[Method, ...], dict[int, DeliveryLookup]]:
    """Return the customer (`customer` if given), their methods and each method's latest
    lookup (by method pk), in one statement."""
    with connection.cursor() as cursor:
        db = cursor.db  # looked up once: `connection` is a per-context proxy
        if _use_function(db, cursor, key):
            cursor.execute(f"SELECT * FROM {function_name(key)}(%s)", [value])  # noqa: S608
        else:
            cursor.execute(STATE_SQL_BY[key], [value])
        rows = cursor.fetchall()
    if not rows:
        return None, (), {}
    if customer is None:
        customer = cast(Customer, CUSTOMER_COLUMNS.build(db, rows[0], 0))
    at_method = len(CUSTOMER_COLUMNS)
    at_lookup = at_method + len(METHOD_COLUMNS)
    methods: list[Method] = []
    lookups: dict[int, DeliveryLookup] = {}
    for row in rows:
        method = cast(Method | None, METHOD_COLUMNS.build(db, row, at_method))
        if method is None:  # a customer without methods: one row, all of its m columns null
            continue
        method.customer = customer
        methods.append(method)
        lookup = cast(DeliveryLookup | None, LOOKUP_COLUMNS.build(db, row, at_lookup))
        if lookup is not None:
            lookup.customer = customer
            lookup.method = method
            lookups[method.pk] = lookup
    return customer, tuple(methods), lookups
