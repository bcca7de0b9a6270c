"""Drop the single-column index on twosv_event.method_id.

`event_method_order_idx` (method, occurred_at, event_id) starts with the same column and serves
every lookup by method; the second index only cost every insert its upkeep and, after a large
purge, misled the planner into reading a method's whole history through it
(docs/performance.md, "Runs for issue 19"). On PostgreSQL it is dropped CONCURRENTLY: events keep
arriving during the migration.
"""

from django.db import migrations, models


def drop_method_index(apps, schema_editor):
    Event = apps.get_model("twosv", "Event")
    table = Event._meta.db_table
    name = schema_editor._create_index_name(table, ["method_id"], suffix="")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")
    else:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create_method_index(apps, schema_editor):
    Event = apps.get_model("twosv", "Event")
    table = Event._meta.db_table
    name = schema_editor._create_index_name(table, ["method_id"], suffix="")
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f"CREATE INDEX {concurrently}IF NOT EXISTS {schema_editor.quote_name(name)} "
        f"ON {schema_editor.quote_name(table)} (method_id)"
    )


class Migration(migrations.Migration):
    # DROP INDEX CONCURRENTLY can't run inside a transaction.
    atomic = False

    dependencies = [
        ("twosv", "0011_method_active_phone_idx"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="method",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=models.deletion.PROTECT,
                        related_name="events",
                        to="twosv.method",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_method_index, create_method_index),
            ],
        ),
    ]
