"""The base of every API view: audits refused requests."""

from typing import Any, NoReturn

from rest_framework.request import Request
from rest_framework.views import APIView

from crm_plugin.http.context import audit_context
from twosv.audit import audit_refusal


class AuditedApiView(APIView):
    """An APIView that writes an audit entry when an authenticated caller's role is refused."""

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            # Wrong-role calls are how a leaked producer or agent token shows itself.
            audit_refusal(
                actor=user,
                customer_ref=_customer_ref(self.kwargs),
                details={"method": request.method, "view": type(self).__name__},
                context=audit_context(request),
            )
        super().permission_denied(request, message=message, code=code)


def _customer_ref(kwargs: dict[str, Any]) -> str:
    value = kwargs.get("customer_id", "")
    return value[:64] if isinstance(value, str) else ""
