"""`runserver`, which stays on loopback on the embedded default's key, and runs its beat.

With tasks eager (the embedded default) there is no Celery beat: this server runs the beat
schedule itself (twosv/scheduler.py), so what production's beat does happens here too.

The embedded default (DEBUG, no ``SECRET_KEY`` set) signs panel links and sessions with a key
kept in ``var/secret_key`` of this checkout. That key is for a developer's own machine: served
on a non-loopback address, whoever reaches it would meet a server whose key nobody configured.
So with that key the dev server binds to 127.0.0.1 / ::1 / localhost only, says so when it
starts, and refuses any other address; set ``SECRET_KEY`` to serve elsewhere.

``twosv`` comes before ``django.contrib.staticfiles`` in INSTALLED_APPS so that this command,
a subclass of staticfiles' (static files still served), is the ``runserver`` Django runs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.management.commands.runserver import (
    Command as StaticfilesRunserver,
)
from django.core.management.base import CommandError

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(addr: str) -> bool:
    """True for a loopback IP address or ``localhost``; False for anything else (0.0.0.0, ...)."""
    if addr.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


class Command(StaticfilesRunserver):
    help = StaticfilesRunserver.help + " On the generated dev key, loopback addresses only."
    addr: str  # set by handle() from the addrport argument, before run()

    def run(self, **options: Any) -> None:
        if getattr(settings, "DEV_SECRET_KEY_IN_USE", False):
            if not is_loopback(self.addr):
                raise CommandError(
                    f"Refusing to serve on {self.addr!r}: the embedded default's SECRET_KEY (the "
                    "generated dev key in var/secret_key) is for this machine only, so the dev "
                    "server binds to loopback (127.0.0.1, ::1, localhost). To serve on another "
                    "address, set SECRET_KEY (see the configuration table in README.md)."
                )
            self.stdout.write(
                "Embedded default: dev SECRET_KEY from var/secret_key, serving on loopback "
                f"({self.addr}) only."
            )
        super().run(**options)

    def inner_run(self, *args: Any, **options: Any) -> None:
        # inner_run is the serving process (the child, under the autoreloader): beat runs here.
        if settings.TWOSV_EMBEDDED_BEAT:
            from twosv.scheduler import embedded_beat_from_settings

            embedded_beat_from_settings().start()
            self.stdout.write(
                "Embedded beat: the periodic tasks (lookup sweeper, ...) run in this process, "
                "at least once a minute."
            )
        super().inner_run(*args, **options)
