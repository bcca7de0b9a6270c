"""The Celery app: configured from Django settings under the CELERY_ namespace."""

import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_plugin.settings")

app = Celery("crm_plugin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _log_like_the_web_process(**kwargs: Any) -> None:
    """Give workers and beat Django's LOGGING: the same JSON lines and phone-number masking.

    Connecting this signal is how Celery is told not to install its own handlers and format.
    """
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
