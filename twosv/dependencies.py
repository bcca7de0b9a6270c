"""Outages of the optional dependencies (the cache, the broker), counted per process.

Only the database is essential. When the cache is down the throttles let requests through and
the advisory settings are read from the database; each such fallback is recorded here: counted
(``outage_counts()``, shown by ``/readyz``) and logged at WARNING, at most once a minute per
dependency so that an outage under load does not flood the log.

After a failure the dependency is skipped for SKIP_SECONDS (``skip_while_down``): a cache that
hangs instead of refusing (a frozen server, a lost network) costs one socket timeout per
process every few seconds, not one or more per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import redis.exceptions

logger = logging.getLogger("twosv.dependencies")

# What a cache that can't be reached raises: redis-py wraps socket errors in its own
# ConnectionError/TimeoutError (RedisError); other backends let OSError through. A bug in our
# code (TypeError, KeyError, ...) is none of these and still fails the request.
CACHE_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

LOG_INTERVAL_SECONDS = 60.0
SKIP_SECONDS = 5.0

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_last_logged: dict[str, float] = {}
_unlogged: Counter[str] = Counter()
_down_until: dict[str, float] = {}


def record_outage(dependency: str, exc: BaseException, *, fallback: str) -> None:
    """Count one fallback caused by `dependency` being down; log it (rate-limited).

    `fallback` says what the caller did instead, e.g. "throttle skipped".
    """
    now = time.monotonic()
    with _lock:
        _counts[dependency] += 1
        total = _counts[dependency]
        _down_until[dependency] = now + SKIP_SECONDS
        last = _last_logged.get(dependency)
        if last is not None and now - last < LOG_INTERVAL_SECONDS:
            _unlogged[dependency] += 1
            return
        _last_logged[dependency] = now
        skipped = _unlogged.pop(dependency, 0)
    logger.warning(
        "%s unavailable (%s: %s): %s. %d fallback(s) in this process so far, %d not logged.",
        dependency.capitalize(),
        type(exc).__name__,
        str(exc)[:200],
        fallback,
        total,
        skipped,
        extra={"dependency": dependency, "outages": total},
    )


def skip_while_down(dependency: str) -> bool:
    """Return True (and count a fallback) while a recent failure says not to try `dependency`."""
    with _lock:
        if time.monotonic() < _down_until.get(dependency, 0.0):
            _counts[dependency] += 1
            return True
    return False


def outage_counts() -> dict[str, int]:
    """Return how many fallbacks each dependency caused in this process since it started."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Forget the counts and the log rate limit (tests)."""
    with _lock:
        _counts.clear()
        _last_logged.clear()
        _unlogged.clear()
        _down_until.clear()
