"""Roles are Django groups: ``support_agent`` reads and troubleshoots, ``event_producer`` posts."""

from typing import Any

SUPPORT_AGENT = "support_agent"
EVENT_PRODUCER = "event_producer"


def user_groups(user: Any) -> frozenset[str]:
    """Return the user's group names, loaded once per request."""
    cached: frozenset[str] | None = getattr(user, "_twosv_group_names", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._twosv_group_names = cached
    return cached
