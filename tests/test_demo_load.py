"""`manage.py demo_load`: the demo data of `make run`, loaded with live timers, idempotent."""

import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import phonenumbers
import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tests import factories
from twosv import services
from twosv.management.commands.demo_load import demo_users, parse_offset
from twosv.models import (
    Customer,
    DeliveryLookup,
    Event,
    LocalDeliveryRecord,
    Method,
    TroubleshootingSession,
)
from twosv.selectors import method_state

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "demo.json"
FIXTURE_IDS = {c["customer_id"] for c in json.loads(FIXTURE.read_text())["customers"]}
ARTICLE_SITUATIONS = {
    "demo-sms-only",
    "demo-hidden-backup",
    "demo-locked",
    "demo-locked-backup",
    "demo-approaching",
    "demo-india",
    "demo-carrier-filtered",
    "demo-delivered",
    "demo-unreachable",
    "demo-not-sent",
    "demo-changed-number",
    "demo-no-2sv",
    "demo-authenticator",
    "demo-email",
}
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def demo_load(*args: str) -> str:
    out = StringIO()
    call_command("demo_load", *args, stdout=out)
    return out.getvalue()


def primary(customer_id: str) -> Method:
    return Method.objects.get(customer__customer_id=customer_id, role="primary")


def snapshot() -> dict[str, object]:
    """What the demo data consists of, by kind, for comparing two runs."""
    demo = {"customer__customer_id__startswith": "demo-"}
    return {
        "customers": sorted(
            Customer.objects.filter(customer_id__startswith="demo-").values_list(
                "customer_id", flat=True
            )
        ),
        "methods": Method.objects.filter(**demo).count(),
        "events": sorted(Event.objects.filter(**demo).values_list("event_id", flat=True)),
        "ats": LocalDeliveryRecord.objects.filter(external_id__startswith="demo-").count(),
        "lookups": DeliveryLookup.objects.filter(**demo).count(),
    }


def printed_agent_token(out: str) -> str:
    printed = re.search(r"demo-agent\s+support_agent\s+token (\w+)", out)
    assert printed is not None, out
    return printed[1]


def test_loads_one_customer_per_situation_with_live_timers_and_ats_records(settings):
    settings.DEBUG = True
    out = demo_load("--base-url", "http://127.0.0.1:8000")
    now = timezone.now()

    loaded = set(
        Customer.objects.filter(customer_id__startswith="demo-").values_list(
            "customer_id", flat=True
        )
    )
    assert loaded == FIXTURE_IDS
    assert loaded >= ARTICLE_SITUATIONS

    locked = method_state(primary("demo-locked"), now=now)
    assert locked.status == "locked"
    assert locked.lock is not None
    assert abs(locked.lock.seconds_remaining - 20 * 3600) < 120
    assert not Method.objects.filter(customer__customer_id="demo-locked", role="backup").exists()

    assert method_state(primary("demo-locked-backup"), now=now).status == "locked"
    backup = Method.objects.get(customer__customer_id="demo-locked-backup", role="backup")
    assert method_state(backup, now=now).status == "active"

    approaching = method_state(primary("demo-approaching"), now=now)
    assert approaching.status == "active"
    assert 180 <= approaching.resend_count <= 200

    hidden = Method.objects.get(customer__customer_id="demo-hidden-backup", role="backup")
    assert hidden.kind == "authenticator_app"
    assert hidden.visible_in_crm is False

    india = method_state(primary("demo-india"), now=now)
    assert india.phone is not None
    assert india.phone.region == "IN"

    changed = Event.objects.get(
        customer__customer_id="demo-changed-number", type="phone_number_changed"
    )
    assert primary("demo-changed-number").phone_number == changed.data["phone_number"]

    no_2sv = Method.objects.filter(customer__customer_id="demo-no-2sv")
    assert no_2sv.exists()
    assert all(method_state(m, now=now).status == "removed" for m in no_2sv)

    assert primary("demo-authenticator").kind == "authenticator_app"
    assert primary("demo-email").kind == "email"

    # The local ATS records behind each lookup verdict.
    since = now - settings.TWOSV_LOOKUP_PERIOD

    def latest(customer_id: str) -> LocalDeliveryRecord | None:
        method = primary(customer_id)
        return (
            LocalDeliveryRecord.objects.filter(
                to=method.phone_number or method.email, created_at__gte=since
            )
            .order_by("-created_at")
            .first()
        )

    def outcome(customer_id: str) -> tuple[str, int | None]:
        record = latest(customer_id)
        assert record is not None, customer_id
        return record.status, record.error_code

    assert outcome("demo-india") == ("failed", 30008)
    assert outcome("demo-carrier-filtered") == ("undelivered", 30007)
    assert outcome("demo-unreachable") == ("failed", 30003)
    assert outcome("demo-delivered") == ("delivered", None)
    assert outcome("demo-email") == ("delivered", None)
    assert latest("demo-not-sent") is None
    # Every demo number is its own: the local ATS matches records by number.
    numbers = [m.phone_number for m in Method.objects.exclude(phone_number="")]
    assert len(numbers) == len(set(numbers))

    # The output: the agent's token as stored, curl lines to paste, every customer.
    agent = User.objects.get(username="demo-agent")
    key = Token.objects.get(user=agent).key
    assert printed_agent_token(out) == key
    assert (
        f'curl -H "Authorization: Token {key}" '
        "http://127.0.0.1:8000/api/v1/customers/demo-locked/twosv/"
    ) in out
    assert list(agent.groups.values_list("name", flat=True)) == ["support_agent"]
    producer = User.objects.get(username="demo-producer")
    assert list(producer.groups.values_list("name", flat=True)) == ["event_producer"]
    assert Token.objects.get(user=producer).key in out
    for customer_id in FIXTURE_IDS:
        assert customer_id in out

    # DEBUG is on: an admin / admin superuser.
    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    assert admin.check_password("admin")
    assert 'password "admin"' in out


def test_second_run_replaces_the_demo_data_with_fresh_times():
    other = factories.CustomerFactory(customer_id="real-customer")
    factories.MethodFactory(customer=other, phone_number="+14155550100")
    real_record = factories.LocalDeliveryRecordFactory(to="+14155550100")

    with time_machine.travel(T0, tick=False):
        first_token = printed_agent_token(demo_load())
        first = snapshot()
        # What agents and admins do with the demo between two runs goes too.
        admin = factories.UserFactory(username="lifter", is_staff=True, is_superuser=True)
        services.lock_lift(method=primary("demo-locked"), actor=admin, reason="demo")
        TroubleshootingSession.objects.create(
            customer=Customer.objects.get(customer_id="demo-india"),
            agent=User.objects.get(username="demo-agent"),
        )

    later = T0 + timedelta(hours=30)
    with time_machine.travel(later, tick=False):
        out = demo_load()
        assert snapshot() == first
        assert not TroubleshootingSession.objects.filter(
            customer__customer_id__startswith="demo-"
        ).exists()

        locked = method_state(primary("demo-locked"), now=later)
        assert locked.status == "locked"
        assert locked.lock is not None
        assert abs(locked.lock.seconds_remaining - 20 * 3600) < 120
        assert method_state(primary("demo-approaching"), now=later).resend_count >= 180

    assert f"replacing {len(FIXTURE_IDS)} from the previous run" in out
    assert Customer.objects.filter(customer_id="real-customer").exists()
    assert LocalDeliveryRecord.objects.filter(pk=real_record.pk).exists()
    assert User.objects.filter(username="demo-agent").count() == 1
    # The token printed after a re-run is the one stored, and the same as before.
    assert printed_agent_token(out) == first_token
    assert Token.objects.get(user__username="demo-agent").key == first_token


def test_no_admin_without_debug(settings):
    settings.DEBUG = False
    users = demo_users()
    assert "DEBUG is off" in users.admin_note
    assert not User.objects.filter(username="admin").exists()
    # Tokens survive a re-run: a token pasted into a CRM keeps working.
    assert demo_users().agent_token == users.agent_token


def test_refuses_a_fixture_the_wipe_would_not_find(tmp_path):
    fixture = tmp_path / "demo.json"
    fixture.write_text(json.dumps({"customers": [{"customer_id": "acme-1", "events": []}]}))
    with pytest.raises(CommandError, match="must start with 'demo-'"):
        demo_load("--fixture", str(fixture))
    assert not Customer.objects.exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("now", timedelta(0)),
        ("-30s", -timedelta(seconds=30)),
        ("-40min", -timedelta(minutes=40)),
        ("-7h5min", -timedelta(hours=7, minutes=5)),
        ("-90d", -timedelta(days=90)),
    ],
)
def test_relative_times(value, expected):
    assert parse_offset(value) == expected


@pytest.mark.parametrize("value", ["2h", "+2h", "-2 h", "-2m", "", 5, None])
def test_relative_times_refuse_the_future_and_typos(value):
    with pytest.raises(CommandError):
        parse_offset(value)


def test_the_pending_lookup_is_due_for_the_first_sweep_and_completes(settings):
    """Issue 17, item 4: under `make run` the server's first sweep completes it."""
    demo_load()
    lookup = DeliveryLookup.objects.get(customer__customer_id="demo-lookup-pending")
    now = timezone.now()
    assert lookup.status == "pending"
    # Published just over stale-after ago, then lost: due for the sweeper's next run.
    assert lookup.enqueued_at == lookup.created_at
    assert now - settings.TWOSV_LOOKUP_STALE_AFTER - timedelta(seconds=30) < lookup.created_at
    assert lookup.created_at < now - settings.TWOSV_LOOKUP_STALE_AFTER

    assert services.lookups_sweep() >= 1
    lookup.refresh_from_db()
    # The demo's local ATS record for its number: delivered.
    assert (lookup.status, lookup.verdict) == ("succeeded", "delivered")


def test_the_walkthrough_says_which_number_to_type():
    """Issue 17, item 11: every phone check in the printed walkthrough names its number."""
    out = demo_load()
    assert "{number}" not in out
    assert "verify +1 202-555-0143 -> check_ats_delivery" in out
    assert "has the device: yes; verify +1 206-555-0188; run the ATS lookup" in out
    assert "phone check: type +91 98765 43210 for a match" in out
    for customer in json.loads(FIXTURE.read_text())["customers"]:
        if any("{number}" in step["do"] for step in customer.get("walkthrough", [])):
            number = phonenumbers.format_number(
                phonenumbers.parse(primary(customer["customer_id"]).phone_number),
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            )
            assert f"verify {number}" in out, customer["customer_id"]
            assert f"phone check: type {number} for a match" in out, customer["customer_id"]
