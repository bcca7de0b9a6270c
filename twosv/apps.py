from django.apps import AppConfig


class TwosvConfig(AppConfig):
    name = "twosv"
    verbose_name = "Two-step verification"
    default_auto_field = "django.db.models.BigAutoField"
