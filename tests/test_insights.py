"""The admin's insights page: figures from aggregate queries, charts as inline SVG (issue 7)."""

import re
from datetime import date, timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db.models import Count
from django.test import Client
from django.urls import reverse

from tests import factories
from tests.builders import T0, lock
from twosv import insights, services
from twosv.models import (
    DeliveryLookup,
    DeliveryReceipt,
    Event,
    EventType,
    LookupStatus,
    Method,
    MethodKind,
    TroubleshootingSession,
    TwilioMessage,
    Verdict,
)
from twosv.receipt_models import STATUS_RANK

URL = "/admin/twosv/event/insights/"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock", "small_threshold")]


def lookup(method: Method, *, verdict: str = "", status: str = "succeeded", ago=timedelta(hours=1)):
    created = DeliveryLookup.objects.create(
        customer=method.customer,
        method=method,
        status=status,
        verdict=verdict,
        period_start=T0 - ago - timedelta(days=1),
    )
    # created_at is auto_now_add: move it to when the lookup was asked for.
    DeliveryLookup.objects.filter(pk=created.pk).update(created_at=T0 - ago)


def session(agent: User, *, step: str, outcome: str, helpful: bool | None, closed_ago=timedelta(1)):
    customer = factories.CustomerFactory()
    TroubleshootingSession.objects.create(
        customer=customer,
        agent=agent,
        closed_at=T0 - closed_ago if closed_ago is not None else None,
        outcome=outcome,
        helpful=helpful,
        final_step_code=step,
    )


def receipt(method: Method, status: str, error_code: int | None = None, *, ago=timedelta(hours=1)):
    """One message to the method's number and its receipt with `status`, received `ago`."""
    at = T0 - ago
    message = TwilioMessage.objects.create(
        message_sid=f"SM{TwilioMessage.objects.count():032d}",
        method=method,
        status=status,
        rank=STATUS_RANK[status],
        error_code=error_code,
        sent_at=at,
        updated_at=at,
    )
    DeliveryReceipt.objects.create(
        message=message, method=method, status=status, error_code=error_code, received_at=at
    )


@pytest.fixture
def history(root: User) -> None:
    """Locks, lookups and sessions spread over the last 40 days."""
    recent = factories.MethodFactory(method_id="m-recent")
    lock(recent, T0 - timedelta(hours=2))
    services.lock_lift(method=recent, actor=root, reason="verified")
    lock(factories.MethodFactory(method_id="m-3d"), T0 - timedelta(days=3))
    lock(factories.MethodFactory(method_id="m-3d-bis"), T0 - timedelta(days=3, hours=1))
    lock(factories.MethodFactory(method_id="m-40d"), T0 - timedelta(days=40))

    india = factories.MethodFactory(phone_number="+919876543210")
    us = factories.MethodFactory(phone_number="+12025550143")
    uk = factories.MethodFactory(phone_number="+447400123456")
    email = factories.MethodFactory(kind=MethodKind.EMAIL, phone_number="", email="a@example.com")
    lookup(india, verdict=Verdict.REGIONAL_PROVIDER_ISSUE)
    lookup(india, verdict=Verdict.REGIONAL_PROVIDER_ISSUE, ago=timedelta(days=5))
    lookup(india, verdict=Verdict.DELIVERED, ago=timedelta(days=6))
    lookup(us, verdict=Verdict.DELIVERED)
    lookup(us, verdict=Verdict.DELIVERED, ago=timedelta(days=2))
    lookup(us, verdict=Verdict.CARRIER_FILTERED, ago=timedelta(days=2))
    lookup(us, verdict=Verdict.DELIVERED, ago=timedelta(days=45))  # outside 30 days
    lookup(uk, status=LookupStatus.FAILED)
    lookup(uk, status=LookupStatus.PENDING)  # not finished: not counted
    lookup(email, verdict=Verdict.NOT_SENT)

    # Receipts in two regions (India, the US), one outside 30 days.
    receipt(india, "undelivered", 30003)
    receipt(india, "undelivered", 30003, ago=timedelta(days=10))
    receipt(india, "delivered")
    receipt(us, "delivered")
    receipt(us, "delivered", ago=timedelta(days=3))
    receipt(us, "undelivered", 30007)
    receipt(us, "undelivered", 30007, ago=timedelta(days=45))  # outside 30 days

    session(root, step="check_carrier_block", outcome="resolved", helpful=True)
    session(root, step="check_carrier_block", outcome="resolved", helpful=False)
    session(root, step="check_carrier_block", outcome="escalated", helpful=None)
    session(root, step="wait_for_lock_expiry", outcome="not_resolved", helpful=True)
    session(root, step="wait_for_lock_expiry", outcome="resolved", helpful=True, closed_ago=None)
    session(
        root,
        step="wait_for_lock_expiry",
        outcome="resolved",
        helpful=True,
        closed_ago=timedelta(days=40),
    )


def test_locks_per_day_match_the_event_log(root_client, history):
    response = root_client.get(URL, {"days": 30})

    assert response.status_code == 200
    figures = response.context["insights"]
    period = figures.period
    assert (period.first_day, period.last_day) == (date(2026, 2, 1), date(2026, 3, 2))
    locked = Event.objects.filter(
        outcome="locked", occurred_at__gte=period.start, occurred_at__lt=period.end
    )
    assert figures.locks_total == locked.count() == 3
    assert len(figures.locks) == 30
    for day in figures.locks:
        assert day.locked == locked.filter(occurred_at__date=day.day).count(), day
        assert (
            day.lifted
            == Event.objects.filter(type=EventType.LOCK_LIFTED, occurred_at__date=day.day).count()
        )
    assert figures.lifts_total == 1
    html = response.content.decode()
    assert re.search(r'id="locks-total">\s*3\s*<', html)
    assert re.search(r'id="lifts-total">\s*1\s*<', html)


def test_a_longer_period_takes_in_older_locks(root_client, history):
    figures = root_client.get(URL, {"days": 90}).context["insights"]
    assert figures.locks_total == Event.objects.filter(outcome="locked").count() == 4
    assert len(figures.locks) == 90
    week = root_client.get(URL, {"days": 7}).context["insights"]
    assert week.locks_total == 3
    assert len(week.locks) == 7


def test_lookup_verdicts_by_region_match_a_query(root_client, history):
    figures = root_client.get(URL).context["insights"]
    period = figures.period
    finished = DeliveryLookup.objects.filter(
        created_at__gte=period.start, created_at__lt=period.end, status="succeeded"
    )
    by_key = {group.key: group for group in figures.regions}

    india = by_key["+91"]
    expected = dict(
        finished.filter(method__phone_number__startswith="+91")
        .values_list("verdict")
        .annotate(n=Count("id"))
    )
    assert india.counts == expected == {"regional_provider_issue": 2, "delivered": 1}
    assert india.label == "India (+91)"
    assert india.advisory is True  # the default advisory from migration 0002
    assert by_key["+1"].counts == {"delivered": 2, "carrier_filtered": 1}
    assert by_key["+1"].advisory is False
    assert by_key["+44"].counts == {insights.LOOKUP_FAILED: 1}
    assert by_key[insights.EMAIL_REGION].counts == {"not_sent": 1}
    assert figures.lookups_total == 8
    # Largest first; a tie goes by name.
    assert [group.key for group in figures.regions] == ["+91", "+1", "email", "+44"]

    html = root_client.get(URL).content.decode()
    assert "India (+91)" in html
    assert "provider advisory" in html


def test_next_step_outcomes_and_helpful_rate(root_client, history):
    response = root_client.get(URL)
    figures = response.context["insights"]
    period = figures.period
    closed = TroubleshootingSession.objects.filter(
        closed_at__gte=period.start, closed_at__lt=period.end
    )
    steps = {step.step_code: step for step in figures.steps}

    carrier = steps["check_carrier_block"]
    rows = closed.filter(final_step_code="check_carrier_block")
    assert (carrier.resolved, carrier.not_resolved, carrier.escalated) == (2, 0, 1)
    assert carrier.total == rows.count()
    assert carrier.helpful_rate == rows.filter(helpful=True).count() / 2 == 0.5
    wait = steps["wait_for_lock_expiry"]
    assert (wait.resolved, wait.not_resolved, wait.escalated, wait.helpful_rate) == (0, 1, 0, 1.0)
    assert figures.sessions_total == closed.count() == 4

    html = response.content.decode()
    assert "50% <span" in html
    assert "(1 of 2)" in html


def test_charts_are_inline_svg_with_no_script_and_no_cdn(root_client, history):
    html = root_client.get(URL).content.decode()
    charts = re.findall(r"<svg[^>]*class=\"pygal-chart\".*?</svg>", html, re.S)
    assert len(charts) == 4
    for chart in charts:
        assert "<script" not in chart
        assert "kozea.github.io" not in chart
        assert 'href="http' not in chart
    assert "Methods locked" in charts[0]
    assert "Regional provider issue" in charts[1]
    # Steps by the title agents saw in the panel, not by code (issue 17, item 10).
    assert "Check for a carrier block" in charts[2]
    assert "check_carrier_block" not in charts[2]
    assert "undelivered 30003" in charts[3]


def axis_ticks(chart: str) -> list[str]:
    """Return the labels of a pygal chart's value axis (its numeric guide labels)."""
    labels = re.findall(r'class="guides".*?<text[^>]*>([^<]*)</text>', chart, re.S)
    return [label for label in labels if re.fullmatch(r"-?[\d.,]+", label)]


def test_counts_are_drawn_on_whole_number_axes(root_client, history):
    html = root_client.get(URL).content.decode()
    charts = re.findall(r"<svg[^>]*class=\"pygal-chart\".*?</svg>", html, re.S)
    for chart in charts:
        ticks = axis_ticks(chart)
        assert ticks, chart[:200]
        # Counts have no tenths: pygal's default axis for 1-3 sessions ticks 0.2, 0.4, ...
        assert all(re.fullmatch(r"\d+", tick) for tick in ticks), ticks
        assert "0" in ticks


def test_the_steps_table_names_steps_by_title(root_client, history):
    html = root_client.get(URL).content.decode()
    steps = html[html.index('id="steps"') :]
    assert 'title="check_carrier_block">Check for a carrier block</th>' in steps
    assert "Wait for the lock to end" in steps
    assert "<code>check_carrier_block</code>" not in steps


def engine_step_titles() -> dict[str, str]:
    """Return each Step(code=..., title=_("...")) of the engine's source, by code."""
    import ast
    from pathlib import Path

    from twosv.vocabulary import StepCode

    titles: dict[str, str] = {}
    engine = Path(insights.__file__).parent / "engine"
    for source in sorted(engine.glob("steps_*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Step":
                keywords = {k.arg: k.value for k in node.keywords}
                code = keywords["code"]
                title = keywords["title"]
                assert isinstance(code, ast.Attribute)
                assert isinstance(title, ast.Call)
                assert isinstance(title.args[0], ast.Constant)
                titles[StepCode[code.attr].value] = title.args[0].value
    return titles


def test_step_titles_are_the_engines():
    from twosv.vocabulary import StepCode

    # If this fails after a step's title changed in twosv/engine/steps_*.py, update
    # twosv.insights.STEP_TITLES to match: the admin names steps as the panel does.
    assert engine_step_titles() == {
        code.value: title for code, title in insights.STEP_TITLES.items()
    }
    assert set(insights.STEP_TITLES) == set(StepCode)
    assert insights.step_title("") == "(no step)"
    assert insights.step_title("a_retired_step") == "a_retired_step"


def test_empty_period_renders(root_client):
    response = root_client.get(URL, {"days": 7})
    assert response.status_code == 200
    assert response.content.decode().count("Nothing in this period") == 4


@pytest.mark.parametrize(("raw", "days"), [("7", 7), ("90", 90), ("365", 30), ("x", 30), ("", 30)])
def test_period_parameter(root_client, raw, days):
    response = root_client.get(URL, {"days": raw})
    assert response.status_code == 200
    assert response.context["insights"].period.days == days


def test_insights_need_the_view_permissions():
    needed = ["view_event", "view_deliverylookup", "view_troubleshootingsession"]
    user = factories.UserFactory(username="staff", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="twosv", codename__in=needed[:2])
    )
    client = Client()
    client.force_login(user)
    assert client.get(URL).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename=needed[2]))
    user = User.objects.get(pk=user.pk)  # drop the permission cache
    client.force_login(user)
    assert client.get(URL).status_code == 200


@pytest.mark.usefixtures("history")
def test_receipts_show_only_to_those_who_may_view_receipts():
    """The other charts need the event, lookup and session view permissions; the receipts
    section also needs the receipts' own."""
    needed = ["view_event", "view_deliverylookup", "view_troubleshootingsession"]
    user = factories.UserFactory(username="staff", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="twosv", codename__in=needed)
    )
    client = Client()
    client.force_login(user)

    response = client.get(URL)
    assert response.status_code == 200
    assert response.context["insights"].receipts == []
    html = response.content.decode()
    assert 'id="receipts"' not in html
    assert 'id="receipts-total"' not in html
    assert 'id="locks-total"' in html  # the other figures are there

    user.user_permissions.add(Permission.objects.get(codename="view_deliveryreceipt"))
    user = User.objects.get(pk=user.pk)  # drop the permission cache
    client.force_login(user)
    html = client.get(URL).content.decode()
    assert re.search(r'id="receipts-total">\s*6\s*<', html)
    assert 'id="receipts"' in html


def test_anonymous_is_sent_to_login():
    response = Client().get(URL)
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_figures_take_a_constant_number_of_queries(django_assert_num_queries, history):
    # One grouped query per figure, plus the active advisories and the delivery incidents.
    with django_assert_num_queries(6):
        insights.insights_for(days=90)
    for n in range(30):
        lock(factories.MethodFactory(), T0 - timedelta(days=n % 20, hours=3))
    # Receipts of more methods and regions: still one grouped query for them.
    for n, number in enumerate(["+447400123457", "+4915112345678", "+33612345678", "+61412345678"]):
        method = factories.MethodFactory(phone_number=number)
        receipt(method, "delivered", ago=timedelta(days=n))
        receipt(method, "undelivered", 30005, ago=timedelta(days=n, hours=2))
    with django_assert_num_queries(6):
        insights.insights_for(days=90)


def test_receipts_by_status_and_error_code_per_region(root_client, history):
    response = root_client.get(URL, {"days": 30})

    figures = response.context["insights"]
    got = {(b.region, b.status, b.error_code): b.count for b in figures.receipts}
    assert got == {
        ("IN", "undelivered", 30003): 2,
        ("IN", "delivered", None): 1,
        ("US", "delivered", None): 2,
        ("US", "undelivered", 30007): 1,  # the one 45 days ago is outside the period
    }
    assert figures.receipts_total == 6
    # Largest region first, largest bucket first within it; regions by name and code.
    assert [b.label for b in figures.receipts][:1] == ["India (IN)"]
    html = response.content.decode()
    assert re.search(r'id="receipts-total">\s*6\s*<', html)
    table = html[html.index('id="receipts"') :]
    assert "India (IN)" in table
    assert "United States (US)" in table
    # Error codes in words.
    assert "Unreachable handset" in table
    assert "Filtered by the carrier" in table
    # The same period controls as the other charts: 7 days leave out the one 10 days ago.
    week = root_client.get(URL, {"days": 7}).context["insights"]
    assert {(b.region, b.status, b.error_code): b.count for b in week.receipts}[
        ("IN", "undelivered", 30003)
    ] == 1
    assert week.receipts_total == 5
    assert root_client.get(URL, {"days": 90}).context["insights"].receipts_total == 7


def test_receipts_chart_stacks_regions_by_status_on_whole_number_ticks(root_client, history):
    html = root_client.get(URL).content.decode()
    chart = re.findall(r"<svg[^>]*class=\"pygal-chart\".*?</svg>", html, re.S)[3]
    for series in ("undelivered 30003", "undelivered 30007", "delivered"):
        assert series in chart
    assert "India (IN)" in chart
    assert "United States (US)" in chart
    ticks = axis_ticks(chart)
    assert ticks
    assert all(re.fullmatch(r"\d+", tick) for tick in ticks), ticks


def test_a_number_with_no_known_region_is_counted_as_unknown(root_client):
    method = factories.MethodFactory(phone_number="+80012345678")  # non-geographic
    receipt(method, "failed", 30008)
    figures = root_client.get(URL).context["insights"]
    assert [(b.region, b.label, b.count) for b in figures.receipts] == [
        ("001", "Non-geographic", 1)
    ]


@pytest.mark.parametrize(
    ("prefix", "code"),
    [("+141", 1), ("+919", 91), ("+447", 44), ("+211", 211), ("+800", 800), ("+999", None)],
)
def test_calling_code_from_a_number_prefix(prefix, code):
    assert insights.calling_code(prefix) == code


def test_insights_page_renders_with_the_demo_fixtures(root_client):
    call_command("demo_load", stdout=StringIO())
    response = root_client.get(URL, {"days": 7})
    assert response.status_code == 200
    figures = response.context["insights"]
    period = figures.period
    assert figures.locks_total == (
        Event.objects.filter(
            outcome="locked", occurred_at__gte=period.start, occurred_at__lt=period.end
        ).count()
    )
    assert figures.lookups_total == (
        DeliveryLookup.objects.filter(
            created_at__gte=period.start,
            created_at__lt=period.end,
            status__in=["succeeded", "failed"],
        ).count()
    )
