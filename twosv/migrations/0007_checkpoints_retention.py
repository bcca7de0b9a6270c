"""Checkpoints of the lock projection and the retention horizon (issue 19, SPEC §8)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("twosv", "0006_phonecheck"),
    ]

    operations = [
        migrations.AddField(
            model_name="method",
            name="checkpoint_lag",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="method",
            name="purged_before",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RemoveConstraint(
            model_name="method",
            name="method_phone_required_for_sms_voice",
        ),
        migrations.AddConstraint(
            model_name="method",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("kind__in", ["sms", "voice"]), _negated=True),
                    models.Q(("phone_number", ""), _negated=True),
                    ("removed_at__isnull", False),
                    _connector="OR",
                ),
                name="method_phone_required_for_sms_voice",
            ),
        ),
        migrations.CreateModel(
            name="MethodCheckpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_at", models.DateTimeField()),
                ("event_id", models.CharField(max_length=128)),
                ("resend_times", models.JSONField(blank=True, default=list)),
                ("locked_at", models.DateTimeField(blank=True, null=True)),
                ("locked_until", models.DateTimeField(blank=True, null=True)),
                ("lock_lifted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "method",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="checkpoints",
                        to="twosv.method",
                    ),
                ),
            ],
            options={
                "ordering": ["method_id", "event_at", "event_id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("method", "event_at", "event_id"), name="checkpoint_method_key"
                    )
                ],
            },
        ),
    ]
