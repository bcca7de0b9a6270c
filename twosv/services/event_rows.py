"""The batch's events, written as rows with one hand-written INSERT per chunk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from twosv.models import Event, Method


@dataclass(frozen=True, slots=True)
class EventRow:
    """An accepted event of a batch, until its row is written."""

    event_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]
    outcome: str


# The batch's events go in as rows, not model instances: building 500 Events and letting
# bulk_create prepare them field by field was a third of a batch's time in the app (cProfile,
# `make bench` figure e). tests/test_api_events.py holds these columns equal to the
# model's; the rows are what event_ingest would store, received_at one clock reading a batch.
EVENT_COLUMNS = (
    "event_id",
    "type",
    "customer_id",
    "method_id",
    "occurred_at",
    "received_at",
    "data",
    "outcome",
    "actor_id",
)
_EVENT_COLUMN_OF = {field.attname: field.column for field in Event._meta.concrete_fields}


def events_insert(to_insert: list[tuple[EventRow, Method]]) -> None:
    """Insert the batch's accepted events, each with the method it belongs to."""
    received_at = timezone.now()
    with connection.cursor() as cursor:
        db = cursor.db  # looked up once: `connection` is a per-context proxy
        adapt = db.ops.adapt_datetimefield_value
        received = adapt(received_at)
        rows = [
            (
                event.event_id,
                event.type,
                method.customer_id,
                method.pk,
                adapt(event.occurred_at),
                received,
                json.dumps(event.data),
                event.outcome,
                None,  # producers' events have no acting user (only an admin's lock lift has)
            )
            for event, method in to_insert
        ]
        # SQLite caps the parameters of one statement; PostgreSQL takes the batch at once.
        per_statement = len(rows)
        if db.features.max_query_params:
            per_statement = max(1, db.features.max_query_params // len(EVENT_COLUMNS))
        row_sql = f"({', '.join(['%s'] * len(EVENT_COLUMNS))})"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                _EVENT_INSERT + ", ".join([row_sql] * len(chunk)),
                [value for row in chunk for value in row],
            )


# Identifiers from the model, values as parameters: no input reaches the text.
_EVENT_INSERT = "INSERT INTO {table} ({columns}) VALUES ".format(  # noqa: S608
    table=Event._meta.db_table,
    columns=", ".join(_EVENT_COLUMN_OF[name] for name in EVENT_COLUMNS),
)
