"""Output serializers shared by several endpoints. Every field is named: an allow-list."""

from collections.abc import Callable
from typing import Any, cast

from django.db.models.manager import BaseManager
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from twosv.selectors import MethodState


def renderer(serializer_class: type[serializers.Serializer]) -> Callable[[Any], dict[str, Any]]:
    """Return a function that renders an object as `serializer_class` does, faster.

    The serializer stays the one definition of the output (and of the OpenAPI schema); this
    walks its bound fields once and keeps, per field, its name, its source path and what renders
    its value: the field's own ``to_representation``, or the same walk for a nested serializer.
    DRF's ``to_representation`` redoes that walk for every object, field by field, through
    several layers of checks: on the state endpoint it cost more than rendering the values
    (pyinstrument, `make bench`). What the plain walk does not cover (a mapping other than a
    dict, a callable on the path, a missing attribute) goes through the field's own
    ``get_attribute``; a serializer with a ``to_representation`` of its own renders with it
    (unless all it does is leave out the ``omit_when_null`` fields). So the output is DRF's
    (tests/test_representations.py). Output only: validation keeps DRF's.
    """
    return _compiled(serializer_class())


_Plan = list[tuple[str, serializers.Field, tuple[str, ...], Callable[[Any], Any]]]


def _compiled(serializer: serializers.Serializer) -> Callable[[Any], dict[str, Any]]:
    omitted: tuple[str, ...] = getattr(serializer, "omit_when_null", ())
    overridden = type(serializer).to_representation is not serializers.Serializer.to_representation
    if overridden and not omitted:
        # Its own to_representation, which the walk can't know: DRF's, as it is.
        return cast(Callable[[Any], dict[str, Any]], serializer.to_representation)
    plan: _Plan = []
    for field in serializer._readable_fields:
        render: Callable[[Any], Any]
        if isinstance(field, serializers.ListSerializer):
            render = _list_renderer(field)
        elif isinstance(field, serializers.Serializer):
            render = _compiled(field)
        else:
            render = field.to_representation
        plan.append((str(field.field_name), field, tuple(field.source_attrs), render))

    def render_object(instance: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field, path, render in plan:
            value = instance
            try:
                for attr in path:
                    value = value[attr] if type(value) is dict else getattr(value, attr)
                if callable(value):
                    raise TypeError  # DRF calls it: its own walk below
            except Exception:  # noqa: BLE001 - DRF's walk decides, as it would have
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
            out[name] = None if value is None else render(value)
        for name in omitted:
            if out.get(name) is None:
                out.pop(name, None)
        return out

    return render_object


def _list_renderer(field: serializers.ListSerializer) -> Callable[[Any], list[Any]]:
    child = field.child
    assert child is not None  # a ListSerializer is always built with its child
    render = (
        _compiled(child) if isinstance(child, serializers.Serializer) else child.to_representation
    )

    def render_list(values: Any) -> list[Any]:
        if isinstance(values, BaseManager):
            values = values.all()
        return [render(value) for value in values]

    return render_list


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
    changed_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the number on file last changed after enrolment; null if it never did.",
    )


class LockOutput(serializers.Serializer):
    locked_at = serializers.DateTimeField()
    locked_until = serializers.DateTimeField()
    seconds_remaining = serializers.IntegerField()
    reason = serializers.CharField()


class ResendsOutput(serializers.Serializer):
    count = serializers.IntegerField(
        help_text='Counted "resend code" requests inside the window at the time of reading.'
    )
    threshold = serializers.IntegerField(help_text="The method locks after more than this many.")
    blocked = serializers.IntegerField(
        help_text="Requests refused during the active lock (they don't count); 0 when unlocked."
    )


class MethodOutput(serializers.Serializer):
    """A method as agents and producers see it (renders a selectors.MethodState)."""

    id = serializers.CharField(source="method.method_id")
    kind = serializers.CharField(source="method.kind")
    role = serializers.CharField(source="method.role")
    hidden_from_crm = serializers.SerializerMethodField()
    label = serializers.CharField(source="method.label")  # type: ignore[assignment]
    phone = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=["active", "locked", "removed"])
    lock = LockOutput(allow_null=True)
    resends = serializers.SerializerMethodField()

    def get_hidden_from_crm(self, obj: object) -> bool:
        return not obj.method.visible_in_crm  # type: ignore[attr-defined]

    @extend_schema_field(MaskedPhoneOutput(allow_null=True))
    def get_phone(self, obj: MethodState) -> dict[str, Any] | None:
        return _phone(obj)

    @extend_schema_field(
        ResendsOutput(
            allow_null=True,
            help_text="For methods that receive codes (sms, voice, email); null for the others.",
        )
    )
    def get_resends(self, obj: MethodState) -> dict[str, int] | None:
        return _resends(obj)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # Written out: a batch renders a method for each of its 500 events, and field-by-field
        # rendering was a fifth of the batch's time (`make bench`, figure e). The fields above
        # still document the shape; the tests check every response against that schema.
        method = instance.method
        lock = instance.lock
        return {
            "id": method.method_id,
            "kind": method.kind,
            "role": method.role,
            "hidden_from_crm": not method.visible_in_crm,
            "label": method.label,
            "phone": _phone(instance),
            "status": instance.status,
            "lock": None
            if lock is None
            else {
                "locked_at": _timestamp(lock.locked_at),
                "locked_until": _timestamp(lock.locked_until),
                "seconds_remaining": lock.seconds_remaining,
                "reason": lock.reason,
            },
            "resends": _resends(instance),
        }


def _phone(state: MethodState) -> dict[str, Any] | None:
    phone = state.phone
    if phone is None:
        return None
    changed_at = state.phone_changed_at
    return {
        "masked": phone.masked,
        "country_code": phone.country_code,
        "region": phone.region,
        "changed_at": None if changed_at is None else _timestamp(changed_at),
    }


def _resends(state: MethodState) -> dict[str, int] | None:
    if not state.method.receives_codes:
        return None  # an authenticator app or a security key: no code to resend
    return {
        "count": state.resend_count,
        "threshold": state.resend_threshold,
        "blocked": state.resends_blocked,
    }


# DRF's own formatting (time zone, "Z" for UTC), so written-out renderings match the fields'.
_timestamp = serializers.DateTimeField().to_representation
