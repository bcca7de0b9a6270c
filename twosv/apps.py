from django.apps import AppConfig


class TwosvConfig(AppConfig):
    name = "twosv"
    verbose_name = "Two-step verification"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.exceptions import ImproperlyConfigured
        from django.db.models.signals import post_delete, post_migrate, post_save

        from twosv import checks

        # Also a system check (`manage.py check`), but gunicorn and Celery run no checks: a
        # worker must not start with timings that hand live tries to a second worker.
        errors = checks.lookup_timing_errors()
        if errors:
            raise ImproperlyConfigured("\n".join(str(error.msg) for error in errors))

        from twosv.models import RegionalAdvisory, SenderNumber
        from twosv.state_sql import create_state_functions

        # The state read's PL/pgSQL functions follow the tables they read (twosv/state_sql.py).
        post_migrate.connect(create_state_functions, sender=self, dispatch_uid="state-functions")

        # Cache invalidation, not business logic: any write path (admin, shell, migration)
        # must make the next state read see the new sender numbers and advisories.
        for model in (SenderNumber, RegionalAdvisory):
            for signal in (post_save, post_delete):
                signal.connect(
                    _forget_advisories, sender=model, dispatch_uid=f"forget-{model.__name__}"
                )


def _forget_advisories(**kwargs: object) -> None:
    from twosv.selectors import advisory_settings_forget

    advisory_settings_forget()
