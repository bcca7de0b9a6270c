"""Blocked resends counted by the lock; a session's phone rechecks (issue 17, SPEC §4 and §5)."""

from django.db import migrations, models
from django.db.models import Count, F, Q
from django.utils import timezone


def count_blocked_resends(apps, schema_editor):
    """Count the requests already refused by the locks active now: the fold counts the rest."""
    Method = apps.get_model("twosv", "Method")
    Event = apps.get_model("twosv", "Event")
    now = timezone.now()
    locked = Method.objects.filter(locked_until__gt=now).filter(
        Q(lock_lifted_at__isnull=True) | Q(lock_lifted_at__gt=now)
    )
    for method in locked.iterator():
        blocked = Event.objects.filter(
            method_id=method.pk, outcome="blocked", occurred_at__gte=method.locked_at
        ).aggregate(n=Count("id"))["n"]
        if blocked:
            Method.objects.filter(pk=method.pk).update(lock_blocked=F("lock_blocked") + blocked)


class Migration(migrations.Migration):
    dependencies = [
        ("twosv", "0007_checkpoints_retention"),
    ]

    operations = [
        migrations.AddField(
            model_name="method",
            name="lock_blocked",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="methodcheckpoint",
            name="lock_blocked",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="troubleshootingsession",
            name="phone_number_changed",
            field=models.BooleanField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="troubleshootingsession",
            name="phone_check_misses",
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(count_blocked_resends, migrations.RunPython.noop, elidable=True),
    ]
