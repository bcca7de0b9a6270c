"""Create the roles (groups) with their permissions, the default sender number and India advisory."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "support_agent": [
        "view_customer",
        "view_method",
        "view_deliverylookup",
        "add_deliverylookup",
        "view_troubleshootingsession",
        "add_troubleshootingsession",
        "change_troubleshootingsession",
    ],
    "event_producer": ["add_event"],
}
DEFAULT_SENDER = "+14803605516"
INDIA_ADVISORY = "Our text message provider Twilio might have problems reaching numbers in India."


def forwards(apps, schema_editor):
    # Permissions are normally created after all migrations ran; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="twosv", codename__in=codenames)
        )

    SenderNumber = apps.get_model("twosv", "SenderNumber")
    SenderNumber.objects.get_or_create(
        phone_number=DEFAULT_SENDER, defaults={"label": "2SV codes (Twilio)"}
    )
    RegionalAdvisory = apps.get_model("twosv", "RegionalAdvisory")
    if not RegionalAdvisory.objects.filter(region="IN").exists():
        RegionalAdvisory.objects.create(region="IN", message=INDIA_ADVISORY)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("twosv", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
