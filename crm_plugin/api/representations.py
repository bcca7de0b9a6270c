"""Output serializers shared by several endpoints. Every field is named: an allow-list."""

from collections.abc import Callable
from typing import Any

from rest_framework import serializers


def renderer(serializer_class: type[serializers.Serializer]) -> Callable[[Any], dict[str, Any]]:
    """Return a function that renders an object with one shared instance of the serializer.

    A new serializer deep-copies its declared fields, and nested serializers theirs: on the
    state endpoint that cost more than rendering itself (pyinstrument, `make bench`). Rendering
    (``to_representation``) reads the bound fields and writes nothing to them, so one bound
    instance serves every request and thread. Output only: validation keeps new instances.
    """
    return serializer_class().to_representation


class BlankAsNullCharField(serializers.CharField):
    """A text column where "" means "not yet": rendered as null."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def to_representation(self, value: object) -> str | None:  # type: ignore[override]
        return str(value) if value else None


class MaskedPhoneOutput(serializers.Serializer):
    masked = serializers.CharField()
    country_code = serializers.IntegerField()
    region = serializers.CharField(allow_null=True)


class LockOutput(serializers.Serializer):
    locked_at = serializers.DateTimeField()
    locked_until = serializers.DateTimeField()
    seconds_remaining = serializers.IntegerField()
    reason = serializers.CharField()


class ResendsOutput(serializers.Serializer):
    count = serializers.IntegerField(source="resend_count")
    threshold = serializers.IntegerField(source="resend_threshold")


class MethodOutput(serializers.Serializer):
    """A method as agents and producers see it (renders a selectors.MethodState)."""

    id = serializers.CharField(source="method.method_id")
    kind = serializers.CharField(source="method.kind")
    role = serializers.CharField(source="method.role")
    hidden_from_crm = serializers.SerializerMethodField()
    label = serializers.CharField(source="method.label")  # type: ignore[assignment]
    phone = MaskedPhoneOutput(allow_null=True)
    status = serializers.ChoiceField(choices=["active", "locked", "removed"])
    lock = LockOutput(allow_null=True)
    resends = ResendsOutput(source="*")

    def get_hidden_from_crm(self, obj: object) -> bool:
        return not obj.method.visible_in_crm  # type: ignore[attr-defined]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # Written out: a batch renders a method for each of its 500 events, and field-by-field
        # rendering was a fifth of the batch's time (`make bench`, figure e). The fields above
        # still document the shape; the tests check every response against that schema.
        method = instance.method
        phone = instance.phone
        lock = instance.lock
        return {
            "id": method.method_id,
            "kind": method.kind,
            "role": method.role,
            "hidden_from_crm": not method.visible_in_crm,
            "label": method.label,
            "phone": None
            if phone is None
            else {
                "masked": phone.masked,
                "country_code": phone.country_code,
                "region": phone.region,
            },
            "status": instance.status,
            "lock": None
            if lock is None
            else {
                "locked_at": _timestamp(lock.locked_at),
                "locked_until": _timestamp(lock.locked_until),
                "seconds_remaining": lock.seconds_remaining,
                "reason": lock.reason,
            },
            "resends": {"count": instance.resend_count, "threshold": instance.resend_threshold},
        }


# DRF's own formatting (time zone, "Z" for UTC), so written-out renderings match the fields'.
_timestamp = serializers.DateTimeField().to_representation
