"""Producer events' `data`: what each event type may carry, checked before anything is stored."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from twosv.errors import ErrorCode, Forbidden, InvalidInput
from twosv.models import EventType, Method, MethodKind, MethodRole, validate_e164
from twosv.vocabulary import PHONE_KINDS

# The keys each event type may carry in `data`; anything else is refused so that a producer
# can't make us store a code, a secret or a field we'd silently ignore.
EVENT_DATA_FIELDS: dict[str, dict[str, bool]] = {
    EventType.METHOD_ENROLLED: {
        "method_id": True,
        "kind": True,
        "role": True,
        "phone_number": False,
        "email": False,
        "label": False,
        "visible_in_crm": False,
    },
    EventType.METHOD_REMOVED: {"method_id": True},
    EventType.PHONE_NUMBER_CHANGED: {"method_id": True, "phone_number": True},
    EventType.CODE_SENT: {"method_id": True},
    EventType.CODE_RESEND_REQUESTED: {"method_id": True},
    EventType.CODE_VERIFIED: {"method_id": True},
    EventType.CODE_REJECTED: {"method_id": True},
}
PRODUCER_EVENT_TYPES = frozenset(EVENT_DATA_FIELDS)


def _phone_check(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput("The phone number must be a string in E.164 format.", field=field)
    try:
        validate_e164(value)
    except ValidationError as exc:
        raise InvalidInput(
            exc.messages[0], code=ErrorCode.INVALID_PHONE_NUMBER, field=field
        ) from exc
    return value


def event_data_clean(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate `data` for the event type; return it with defaults filled in."""
    if event_type == EventType.LOCK_LIFTED:
        raise Forbidden(
            "lock_lifted is written by admins only.",
            code=ErrorCode.FORBIDDEN_EVENT_TYPE,
            field="type",
        )
    allowed = EVENT_DATA_FIELDS[event_type]
    for key in data:
        if key not in allowed:
            raise InvalidInput(
                f"Unknown field for {event_type}.",
                code=ErrorCode.UNKNOWN_FIELD,
                field=f"data.{key}",
            )
    for key, required in allowed.items():
        if required and key not in data:
            raise InvalidInput(
                "This field is required.", code=ErrorCode.REQUIRED, field=f"data.{key}"
            )
    method_id = data["method_id"]
    if (
        not isinstance(method_id, str)
        or not 1 <= len(method_id) <= 128
        or not method_id.isprintable()
    ):
        raise InvalidInput(
            "method_id must be 1 to 128 printable characters.", field="data.method_id"
        )
    cleaned = dict(data)
    if event_type == EventType.PHONE_NUMBER_CHANGED:
        _phone_check(data["phone_number"], "data.phone_number")
    if event_type == EventType.METHOD_ENROLLED:
        cleaned.update(_enrolment_clean(data))
    return cleaned


def _enrolment_clean(data: dict[str, Any]) -> dict[str, Any]:
    kind, role = data["kind"], data["role"]
    if kind not in MethodKind.values:
        raise InvalidInput(
            f"kind must be one of {', '.join(MethodKind.values)}.", field="data.kind"
        )
    if role not in MethodRole.values:
        raise InvalidInput(
            f"role must be one of {', '.join(MethodRole.values)}.", field="data.role"
        )
    phone = data.get("phone_number")
    if kind in PHONE_KINDS:
        if phone is None:
            raise InvalidInput(
                "SMS and voice methods need a phone number.",
                code=ErrorCode.REQUIRED,
                field="data.phone_number",
            )
        _phone_check(phone, "data.phone_number")
    elif phone is not None:
        raise InvalidInput(
            "Only SMS and voice methods have a phone number.", field="data.phone_number"
        )
    email = data.get("email")
    if email is not None:
        if kind != MethodKind.EMAIL or not isinstance(email, str):
            raise InvalidInput("Only email methods have an email address.", field="data.email")
        # The validator allows 320 characters; the column holds 254 (PostgreSQL would refuse).
        if len(email) > Method._meta.get_field("email").max_length:  # type: ignore[operator]
            raise InvalidInput("Not a valid email address.", field="data.email")
        try:
            validate_email(email)
        except ValidationError as exc:
            raise InvalidInput("Not a valid email address.", field="data.email") from exc
    label = data.get("label", "")
    # Printable only: NUL and lone surrogates can't be stored (PostgreSQL and UTF-8 refuse them).
    if not isinstance(label, str) or len(label) > 100 or not label.isprintable():
        raise InvalidInput("label must be at most 100 printable characters.", field="data.label")
    visible = data.get("visible_in_crm", role == MethodRole.PRIMARY)
    if not isinstance(visible, bool):
        raise InvalidInput("visible_in_crm must be true or false.", field="data.visible_in_crm")
    return {"label": label, "visible_in_crm": visible}
