"""twosv.services: event_ingest (incremental and re-folding) and lock_lift, on the database."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests.builders import ENROLLED_AT, RESEND, T0, enroll, ingest
from twosv import policy, services
from twosv.errors import InvalidInput
from twosv.models import AuditEntry, Event, EventOutcome, EventType, Method
from twosv.selectors import customer_twosv_state, lock_policy, method_projection, method_state

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


def fresh(method: Method) -> Method:
    return Method.objects.get(pk=method.pk)


def refolded(method: Method) -> tuple[policy.Projection, dict[str, str]]:
    """The projection and outcomes folded from scratch out of every stored event of the method."""
    events = [
        policy.FoldEvent(event_id=e.event_id, type=e.type, occurred_at=e.occurred_at)
        for e in Event.objects.filter(method=method)
    ]
    projection, outcomes = policy.fold(events, lock_policy())
    return projection, {event.event_id: outcome.value for event, outcome in outcomes}


def assert_exact(method: Method) -> None:
    """The stored projection and every stored outcome equal a fold of the whole history."""
    projection, outcomes = refolded(method)
    assert method_projection(fresh(method)) == projection
    assert dict(Event.objects.filter(method=method).values_list("event_id", "outcome")) == outcomes


def outcomes_of(*event_ids: str) -> list[str]:
    by_id = dict(Event.objects.filter(event_id__in=event_ids).values_list("event_id", "outcome"))
    return [by_id[event_id] for event_id in event_ids]


# ---------------------------------------------------------------------------------------------
# In-order arrival is incremental
# ---------------------------------------------------------------------------------------------

# Seven resends, then a first send, a wrong code and a verified code: never reaches the lock.
HISTORY_TYPES = [RESEND] * 7 + [
    EventType.CODE_SENT,
    EventType.CODE_REJECTED,
    EventType.CODE_VERIFIED,
]
HISTORY_START = T0 - timedelta(hours=20)


def give_history(method: Method, n: int) -> None:
    """Give the method n events, folded exactly.

    The newest goes through the service, the middle is written straight to the log, and the
    oldest arrives last through the service: a late event, so the whole history is re-folded.
    """

    def row(i: int) -> dict[str, Any]:
        return {
            "event_id": f"{method.method_id}-h{i:04d}",
            "type": HISTORY_TYPES[i % len(HISTORY_TYPES)],
            "occurred_at": HISTORY_START + timedelta(seconds=10 * i),
        }

    def through_service(i: int) -> None:
        r = row(i)
        ingest(r["event_id"], r["type"], at=r["occurred_at"], method_id=method.method_id)

    through_service(n - 1)
    Event.objects.bulk_create(
        Event(
            customer=method.customer, method=method, data={"method_id": method.method_id}, **row(i)
        )
        for i in range(1, n - 1)
    )
    through_service(0)


def reads_history(queries: list[dict[str, str]]) -> bool:
    return any('WHERE "twosv_event"."method_id"' in q["sql"] for q in queries)


def test_one_more_resend_costs_the_same_queries_after_10_or_1000_events(
    django_assert_max_num_queries,
):
    short, long = enroll(method_id="m-short"), enroll(method_id="m-long")
    give_history(short, 10)
    give_history(long, 1000)
    assert Event.objects.filter(method=long).count() == 1001
    assert_exact(long)

    costs = []
    for method in (short, long):
        with django_assert_max_num_queries(7) as ctx:
            result = ingest(f"{method.method_id}-next", at=T0, method_id=method.method_id)
        assert result.status == "accepted"
        assert not reads_history(ctx.captured_queries), "an in-order event re-read the history"
        costs.append(len(ctx.captured_queries))

    assert costs[0] == costs[1]
    for method in (short, long):
        assert_exact(method)
        assert method_state(fresh(method), now=T0).resend_count == 1


def test_a_late_event_reads_the_history_once(django_assert_max_num_queries):
    method = enroll()
    give_history(method, 50)

    with django_assert_max_num_queries(10) as ctx:
        ingest("late", at=HISTORY_START + timedelta(seconds=5))

    assert reads_history(ctx.captured_queries)
    assert_exact(method)


# ---------------------------------------------------------------------------------------------
# A late event re-folds: the projection is exact whatever the arrival order
# ---------------------------------------------------------------------------------------------


def test_late_code_verified_recomputes_the_count():
    method = enroll()
    times = [T0 - timedelta(minutes=50 - i) for i in range(5)]
    for i, at in enumerate(times):
        ingest(f"r{i}", at=at)
    assert method_state(fresh(method), now=T0).resend_count == 5

    # Verified between the 3rd and 4th resend, delivered after all of them.
    result = ingest("verified", EventType.CODE_VERIFIED, at=times[2] + timedelta(seconds=1))

    assert result.status == "accepted"
    assert method_state(fresh(method), now=T0).resend_count == 2
    assert outcomes_of("r0", "r2", "verified", "r3", "r4") == [
        "counted",
        "counted",
        "reset",
        "counted",
        "counted",
    ]
    assert_exact(method)


@pytest.mark.usefixtures("small_threshold")
def test_late_resend_moves_the_lock_to_the_event_that_is_now_over_the_threshold():
    method = enroll()
    t = [T0 - timedelta(minutes=40 - i) for i in range(5)]
    for i in (0, 1, 3, 4):
        ingest(f"r{i}", at=t[i])
    # t0, t1, t3 counted; t4 is the 4th: locked at t4.
    assert fresh(method).locked_at == t[4]

    ingest("r2", at=t[2])

    method = fresh(method)
    assert method.locked_at == t[3]
    assert method.locked_until == t[3] + timedelta(hours=24)
    assert outcomes_of("r0", "r1", "r2", "r3", "r4") == [
        "counted",
        "counted",
        "counted",
        "locked",
        "blocked",
    ]
    assert Event.objects.filter(method=method, outcome=EventOutcome.LOCKED).count() == 1
    assert_exact(method)


@pytest.mark.usefixtures("small_threshold")
def test_stale_resends_after_a_lift_do_not_lock_again(time_machine, staff):
    method = enroll()
    t = [T0 - timedelta(hours=2, minutes=-i) for i in range(4)]
    for i, at in enumerate(t):
        ingest(f"r{i}", at=at)
    assert method_state(fresh(method), now=T0).status == "locked"
    assert services.lock_lift(method=method, actor=staff, reason="Verified on a video call")
    assert method_state(fresh(method), now=T0).status == "active"

    # Sent during the lock, before the lift; and one older than every counted resend.
    ingest("stale-during-lock", at=t[3] + timedelta(minutes=30))
    ingest("stale-oldest", at=t[0] - timedelta(minutes=5))

    state = method_state(fresh(method), now=T0)
    assert state.status == "active"
    assert state.resend_count == 0
    assert outcomes_of("stale-during-lock") == ["blocked"]
    assert_exact(method)

    # After the lift, resends count from zero again.
    ingest("after-lift", at=T0 + timedelta(seconds=1))
    time_machine.move_to(T0 + timedelta(seconds=2), tick=False)
    assert method_state(fresh(method), now=timezone.now()).resend_count == 1


def test_late_phone_number_change_keeps_the_newest_number():
    method = enroll(phone_number="+14155550142")
    ingest(
        "change-new",
        EventType.PHONE_NUMBER_CHANGED,
        at=T0 - timedelta(hours=1),
        phone_number="+14155550177",
    )
    ingest(
        "change-old",
        EventType.PHONE_NUMBER_CHANGED,
        at=T0 - timedelta(hours=5),
        phone_number="+14155550155",
    )

    assert fresh(method).phone_number == "+14155550177"

    ingest(
        "change-newest",
        EventType.PHONE_NUMBER_CHANGED,
        at=T0 - timedelta(minutes=1),
        phone_number="+919876543210",
    )
    assert fresh(method).phone_number == "+919876543210"
    assert Event.objects.filter(type=EventType.PHONE_NUMBER_CHANGED).count() == 3


def test_an_event_that_repeats_the_number_does_not_date_a_change():
    """The identity system may send the number on file again (a re-verification): the number
    did not change, so "number recently changed" keeps the last real change's date."""
    method = enroll(phone_number="+14155550142", at=T0 - timedelta(days=60))
    ingest(
        "change-real",
        EventType.PHONE_NUMBER_CHANGED,
        at=T0 - timedelta(days=40),
        phone_number="+14155550177",
    )
    ingest(
        "change-same",
        EventType.PHONE_NUMBER_CHANGED,
        at=T0 - timedelta(hours=1),
        phone_number="+14155550177",
    )

    method = fresh(method)
    assert method.phone_number == "+14155550177"
    assert method.phone_changed_at == T0 - timedelta(days=40)
    state = customer_twosv_state(customer=method.customer, now=T0)
    assert "number_recently_changed" not in [a.code for a in state.decision.advisories]


def test_a_repeated_number_is_still_the_last_writer_for_a_late_change():
    """t1 sets B, t3 repeats B, then a change at t2 (to C) arrives late: t3 wrote last, B stays."""
    method = enroll(phone_number="+14155550142")
    for event_id, hours_ago, number in (
        ("t1", 5, "+14155550177"),
        ("t3", 1, "+14155550177"),
        ("t2-late", 3, "+14155550199"),
    ):
        ingest(
            event_id,
            EventType.PHONE_NUMBER_CHANGED,
            at=T0 - timedelta(hours=hours_ago),
            phone_number=number,
        )

    method = fresh(method)
    assert method.phone_number == "+14155550177"
    assert method.phone_changed_at == T0 - timedelta(hours=5)


def test_a_duplicate_is_answered_with_the_stored_event_and_changes_nothing():
    method = enroll()
    first = ingest("r1", at=T0 - timedelta(minutes=1))
    before = method_projection(fresh(method))

    again = ingest("r1", at=T0 - timedelta(minutes=1))
    elsewhere = ingest("r1", EventType.CODE_VERIFIED, at=T0)

    assert (again.status, elsewhere.status) == ("duplicate", "duplicate")
    assert again.event.pk == elsewhere.event.pk == first.event.pk
    assert method_projection(fresh(method)) == before
    assert Event.objects.filter(event_id="r1").count() == 1


# ---------------------------------------------------------------------------------------------
# Outcomes, the lock's boundaries, expiry
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("small_threshold")
def test_each_event_keeps_what_the_fold_made_of_it(time_machine, staff):
    method = enroll()
    steps = [
        ("sent", EventType.CODE_SENT),
        ("r1", RESEND),
        ("r2", RESEND),
        ("rejected", EventType.CODE_REJECTED),
        ("r3", RESEND),
        ("r4", RESEND),
        ("r5", RESEND),
        ("verified", EventType.CODE_VERIFIED),
    ]
    for n, (event_id, event_type) in enumerate(steps):
        ingest(event_id, event_type, at=T0 - timedelta(minutes=30 - n))
    services.lock_lift(method=method, actor=staff, reason="Customer verified in person")
    ingest("removed", EventType.METHOD_REMOVED, at=T0 + timedelta(seconds=1))

    lifted = Event.objects.get(type=EventType.LOCK_LIFTED)
    assert outcomes_of("enrol-m-1", *(s[0] for s in steps), lifted.event_id, "removed") == [
        "recorded",
        "recorded",
        "counted",
        "counted",
        "recorded",
        "counted",
        "locked",
        "blocked",
        "reset",
        "lifted",
        "recorded",
    ]


@pytest.mark.usefixtures("small_threshold")
def test_a_lock_expires_exactly_at_locked_until(time_machine):
    method = enroll()
    start = T0 - timedelta(minutes=10)
    for i in range(4):
        ingest(f"r{i}", at=start + timedelta(seconds=i))
    locked_until = start + timedelta(seconds=3, hours=24)
    assert fresh(method).locked_until == locked_until

    time_machine.move_to(locked_until - timedelta(microseconds=1), tick=False)
    state = method_state(fresh(method), now=timezone.now())
    assert state.status == "locked"
    assert state.lock is not None
    assert state.lock.seconds_remaining == 1

    time_machine.move_to(locked_until, tick=False)
    state = method_state(fresh(method), now=timezone.now())
    assert state.status == "active"
    assert state.lock is None

    # A resend at the very instant the lock ends counts again instead of being blocked.
    ingest("r-at-end", at=locked_until)
    assert outcomes_of("r-at-end") == ["counted"]
    assert method_state(fresh(method), now=timezone.now()).resend_count == 1


# ---------------------------------------------------------------------------------------------
# lock_lift
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def locked_method(settings) -> Method:
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 3
    method = enroll()
    for i in range(4):
        ingest(f"r{i}", at=T0 - timedelta(minutes=10 - i))
    assert method_state(fresh(method), now=T0).status == "locked"
    return method


def test_lock_lift_writes_one_event_and_one_audit_entry_and_resets(locked_method, staff):
    ingest("r-blocked", at=T0 - timedelta(minutes=1))

    assert services.lock_lift(method=locked_method, actor=staff, reason="  Called from HQ  ")

    lifted = Event.objects.get(type=EventType.LOCK_LIFTED)
    assert lifted.method == locked_method
    assert lifted.actor == staff
    assert lifted.occurred_at == T0
    assert lifted.data == {"method_id": "m-1", "reason": "Called from HQ"}
    assert lifted.outcome == EventOutcome.LIFTED
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.result, audit.actor, audit.customer_ref) == (
        "lock_lift",
        "lifted",
        staff,
        "c-1",
    )
    assert audit.details["reason"] == "Called from HQ"
    state = method_state(fresh(locked_method), now=T0)
    assert (state.status, state.lock, state.resend_count) == ("active", None, 0)
    assert fresh(locked_method).lock_lifted_at == T0
    assert_exact(locked_method)


def test_lock_lift_on_an_unlocked_method_returns_false_and_writes_no_event(staff):
    method = enroll()
    ingest("r0", at=T0 - timedelta(minutes=1))

    assert services.lock_lift(method=method, actor=staff, reason="Just in case") is False

    assert not Event.objects.filter(type=EventType.LOCK_LIFTED).exists()
    assert list(AuditEntry.objects.values_list("action", "result")) == [("lock_lift", "not_locked")]
    assert method_state(fresh(method), now=T0).resend_count == 1


def test_lock_lift_after_expiry_or_twice_writes_a_single_event(locked_method, staff, time_machine):
    assert services.lock_lift(method=locked_method, actor=staff, reason="first")
    assert services.lock_lift(method=locked_method, actor=staff, reason="second") is False

    time_machine.move_to(T0 + timedelta(days=2), tick=False)
    assert services.lock_lift(method=locked_method, actor=staff, reason="third") is False

    assert Event.objects.filter(type=EventType.LOCK_LIFTED).count() == 1
    assert AuditEntry.objects.filter(result="lifted").count() == 1


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_lock_lift_requires_a_reason(locked_method, staff, reason):
    with pytest.raises(InvalidInput) as refused:
        services.lock_lift(method=locked_method, actor=staff, reason=reason)

    assert (refused.value.code, refused.value.field) == ("required", "reason")
    assert not Event.objects.filter(type=EventType.LOCK_LIFTED).exists()
    assert not AuditEntry.objects.exists()
    assert method_state(fresh(locked_method), now=T0).status == "locked"


def test_lock_lift_works_for_the_longest_method_id(settings, staff):
    settings.TWOSV_RESEND_LOCK_THRESHOLD = 0
    method_id = "m" * 128
    method = factories.MethodFactory(method_id=method_id, enrolled_at=ENROLLED_AT)
    ingest(
        "r0",
        at=T0 - timedelta(minutes=1),
        method_id=method_id,
        customer_id=method.customer.customer_id,
    )
    assert method_state(fresh(method), now=T0).status == "locked"

    assert services.lock_lift(method=method, actor=staff, reason="long id")

    lifted = Event.objects.get(type=EventType.LOCK_LIFTED)
    assert len(lifted.event_id) <= Event._meta.get_field("event_id").max_length
