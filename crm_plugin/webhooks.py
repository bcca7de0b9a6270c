"""Twilio's status callbacks: `POST /webhooks/twilio/message-status/` (docs/SPEC.md §10).

Server to server, form-encoded as Twilio sends it, outside /api/ and its tokens: the caller
proves itself with `X-Twilio-Signature`, which the twilio library's `RequestValidator` checks
against TWILIO_STATUS_CALLBACK_URL (the URL as Twilio calls it, behind any proxy) over every
field received, including any Twilio adds without notice. Without a valid signature: 403 and
nothing stored, before the body is even looked at. Then 400 for a malformed body; 200 with
`{"status": "stored" | "duplicate" | "dropped"}` otherwise (Twilio only needs a 2xx; a number on
no method is dropped, not refused, or Twilio would keep reporting failed callbacks). Throttled
per source address (scope `twilio_webhook`); errors in the API's JSON envelope, never a 500: a
database outage answers 503 with Retry-After.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from twilio.request_validator import RequestValidator

from crm_plugin.api.errors import ErrorCode, error_body
from crm_plugin.faults import api_failure_response, is_database_outage
from twosv.ats_twilio import KNOWN_TWILIO_STATUSES
from twosv.services.receipts import receipt_record

logger = logging.getLogger("twosv.receipts")

SIGNATURE_HEADER = "HTTP_X_TWILIO_SIGNATURE"
# Twilio SIDs: two letters and 32 hex digits (SM... for SMS, MM... for MMS).
_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
_ERROR_CODE = re.compile(r"[0-9]{1,6}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class _Malformed(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _one(data: Any, field: str, *, required: bool) -> str:
    values = data.getlist(field)
    if len(values) > 1:
        raise _Malformed(field, f"{field} must be given once.")
    value = values[0].strip() if values else ""
    if required and not value:
        raise _Malformed(field, f"{field} is required.")
    return str(value)


def _parse(data: Any) -> dict[str, Any]:
    """Return the receipt's values, or raise `_Malformed` naming the first field at fault."""
    sid = _one(data, "MessageSid", required=True)
    if not _SID.fullmatch(sid):
        raise _Malformed("MessageSid", "MessageSid is not a Twilio message SID.")
    message_status = _one(data, "MessageStatus", required=True)
    if message_status not in KNOWN_TWILIO_STATUSES:
        raise _Malformed("MessageStatus", "MessageStatus is not a Twilio message status.")
    raw_code = _one(data, "ErrorCode", required=False)
    if raw_code and not _ERROR_CODE.fullmatch(raw_code):
        raise _Malformed("ErrorCode", "ErrorCode must be a number.")
    to = _one(data, "To", required=True)
    if len(to) > 64:
        raise _Malformed("To", "To is too long.")
    sender = _one(data, "From", required=False)
    return {
        "message_sid": sid,
        "status": message_status,
        # Twilio writes nothing, or 0, for "no error".
        "error_code": (int(raw_code) or None) if raw_code else None,
        "to": to,
        "sender": sender[:64],
    }


def signature_valid(request: Request) -> bool:
    """Whether the request carries Twilio's signature over every field it holds."""
    signature = request.META.get(SIGNATURE_HEADER, "")
    token = settings.TWILIO_AUTH_TOKEN
    url = settings.TWILIO_STATUS_CALLBACK_URL
    if not signature or not token or not url:
        return False
    try:
        data = request.data
    except Exception:  # noqa: BLE001 - a body that can't be read as a form is not Twilio's
        return False
    return bool(RequestValidator(token).validate(url, data, signature))


def _error(http_status: int, code: ErrorCode, message: str, field: str | None = None) -> Response:
    return Response(error_body(code.value, message, field), status=http_status)


class TwilioMessageStatusWebhook(APIView):
    """Receive one Twilio status callback (a delivery receipt)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    parser_classes = [FormParser]
    throttle_scope = "twilio_webhook"

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        if not signature_valid(request):
            logger.warning(
                "Twilio status callback refused: missing or invalid signature.",
                extra={"client_ip": request.META.get("REMOTE_ADDR")},
            )
            return _error(
                status.HTTP_403_FORBIDDEN,
                ErrorCode.PERMISSION_DENIED,
                "Missing or invalid X-Twilio-Signature.",
            )
        try:
            values = _parse(request.data)
        except _Malformed as exc:
            return _error(status.HTTP_400_BAD_REQUEST, ErrorCode.INVALID, exc.message, exc.field)
        # Only a number that is E.164 can be on a method; anything else ("whatsapp:...") isn't.
        if not _E164.fullmatch(values["to"]):
            return Response({"status": "dropped"})
        try:
            result = receipt_record(**values)
        except Exception as exc:
            if is_database_outage(exc):
                logger.warning("Twilio status callback: database unavailable.")
            else:
                logger.exception("Twilio status callback failed.")
            return api_failure_response(exc)  # type: ignore[return-value]
        return Response({"status": str(result)})
