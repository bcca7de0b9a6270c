"""Delivery incidents (docs/SPEC.md §11): detection, the admin's decisions, the state, insights."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests import factories
from tests.builders import T0, enroll, freeze
from twosv import services
from twosv.ats import AtsMessage
from twosv.insights import insights_for
from twosv.models import (
    AuditEntry,
    DeliveryAttempt,
    DeliveryLookup,
    Incident,
    IncidentStatus,
    LookupStatus,
    Method,
)
from twosv.services.incidents import IncidentThresholds, region_figures

pytestmark = pytest.mark.django_db

BR = "+5511987654321"
DE = "+4915123456789"
US = "+14155550123"
WINDOW = timedelta(minutes=15)
_ids = itertools.count()


@pytest.fixture(autouse=True)
def _clock(time_machine: Any) -> None:
    freeze(time_machine, T0)


def _lookup(region: str) -> DeliveryLookup:
    method = factories.MethodFactory(method_id=f"m-{region}-{next(_ids)}")
    return DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        status=LookupStatus.SUCCEEDED,
        verdict="provider_error",
        period_start=T0 - timedelta(days=1),
        finished_at=T0,
    )


def sent(
    region: str,
    *,
    failed: int = 0,
    delivered: int = 0,
    at: datetime | None = None,
    code: int | None = 30008,
    lookup: DeliveryLookup | None = None,
) -> DeliveryLookup:
    """Store `failed` + `delivered` attempts to numbers in `region`, sent at `at` (1 min ago)."""
    at = at or T0 - timedelta(minutes=1)
    lookup = lookup or _lookup(region)
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                lookup=lookup,
                external_id=f"SM{next(_ids):08d}",
                sent_at=at,
                status="failed" if n < failed else "delivered",
                error_code=code if n < failed else None,
                region=region,
            )
            for n in range(failed + delivered)
        ]
    )
    return lookup


def baseline(region: str, *, failed: int, delivered: int) -> None:
    """A week of history before the window: `failed` of `failed + delivered` failed."""
    sent(region, failed=failed, delivered=delivered, at=T0 - WINDOW - timedelta(days=3))


def detect(at: datetime = T0) -> services.incidents.DetectionReport:
    return services.incidents_detect(now=at)


def incident(region: str) -> Incident:
    return Incident.objects.get(region=region, status__in=["open", "confirmed"])


def admin_client(*codenames: str) -> tuple[Client, Any]:
    user = factories.UserFactory(username=f"admin-{next(_ids)}", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="twosv",
            codename__in=["view_incident", *codenames],
        )
    )
    client = Client()
    client.force_login(user)
    return client, user


# ---------------------------------------------------------------------------------------------
# Opening: below and at each threshold
# ---------------------------------------------------------------------------------------------


def test_nothing_opens_without_attempts():
    assert detect().opened == []
    assert not Incident.objects.exists()


@pytest.mark.parametrize(
    ("failed", "delivered", "opens"),
    [
        (19, 0, False),  # below the minimum of 20 failures, at 100%
        (20, 0, True),  # at the minimum
        (20, 47, False),  # 29.9%: below the 30% share
        (21, 49, True),  # exactly 30%
    ],
)
def test_opening_at_the_minimum_failures_and_share(failed, delivered, opens):
    sent("BR", failed=failed, delivered=delivered)
    assert detect().opened == (["BR"] if opens else [])
    assert Incident.objects.filter(region="BR").exists() is opens


@pytest.mark.parametrize(
    ("base_failed", "opens"),
    [
        (11, False),  # baseline 11%: 30% is below 3 x 11% = 33%
        (10, True),  # baseline 10%: 30% is exactly 3 x 10%
    ],
)
def test_opening_needs_three_times_the_baseline(base_failed, opens):
    baseline("BR", failed=base_failed, delivered=100 - base_failed)
    sent("BR", failed=30, delivered=70)
    assert detect().opened == (["BR"] if opens else [])


def test_a_baseline_of_zero_lets_any_share_from_30_percent_open():
    baseline("BR", failed=0, delivered=500)
    sent("BR", failed=20, delivered=46)  # 30.3%
    assert detect().opened == ["BR"]
    assert incident("BR").baseline == 0


def test_attempts_before_the_window_count_toward_the_baseline_only():
    sent("BR", failed=40, at=T0 - WINDOW - timedelta(seconds=1))
    assert detect().opened == []
    figures = region_figures(now=T0, thresholds=IncidentThresholds.from_settings())["BR"]
    assert (figures.attempts, figures.baseline_attempts, figures.baseline) == (0, 40, 1.0)


def test_a_message_stored_by_several_lookups_counts_once():
    first = sent("BR", failed=15)
    # The same 15 messages again, stored by a second lookup of the same number.
    second = _lookup("BR")
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            lookup=second,
            external_id=attempt.external_id,
            sent_at=attempt.sent_at,
            status=attempt.status,
            error_code=attempt.error_code,
            region="BR",
        )
        for attempt in first.attempts.all()
    )
    assert detect().opened == []  # 15 failed messages, not 30
    sent("BR", failed=5)
    assert detect().opened == ["BR"]
    assert incident("BR").failures == 20


def test_an_incident_carries_its_figures():
    baseline("BR", failed=2, delivered=98)
    sent("BR", failed=24, delivered=16, code=30008)
    sent("BR", failed=6, code=30003)
    sent("BR", failed=0, delivered=4)
    detect()
    found = incident("BR")
    assert found.status == IncidentStatus.OPEN
    assert (found.attempts, found.failures) == (50, 30)
    assert found.share == pytest.approx(0.6)
    assert found.baseline == pytest.approx(0.02)
    assert found.top_error_codes == [{"code": 30008, "count": 24}, {"code": 30003, "count": 6}]
    assert found.opened_at == found.updated_at == T0
    audit = AuditEntry.objects.get(action="incident_open")
    assert (audit.object_id, audit.details["region"]) == (str(found.pk), "BR")


def test_two_regions_at_once_and_a_quiet_one():
    sent("BR", failed=25)
    sent("DE", failed=40, delivered=10)
    sent("US", failed=3, delivered=300)
    assert sorted(detect().opened) == ["BR", "DE"]
    assert set(Incident.objects.values_list("region", flat=True)) == {"BR", "DE"}
    assert incident("DE").failures == 40


# ---------------------------------------------------------------------------------------------
# Updating, resolving by itself
# ---------------------------------------------------------------------------------------------


def test_an_open_incident_takes_each_runs_figures_and_is_not_opened_twice(time_machine):
    sent("BR", failed=20)
    detect()
    later = T0 + timedelta(minutes=5)
    freeze(time_machine, later)
    sent("BR", failed=30, at=later - timedelta(minutes=1))
    report = detect(later)
    assert (report.opened, report.updated) == ([], ["BR"])
    found = incident("BR")
    assert (found.failures, found.opened_at, found.updated_at) == (50, T0, later)
    assert Incident.objects.count() == 1


def test_it_resolves_itself_after_30_minutes_below_the_thresholds():
    sent("BR", failed=20)
    detect()
    # The window moves past the failures: below from T0 + 15 min on.
    below = T0 + timedelta(minutes=15)
    assert detect(below).resolved == []
    assert incident("BR").below_since == below
    assert detect(below + timedelta(minutes=29)).resolved == []
    report = detect(below + timedelta(minutes=30))
    assert report.resolved == ["BR"]
    found = Incident.objects.get(region="BR")
    assert found.status == IncidentStatus.RESOLVED
    assert found.resolved_at == below + timedelta(minutes=30)
    assert found.resolved_by is None
    assert AuditEntry.objects.filter(action="incident_auto_resolve").count() == 1


def test_going_above_again_restarts_the_30_minutes():
    baseline("BR", failed=0, delivered=2000)  # the incident's own failures barely move it
    sent("BR", failed=20)
    detect()
    below = T0 + timedelta(minutes=15)
    detect(below)
    again = below + timedelta(minutes=20)
    sent("BR", failed=25, at=again - timedelta(minutes=1))
    detect(again)
    assert incident("BR").below_since is None
    assert detect(below + timedelta(minutes=31)).resolved == []
    assert incident("BR").status == IncidentStatus.OPEN


def test_a_region_opens_again_after_resolving():
    baseline("BR", failed=0, delivered=2000)
    sent("BR", failed=20)
    detect()
    resolved_at = T0 + timedelta(minutes=45)
    detect(T0 + timedelta(minutes=15))
    assert detect(resolved_at).resolved == ["BR"]
    sent("BR", failed=20, at=resolved_at)
    assert detect(resolved_at + timedelta(minutes=1)).opened == ["BR"]
    assert Incident.objects.filter(region="BR").count() == 2


# ---------------------------------------------------------------------------------------------
# The admin: confirm, dismiss (6 quiet hours), resolve; audited
# ---------------------------------------------------------------------------------------------


def _act(client: Client, action: str, found: Incident, **extra: str) -> Any:
    return client.post(
        reverse("admin:twosv_incident_changelist"),
        {"action": action, "_selected_action": [found.pk], **extra},
    )


def test_confirming_keeps_it_shown_and_is_audited():
    sent("BR", failed=20)
    detect()
    client, user = admin_client("manage_incident")
    response = _act(client, "confirm_incidents", incident("BR"))
    assert response.status_code == 302
    found = incident("BR")
    assert (found.status, found.confirmed_by, found.confirmed_at) == ("confirmed", user, T0)
    entry = AuditEntry.objects.get(action="incident_confirm")
    assert (entry.actor_username, entry.result, entry.object_id) == (
        user.username,
        "changed",
        str(found.pk),
    )
    assert detect(T0 + timedelta(minutes=1)).updated == ["BR"]  # still updated, still shown


def test_dismissing_asks_for_a_reason_and_keeps_the_region_quiet_for_6_hours():
    baseline("BR", failed=0, delivered=5000)
    sent("BR", failed=20)
    detect()
    client, user = admin_client("manage_incident")
    page = _act(client, "dismiss_incidents", incident("BR"))
    assert page.status_code == 200
    assert page.templates[0].name == "admin/twosv/incident/reason.html"
    assert Incident.objects.get(region="BR").status == "open"

    _act(client, "dismiss_incidents", incident("BR"), apply="yes", reason="Test traffic")
    found = Incident.objects.get(region="BR")
    assert (found.status, found.dismissed_by, found.reason) == ("dismissed", user, "Test traffic")
    assert found.quiet_until == T0 + timedelta(hours=6)
    entry = AuditEntry.objects.get(action="incident_dismiss")
    assert entry.details["reason"] == "Test traffic"

    # Still failing: nothing reopens for 6 hours, then it does.
    for minutes in (1, 60, 359):
        at = T0 + timedelta(minutes=minutes)
        sent("BR", failed=25, at=at - timedelta(minutes=1))
        report = detect(at)
        assert (report.opened, report.quiet) == ([], ["BR"])
    at = T0 + timedelta(hours=6)
    sent("BR", failed=25, at=at - timedelta(minutes=1))
    assert detect(at).opened == ["BR"]


def test_a_dismissal_does_not_quiet_other_regions():
    sent("BR", failed=20)
    detect()
    services.incident_dismiss(
        incident=incident("BR"), actor=factories.UserFactory(), reason="Known"
    )
    sent("DE", failed=20, at=T0)
    assert detect(T0 + timedelta(minutes=1)).opened == ["DE"]


def test_resolving_is_audited_and_only_open_incidents_change():
    sent("BR", failed=20)
    detect()
    client, user = admin_client("manage_incident")
    found = incident("BR")
    _act(client, "resolve_incidents", found, apply="yes", reason="Twilio fixed the route")
    found.refresh_from_db()
    assert (found.status, found.resolved_by, found.resolved_at) == ("resolved", user, T0)
    # Again on a closed incident: nothing changes, the attempt is audited as such.
    _act(client, "confirm_incidents", found)
    found.refresh_from_db()
    assert found.status == "resolved"
    results = list(
        AuditEntry.objects.filter(action__startswith="incident_")
        .exclude(action="incident_open")
        .order_by("id")
        .values_list("action", "result")
    )
    assert results == [("incident_resolve", "changed"), ("incident_confirm", "not_active")]


def test_the_actions_need_the_permission_and_the_figures_are_read_only():
    sent("BR", failed=20)
    detect()
    client, _user = admin_client()
    page = client.get(reverse("admin:twosv_incident_changelist"))
    assert page.status_code == 200
    form = page.context["action_form"]
    assert form is None or [name for name, _ in form.fields["action"].choices] == [""]
    _act(client, "confirm_incidents", incident("BR"))
    assert incident("BR").status == "open"
    detail = client.get(reverse("admin:twosv_incident_change", args=[incident("BR").pk]))
    assert detail.status_code == 200
    assert "30008" in detail.content.decode()
    assert b'name="failures"' not in detail.content


# ---------------------------------------------------------------------------------------------
# One aggregate query per run, whatever the data
# ---------------------------------------------------------------------------------------------


def _attempt_selects(context: CaptureQueriesContext) -> list[str]:
    table = DeliveryAttempt._meta.db_table
    return [
        q["sql"]
        for q in context.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and table in q["sql"]
    ]


@pytest.mark.parametrize("regions", [1, 12])
def test_detection_reads_the_attempts_in_one_aggregate_query(regions):
    codes = ["BR", "DE", "US", "GB", "FR", "IT", "ES", "NL", "SE", "PL", "MX", "JP"][:regions]
    for code in codes:
        baseline(code, failed=5, delivered=50 * regions)
        sent(code, failed=3, delivered=40)
    with CaptureQueriesContext(connection) as context:
        report = detect()
    assert report.opened == []
    selects = _attempt_selects(context)
    assert len(selects) == 1, selects
    assert "GROUP BY" in selects[0].upper()
    assert len(context.captured_queries) == 2  # the aggregate and the incidents open or quiet


# ---------------------------------------------------------------------------------------------
# What agents see: the advisory and the verdict
# ---------------------------------------------------------------------------------------------


def _state(client: Any, customer_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/customers/{customer_id}/twosv/")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_advisory_shows_for_a_customer_in_the_region_and_not_another(agent_client):
    enroll("cust-br", "m-br", phone_number=BR)
    enroll("cust-de", "m-de", phone_number=DE)
    enroll("cust-mail", "m-mail", kind="email", email="ada@example.com")
    assert "delivery_incident" not in [
        a["code"] for a in _state(agent_client, "cust-br")["advisories"]
    ]

    sent("BR", failed=20)
    detect()

    advisories = _state(agent_client, "cust-br")["advisories"]
    found = [a for a in advisories if a["code"] == "delivery_incident"]
    assert len(found) == 1
    assert found[0]["severity"] == "warning"
    assert found[0]["region"] == "BR"
    assert datetime.fromisoformat(found[0]["since"]) == T0
    assert "BR" in found[0]["message"]
    assert "2026-03-02 12:00 UTC" in found[0]["message"]
    severities = [a["severity"] for a in advisories]
    assert severities == sorted(severities, key=lambda s: s != "warning")  # warnings first
    for other in ("cust-de", "cust-mail"):
        codes = [a["code"] for a in _state(agent_client, other)["advisories"]]
        assert "delivery_incident" not in codes, other


def test_the_advisory_goes_when_the_incident_is_dismissed(agent_client):
    enroll("cust-br", "m-br", phone_number=BR)
    sent("BR", failed=20)
    detect()
    assert "delivery_incident" in [a["code"] for a in _state(agent_client, "cust-br")["advisories"]]
    services.incident_dismiss(incident=incident("BR"), actor=factories.UserFactory(), reason="x")
    assert "delivery_incident" not in [
        a["code"] for a in _state(agent_client, "cust-br")["advisories"]
    ]


class _FailingAts:
    def messages(self, *, to: str, since: datetime) -> list[AtsMessage]:
        at = T0 - timedelta(minutes=2)
        return [AtsMessage("SMX1", to, "+14803605516", "twilio", "undelivered", 30003, at, at)]


def _run_lookup(method: Method) -> DeliveryLookup:
    lookup = DeliveryLookup.objects.create(
        customer=method.customer, method=method, period_start=T0 - timedelta(days=1)
    )
    services.lookup_run(lookup_id=lookup.pk, client=_FailingAts())
    lookup.refresh_from_db()
    return lookup


def test_a_failed_delivery_to_an_incident_region_takes_the_regional_verdict():
    method = enroll("cust-br", "m-br", phone_number=BR)
    before = _run_lookup(method)
    assert before.verdict == "unreachable"  # 30003, no advisory, no incident
    assert list(before.attempts.values_list("region", flat=True)) == ["BR"]

    sent("BR", failed=20)
    detect()
    assert _run_lookup(method).verdict == "regional_provider_issue"

    services.incident_resolve(incident=incident("BR"), actor=factories.UserFactory())
    assert _run_lookup(method).verdict == "unreachable"


def test_the_regional_step_names_the_incident(agent_client):
    method = enroll("cust-br", "m-br", phone_number=BR)
    sent("BR", failed=20)
    detect()
    _run_lookup(method)
    session = agent_client.post(
        "/api/v1/customers/cust-br/twosv/sessions/", {}, format="json"
    ).json()
    step = agent_client.patch(
        f"/api/v1/twosv/sessions/{session['id']}/",
        {"answers": {"has_device_access": True}},
        format="json",
    ).json()["next_step"]
    if step["code"] == "verify_phone_number":
        agent_client.post(
            f"/api/v1/twosv/sessions/{session['id']}/verify-phone/",
            {"phone_number": BR},
            format="json",
        )
        step = agent_client.get(f"/api/v1/twosv/sessions/{session['id']}/").json()["next_step"]
    assert step["code"] == "regional_provider_issue"
    assert "delivery incident" in step["instructions"]


# ---------------------------------------------------------------------------------------------
# Insights
# ---------------------------------------------------------------------------------------------


def test_insights_show_incidents_on_the_verdicts_by_region_chart(root_client):
    method = enroll("cust-br", "m-br", phone_number=BR)
    sent("BR", failed=20)
    detect()
    _run_lookup(method)
    figures = insights_for(days=7, now=T0)
    assert [(mark.region, mark.group_key, mark.failures) for mark in figures.incidents] == [
        ("BR", "+55", 20)
    ]
    html = root_client.get(reverse("admin:twosv_insights") + "?days=7").content.decode()
    assert "Incident BR Mar 02 12:00" in html  # the chart's series
    assert 'id="incidents"' in html  # and the table under it


def test_the_state_read_stays_within_its_query_budget_with_an_incident(agent_client):
    enroll("cust-br", "m-br", phone_number=BR)
    sent("BR", failed=20)
    detect()  # drops the cached advisory settings: the read below fetches them again
    with CaptureQueriesContext(connection) as context:
        advisories = _state(agent_client, "cust-br")["advisories"]
    assert "delivery_incident" in [a["code"] for a in advisories]
    assert len(context.captured_queries) <= 8


def test_the_migration_gives_existing_attempts_their_numbers_region():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("twosv.migrations.0009_delivery_incidents")
    br = _lookup("BR")
    Method.objects.filter(pk=br.method_id).update(phone_number=BR)
    us = sent("", failed=1)  # the factory's +1 415 number
    sent("", failed=2, lookup=br)
    migration.fill_attempt_regions(apps, None)
    assert sorted(DeliveryAttempt.objects.values_list("region", flat=True)) == ["BR", "BR", "US"]
    assert us.attempts.get().region == "US"
