"""The API's throttle: DRF's ScopedRateThrottle, failing open when the cache is down.

Throttles cap agent tools per minute; they guard against a runaway script, not against the
2SV lock (that lives in the database). Refusing every request because the cache that counts
them is unreachable would turn a cache outage into an API outage, so a cache error lets the
request through; each one is counted and logged, and for a few seconds after a failure the
cache isn't tried at all (twosv.dependencies).
"""

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from twosv import dependencies


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    """ScopedRateThrottle that allows the request when the cache can't be reached."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if dependencies.skip_while_down("cache"):
            return True
        try:
            return super().allow_request(request, view)
        except dependencies.CACHE_ERRORS as exc:
            dependencies.record_outage("cache", exc, fallback="throttle skipped")
            return True
