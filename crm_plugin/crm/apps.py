from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm_plugin.crm"
    label = "crm"
    verbose_name = "CRM integration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.exceptions import ImproperlyConfigured

        from crm_plugin.crm.assertions import configuration_errors

        # gunicorn and Celery run no system checks: a key that can't verify anything must stop
        # start-up, not answer 401 to every agent.
        errors = configuration_errors()
        if errors:
            raise ImproperlyConfigured("\n".join(errors))
