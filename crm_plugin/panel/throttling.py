"""The panel's throttles are the API's: same classes, scopes, rates and per-agent counters.

A panel action does what its API call does, so it counts against the same limit: the throttle
classes DRF's settings name (``DEFAULT_THROTTLE_CLASSES``, the API's fail-open
ScopedRateThrottle) are asked with the API view's scope for the panel's agent. They key on the
user (``throttle_<scope>_<user id>``), so one agent's API and panel calls add up, and a cache
that is down lets both through alike.
"""

import math
from types import SimpleNamespace
from typing import Any, cast

from django.http import HttpRequest
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle


class Throttled(Exception):
    """The agent went over one of the API's rates; the panel answers 429 with Retry-After."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"throttled for {wait:.0f} s")
        self.retry_after = max(1, math.ceil(wait))


def throttle(request: HttpRequest, scope: str | None) -> None:
    """Count the request under `scope` as the API would; raise Throttled when over the rate.

    `request.user` must be the panel's agent. No scope (as the API's close) counts nothing.
    """
    wait = _throttle_wait(request, scope)
    if wait is not None:
        raise Throttled(wait)


def _throttle_wait(request: HttpRequest, scope: str | None) -> float | None:
    if scope is None:
        return None
    # What ScopedRateThrottle reads of the view (the scope) and of the request (user, META).
    view = SimpleNamespace(throttle_scope=scope)
    waits = []
    # api_settings imports the dotted paths it names: these are the classes the API runs.
    throttle_classes: list[type[BaseThrottle]] = cast(Any, api_settings.DEFAULT_THROTTLE_CLASSES)
    for throttle_class in throttle_classes:
        throttle = throttle_class()
        if not throttle.allow_request(cast(Any, request), cast(Any, view)):
            waits.append(throttle.wait() or 0.0)
    return max(waits) if waits else None
