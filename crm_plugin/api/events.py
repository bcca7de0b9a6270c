"""Event ingestion for the identity system: one event, or a batch of up to 500."""

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from crm_plugin.api.base import AuditedApiView
from crm_plugin.api.errors import (
    ErrorCode,
    ErrorDetailOutput,
    RequestTooLarge,
    error_body,
    first_validation_error,
)
from crm_plugin.api.openapi import error_response
from crm_plugin.api.permissions import IsEventProducer
from crm_plugin.api.representations import MethodOutput, renderer
from crm_plugin.http.context import acting_user, audit_context
from twosv import services
from twosv.audit import audit_refusal
from twosv.errors import Forbidden
from twosv.models import EventType
from twosv.selectors import method_state

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(minutes=5)
MAX_BATCH = 500
# Sent as JSON strings only: DRF's CharField would turn 123 into "123" and store it.
_STRING_FIELDS = ("event_id", "type", "customer_id")


def _request_data(request: Request) -> Any:
    """Return the parsed body; a body over DATA_UPLOAD_MAX_MEMORY_SIZE answers 413 in JSON."""
    try:
        return request.data
    except RequestDataTooBig as exc:
        raise RequestTooLarge() from exc


@extend_schema_field(OpenApiTypes.DATETIME)
class AwareDateTimeField(serializers.Field):
    """An ISO 8601 timestamp that must carry a time zone."""

    default_error_messages = {
        "invalid": "Use ISO 8601 with a time zone, e.g. 2026-01-31T12:00:00Z.",
        "naive": "The timestamp needs a time zone (Z or +hh:mm).",
    }

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            parsed = parse_datetime(data)
        except ValueError:
            parsed = None
        if parsed is None:
            self.fail("invalid")
        if timezone.is_naive(parsed):
            self.fail("naive")
        return parsed

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class EventInput(serializers.Serializer):
    event_id = serializers.CharField(min_length=1, max_length=128, trim_whitespace=False)
    type = serializers.ChoiceField(choices=EventType.values)
    customer_id = serializers.RegexField(
        r"^[A-Za-z0-9._:-]{1,64}\Z", max_length=64, trim_whitespace=False
    )
    occurred_at = AwareDateTimeField()
    # Parsed from JSON, so any value is JSON: no per-value check (a JSONField child would
    # serialize every value again to find out).
    data = serializers.DictField()  # type: ignore[assignment]

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["An event is a JSON object."]}, code="invalid"
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {unknown[0]: [serializers.ErrorDetail("Unknown field.", code="unknown_field")]}
            )
        for name in _STRING_FIELDS:
            if name in data and not isinstance(data[name], str):
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail("Must be a JSON string.", code="invalid")]}
                )
        return super().to_internal_value(data)

    def validate_event_id(self, value: str) -> str:
        if not value.isprintable():
            raise serializers.ValidationError("event_id must be printable characters.")
        return value

    def validate_occurred_at(self, value: datetime) -> datetime:
        if value < EARLIEST:
            raise serializers.ValidationError("occurred_at is before 2000-01-01.")
        if value > timezone.now() + MAX_FUTURE:
            raise serializers.ValidationError("occurred_at is more than 5 minutes in the future.")
        return value


class EventResultOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["accepted", "duplicate"])
    method = MethodOutput(allow_null=True)


def _ingest(request: Request, validated: dict[str, Any]) -> services.IngestResult:
    return services.event_ingest(
        event_id=validated["event_id"],
        event_type=validated["type"],
        customer_id=validated["customer_id"],
        occurred_at=validated["occurred_at"],
        data=validated["data"],
        actor=acting_user(request),
        context=audit_context(request),
    )


def _audit_forbidden(request: Request, validated: dict[str, Any], exc: Forbidden) -> None:
    """Record an event the producer's role may not write (``lock_lifted``): a token probing."""
    audit_refusal(
        actor=acting_user(request),
        customer_ref=validated["customer_id"],
        details={
            "code": exc.code,
            "event_id": validated["event_id"],
            "event_type": validated["type"],
            "method": request.method,
            "view": "events",
        },
        context=audit_context(request),
    )


_render_result = renderer(EventResultOutput)
_render_method = renderer(MethodOutput)


def _result_body(result: services.IngestResult) -> dict[str, Any]:
    now = timezone.now()
    state = method_state(result.method, now=now) if result.method is not None else None
    return _render_result({"status": result.status, "method": state})


class EventCreateApi(AuditedApiView):
    permission_classes = [IsEventProducer]
    throttle_scope = "producer"

    @extend_schema(
        request=EventInput,
        responses={
            201: EventResultOutput,
            200: EventResultOutput,
            409: error_response("The event names an unknown method, or one of another customer."),
        },
        summary="Push one 2SV event",
        description=(
            "For the identity system (role `event_producer`). Stores the event once (a repeated "
            "`event_id` answers 200 `duplicate`) and folds it into the method's lock "
            "projection; answers the method as it stands after the event. `occurred_at` needs "
            "a time zone, not before 2000 and at most 5 minutes ahead; `lock_lifted` is for "
            "admins only (403). Invalid events are 400 and store nothing."
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = EventInput(data=_request_data(request))
        serializer.is_valid(raise_exception=True)
        try:
            result = _ingest(request, serializer.validated_data)
        except Forbidden as exc:
            _audit_forbidden(request, serializer.validated_data, exc)
            raise
        code = status.HTTP_201_CREATED if result.status == "accepted" else status.HTTP_200_OK
        return Response(_result_body(result), status=code)


class BatchEventsField(serializers.ListField):
    """The batch's events; more than MAX_BATCH answers the stable code ``batch_too_large``."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and len(data) > MAX_BATCH:
            raise serializers.ValidationError(
                f"At most {MAX_BATCH} events per batch.", code="batch_too_large"
            )
        return super().to_internal_value(data)


class BatchInput(serializers.Serializer):
    # Each event is checked by EventInput, one by one, so a bad one is rejected alone.
    events = BatchEventsField(max_length=MAX_BATCH)


class BatchResultOutput(serializers.Serializer):
    event_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    error = ErrorDetailOutput(required=False)
    method = MethodOutput(required=False, allow_null=True)


class BatchOutput(serializers.Serializer):
    results = BatchResultOutput(many=True)


class EventBatchApi(AuditedApiView):
    permission_classes = [IsEventProducer]
    throttle_scope = "producer"

    @extend_schema(
        request=BatchInput,
        responses={200: BatchOutput},
        summary="Push up to 500 events",
        description=(
            "Each event stands alone, as `POST events/` would take it: the results come in the "
            "order sent, each `accepted`, `duplicate` or `rejected` (with its error), so a bad "
            "event never stops the rest. More than 500 events is 400 `batch_too_large`."
        ),
    )
    def post(self, request: Request) -> Response:
        batch = BatchInput(data=_request_data(request))
        batch.is_valid(raise_exception=True)
        raws = batch.validated_data["events"]
        results: list[dict[str, Any] | None] = []
        valid: list[dict[str, Any]] = []
        # One serializer of each kind for the whole batch: building one costs more than using it.
        checker = EventInput()
        for raw in raws:
            rejected, validated = self._envelope(checker, raw)
            results.append(rejected)
            if validated is not None:
                valid.append(validated)
        ingested = iter(
            services.events_ingest_batch(
                events=valid, actor=acting_user(request), context=audit_context(request)
            )
        )
        inputs = iter(valid)
        now = timezone.now()
        states: dict[int, dict[str, Any] | None] = {}
        for index, raw in enumerate(raws):
            if results[index] is None:
                item = next(ingested)
                results[index] = self._result(raw, next(inputs), item, now, states)
        return Response({"results": results})

    @staticmethod
    def _event_id(raw: Any) -> str | None:
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        return event_id if isinstance(event_id, str) else None

    def _envelope(
        self, checker: EventInput, raw: Any
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Check one event's envelope: return its rejection, or its validated data."""
        try:
            return None, checker.run_validation(raw)
        except serializers.ValidationError:
            pass
        # The rare bad event goes through is_valid() for the exact errors the single path gives.
        serializer = EventInput(data=raw)
        serializer.is_valid()
        field, code, message = first_validation_error(serializer.errors)
        if code not in {c.value for c in ErrorCode}:
            code = ErrorCode.INVALID.value
        rejection = {
            "event_id": self._event_id(raw),
            "status": "rejected",
            **error_body(code, message, field),
        }
        return rejection, None

    def _result(
        self,
        raw: Any,
        validated: dict[str, Any],
        result: services.BatchItemResult,
        now: datetime,
        states: dict[int, dict[str, Any] | None],
    ) -> dict[str, Any]:
        """Render one event's answer; a method state shared by several events is built once."""
        event_id = self._event_id(raw)
        if result.error is not None:
            if isinstance(result.error, Forbidden):
                _audit_forbidden(self.request, validated, result.error)
            exc = result.error
            return {
                "event_id": event_id,
                "status": "rejected",
                **error_body(exc.code, exc.message, exc.field),
            }
        method = result.method
        key = id(method)
        if key not in states:
            states[key] = (
                _render_method(method_state(method, now=now)) if method is not None else None
            )
        return {"event_id": event_id, "status": result.status, "method": states[key]}
