"""`renderer()` (crm_plugin/api/representations.py) renders exactly what DRF's serializers do:
for every demo customer's state, every demo lookup with its attempts, sessions at each answer,
a method, and the odd inputs the fast walk leaves to DRF."""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework import serializers

from crm_plugin.api.lookups import LookupOutput
from crm_plugin.api.representations import MethodOutput, renderer
from crm_plugin.api.sessions import SessionOutput, session_output
from crm_plugin.api.state import StateOutput
from twosv.models import Customer, DeliveryAttempt, DeliveryLookup, TroubleshootingSession
from twosv.selectors import access_customer_state

pytestmark = pytest.mark.django_db


def drf(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    return dict(serializer_class(instance).data)


@pytest.fixture
def demo(agent: Any) -> list[str]:
    call_command("demo_load", stdout=StringIO())
    return list(Customer.objects.order_by("customer_id").values_list("customer_id", flat=True))


def test_every_demo_state_and_method_renders_as_drf_does(demo: list[str]) -> None:
    render_state, render_method = renderer(StateOutput), renderer(MethodOutput)
    assert len(demo) >= 18
    for customer_id in demo:
        state = access_customer_state(customer_id=customer_id, now=timezone.now())

        assert render_state(state) == drf(StateOutput, state), customer_id
        for method in state.methods:
            assert render_method(method) == drf(MethodOutput, method), customer_id


def test_every_demo_lookup_renders_as_drf_does(demo: list[str]) -> None:
    """`attempts` comes from `attempts.all`: a callable on the path, left to DRF's walk."""
    render = renderer(LookupOutput)
    lookups = DeliveryLookup.objects.select_related("customer", "method")
    with_attempts = lookups.first()
    assert with_attempts is not None
    for i, status in enumerate(("delivered", "undelivered")):
        DeliveryAttempt.objects.create(
            lookup=with_attempts,
            external_id=f"SM{i}",
            sent_at=timezone.now(),
            status=status,
            error_code=30007 if status == "undelivered" else None,
            provider="twilio",
            sender="+14155550100",
            region="US",
        )
    for lookup in lookups:
        assert render(lookup) == drf(LookupOutput, lookup), lookup.pk


def test_sessions_at_each_answer_render_as_drf_does(demo: list[str], agent: Any) -> None:
    render = renderer(SessionOutput)
    for customer_id in demo:
        customer = Customer.objects.get(customer_id=customer_id)
        session = TroubleshootingSession.objects.create(customer=customer, agent=agent)
        for answers in (
            {},
            {"has_device_access": False},
            {"has_device_access": False, "has_backup_device_access": False},
            {"phone_number_changed": True, "phone_number_matches": False},
        ):
            for field, value in answers.items():
                setattr(session, field, value)
            session.save()
            output = session_output(session)

            assert render(output) == drf(SessionOutput, output), (customer_id, answers)


@dataclass
class Thing:
    name: str
    size: int | None
    when: Any = None

    def shout(self) -> str:
        return self.name.upper()


class ThingOutput(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    when = serializers.DateTimeField(allow_null=True)
    upper = serializers.CharField(source="shout")  # a method: DRF calls it
    absent = serializers.CharField(required=False)  # missing, not required: skipped
    label = serializers.SerializerMethodField()

    def get_label(self, obj: Any) -> str:
        if isinstance(obj, dict):
            return f"{obj['name']}/{obj['size']}"
        return f"{obj.name}/{obj.size}"


class ThingsOutput(serializers.Serializer):
    things = ThingOutput(many=True)
    first = ThingOutput(allow_null=True)


def test_callables_missing_attributes_nulls_and_mappings_render_as_drf_does() -> None:
    render = renderer(ThingsOutput)
    now = timezone.now()
    plain = {"things": [Thing("a", 1, now), Thing("b", None)], "first": None}
    mapping = {
        "things": [{"name": "c", "size": 3, "when": None, "shout": "C"}],
        "first": Thing("d", 4),
    }

    for instance in (plain, mapping):
        assert render(instance) == drf(ThingsOutput, instance)
    assert render(plain)["things"][0] == {
        "name": "a",
        "size": 1,
        "when": drf(ThingsOutput, plain)["things"][0]["when"],
        "upper": "A",
        "label": "a/1",
    }
