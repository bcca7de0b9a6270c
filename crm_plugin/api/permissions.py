"""Roles are Django groups: ``support_agent`` reads and troubleshoots, ``event_producer`` posts."""

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

SUPPORT_AGENT = "support_agent"
EVENT_PRODUCER = "event_producer"


def user_groups(user: Any) -> frozenset[str]:
    """Return the user's group names, loaded once per request."""
    cached: frozenset[str] | None = getattr(user, "_twosv_group_names", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._twosv_group_names = cached
    return cached


class _InGroup(BasePermission):
    group = ""
    allow_superuser = False
    message = "Your role may not use this endpoint."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        if self.allow_superuser and user.is_superuser:
            return True
        return self.group in user_groups(user)


class IsSupportAgent(_InGroup):
    """Support agents; superusers (admins) may read what agents read."""

    group = SUPPORT_AGENT
    allow_superuser = True


class IsEventProducer(_InGroup):
    """The identity system's accounts only: nobody else may write the event log."""

    group = EVENT_PRODUCER
