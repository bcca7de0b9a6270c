"""Who may call which endpoint: DRF permission classes over the roles in `crm_plugin.http.roles`."""

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from crm_plugin.http.roles import EVENT_PRODUCER, SUPPORT_AGENT, user_groups


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
