"""Hand-written SQL for the agents' hottest paths: prepared statements and joined-row models.

Used where `make bench` showed the ORM's or the database's per-statement work to dominate a
request; everything else goes through the ORM.
"""

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.expressions import Col

# Per raw PostgreSQL connection, the names of the statements prepared on it. Keyed weakly on the
# psycopg2 connection itself: when Django reconnects, the new connection starts empty, as the
# new database session does.
_prepared: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()


def execute_prepared(cursor: Any, name: str, sql: str, params: Sequence[Any]) -> None:
    """Run `sql` (``%s`` placeholders) with `params`, on PostgreSQL as a prepared statement.

    PostgreSQL parses and plans every statement it is sent; for the state read that was most of
    the statement's server time (docs/performance.md). The statement is prepared on first use
    in each database session and executed by name after.
    PREPARE outlives a rolled-back transaction, so the bookkeeping cannot go stale that way.
    Session-level statements do not survive a pooler in transaction mode (PgBouncer's
    ``pool_mode = transaction``): connect directly, or in session mode.
    """
    db = cursor.db  # the cursor's own connection: `connection` is a per-context lookup
    if db.vendor != "postgresql":
        cursor.execute(sql, params)
        return
    names = _prepared.setdefault(db.connection, set())
    if name not in names:
        _prepare(cursor, name, sql)
        names.add(name)
    statement = f"EXECUTE {name}({', '.join(['%s'] * len(params))})"
    try:
        cursor.execute(statement, params)
    except DatabaseError as error:
        if getattr(error.__cause__, "pgcode", None) != _INVALID_SQL_STATEMENT_NAME:
            raise
        # Someone ran DEALLOCATE (or DISCARD ALL) on this session. Forget what it had; outside
        # a transaction prepare again at once, inside one the transaction is lost anyway and the
        # next use prepares again.
        names.clear()
        if db.in_atomic_block:
            raise
        _prepare(cursor, name, sql)
        names.add(name)
        cursor.execute(statement, params)


_INVALID_SQL_STATEMENT_NAME = "26000"


def _prepare(cursor: Any, name: str, sql: str) -> None:
    numbered = sql.split("%s")
    text = "".join(f"{part}${i}" for i, part in enumerate(numbered[:-1], start=1))
    cursor.execute(f"PREPARE {name} AS {text}{numbered[-1]}")


class ModelColumns:
    """Every column of `model` under the table alias `alias`, and the instance read back from
    those columns of a joined row, with the same conversions the ORM applies."""

    def __init__(self, model: type[Model], alias: str) -> None:
        self.model = model
        self.fields: tuple[Field[Any, Any], ...] = tuple(model._meta.concrete_fields)
        self.attnames = [field.attname for field in self.fields]
        self.select = ", ".join(f"{alias}.{field.column}" for field in self.fields)
        self._pk_index = self.attnames.index(model._meta.pk.attname)
        self._converters: dict[str, list[tuple[int, Col, list[Callable[..., Any]]]]] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def build(self, db: BaseDatabaseWrapper, row: Sequence[Any], start: int) -> Model | None:
        """Return the instance in ``row[start:start + len(self)]`` as read from `db`, or None
        where a LEFT JOIN found nothing (a null primary key)."""
        values = list(row[start : start + len(self.fields)])
        if values[self._pk_index] is None:
            return None
        for index, col, converters in self._converters_for(db):
            value = values[index]
            for convert in converters:
                value = convert(value, col, db)
            values[index] = value
        return self.model.from_db(db.alias, self.attnames, values)

    def _converters_for(
        self, db: BaseDatabaseWrapper
    ) -> list[tuple[int, Col, list[Callable[..., Any]]]]:
        cached = self._converters.get(db.vendor)
        if cached is None:
            cached = []
            for index, field in enumerate(self.fields):
                col = field.get_col(self.model._meta.db_table)
                converters = [*db.ops.get_db_converters(col), *col.get_db_converters(db)]
                if converters:
                    cached.append((index, col, converters))
            self._converters[db.vendor] = cached
        return cached
