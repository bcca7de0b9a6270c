"""Delivery incidents (docs/SPEC.md §11): attempts carry their number's region; incidents."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def fill_attempt_regions(apps, schema_editor):
    """Give existing attempts the region of their method's number: one UPDATE per region."""
    import phonenumbers

    Method = apps.get_model("twosv", "Method")
    DeliveryAttempt = apps.get_model("twosv", "DeliveryAttempt")
    by_region: dict[str, list[int]] = {}
    methods = (
        Method.objects.exclude(phone_number="")
        .filter(lookups__attempts__isnull=False)
        .values_list("pk", "phone_number")
        .distinct()
        .order_by()
    )
    for pk, number in methods.iterator(chunk_size=2000):
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            continue
        if region and len(region) == 2 and region.isalpha():
            by_region.setdefault(region, []).append(pk)
    for region, pks in by_region.items():
        for start in range(0, len(pks), 5000):
            DeliveryAttempt.objects.filter(
                lookup__method_id__in=pks[start : start + 5000], region=""
            ).update(region=region)


class Migration(migrations.Migration):
    dependencies = [
        ("twosv", "0008_blocked_resends_phone_rechecks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="deliveryattempt",
            name="region",
            field=models.CharField(blank=True, default="", max_length=2),
        ),
        migrations.RunPython(fill_attempt_regions, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="deliveryattempt",
            index=models.Index(
                condition=models.Q(("region", ""), _negated=True),
                fields=["region", "sent_at"],
                include=("status", "error_code", "external_id"),
                name="attempt_region_sent_idx",
            ),
        ),
        migrations.CreateModel(
            name="Incident",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "region",
                    models.CharField(help_text="ISO 3166-1 alpha-2, e.g. IN", max_length=2),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("open", "Open"),
                            ("confirmed", "Confirmed"),
                            ("dismissed", "Dismissed"),
                            ("resolved", "Resolved"),
                        ],
                        default="open",
                        max_length=16,
                    ),
                ),
                (
                    "attempts",
                    models.PositiveIntegerField(help_text="Messages in the detection window"),
                ),
                (
                    "failures",
                    models.PositiveIntegerField(help_text="Of which failed or undelivered"),
                ),
                ("share", models.FloatField(help_text="failures / attempts, 0 to 1")),
                (
                    "baseline",
                    models.FloatField(help_text="The failed share over the previous 7 days"),
                ),
                ("top_error_codes", models.JSONField(blank=True, default=list)),
                ("opened_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                ("below_since", models.DateTimeField(blank=True, null=True)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                ("confirmed_at", models.DateTimeField(blank=True, null=True)),
                ("dismissed_at", models.DateTimeField(blank=True, null=True)),
                ("reason", models.CharField(blank=True, max_length=500)),
                ("quiet_until", models.DateTimeField(blank=True, null=True)),
                (
                    "confirmed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "dismissed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "resolved_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-opened_at"],
                "permissions": [
                    ("manage_incident", "Can confirm, dismiss and resolve delivery incidents")
                ],
                "indexes": [models.Index(fields=["status", "region"], name="incident_status_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("status__in", ["open", "confirmed"])),
                        fields=("region",),
                        name="incident_one_active_per_region",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("status__in", ["open", "confirmed", "dismissed", "resolved"])
                        ),
                        name="incident_status_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("region__regex", "^[A-Z]{2}$")),
                        name="incident_region_iso",
                    ),
                ],
            },
        ),
    ]
