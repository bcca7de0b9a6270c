"""Hand-written SQL for the agents' hottest paths: joined rows read back as model instances.

Used where `make bench` showed the ORM's per-statement work to dominate a request; everything
else goes through the ORM. No statement leaves session state on the server connection
(PREPARE, a session-wide SET, temporary tables) that a pooler in transaction mode (PgBouncer's
``pool_mode = transaction``) would hand to another client, or a prepared plan that an
``ALTER TABLE`` under live traffic would break; where a plan is worth keeping, a PL/pgSQL
function keeps it (twosv/state_sql.py, docs/performance.md).
"""

from collections.abc import Callable, Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.expressions import Col


class ModelColumns:
    """Every column of `model` under the table alias `alias`, and the instance read back from
    those columns of a joined row, with the same conversions the ORM applies."""

    def __init__(self, model: type[Model], alias: str) -> None:
        self.model = model
        self.alias = alias
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
