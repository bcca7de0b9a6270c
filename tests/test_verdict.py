"""The delivery verdict, row by row of docs/SPEC.md §3 "Delivery lookup"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from twosv.ats import VERDICTS, AttemptFacts, classify_verdict

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: int, status: str, error_code: int | None = None) -> AttemptFacts:
    return AttemptFacts(T0 + timedelta(minutes=minutes), status, error_code)


FAILURE_CODES = [
    (21610, "recipient_blocked"),
    (30007, "carrier_filtered"),
    (30004, "carrier_filtered"),
    (30003, "unreachable"),
    (30005, "unreachable"),
    (30006, "unreachable"),
    (21211, "unreachable"),
    (21614, "unreachable"),
    (30008, "provider_error"),
    (30001, "provider_error"),
    (None, "provider_error"),
]


@pytest.mark.parametrize(
    ("attempts", "verdict"),
    [
        pytest.param([], "not_sent", id="no attempts"),
        pytest.param([at(0, "delivered")], "delivered", id="delivered"),
        *(
            pytest.param([at(0, status, code)], verdict, id=f"{status} {code}")
            for code, verdict in FAILURE_CODES
            for status in ("failed", "undelivered")
        ),
        pytest.param([at(0, "queued")], "provider_error", id="only queued"),
        pytest.param([at(0, "sent"), at(1, "queued")], "provider_error", id="no receipt at all"),
    ],
)
def test_verdict_table(attempts: list[AttemptFacts], verdict: str) -> None:
    assert classify_verdict(attempts, regional_advisory=False) == verdict


def test_every_verdict_is_reachable() -> None:
    reached = {classify_verdict([], regional_advisory=False)}
    reached |= {
        classify_verdict([at(0, "failed", code)], regional_advisory=False)
        for code, _ in FAILURE_CODES
    }
    reached.add(classify_verdict([at(0, "delivered")], regional_advisory=False))
    reached.add(classify_verdict([at(0, "failed", 30007)], regional_advisory=True))

    assert reached == set(VERDICTS)


def test_latest_by_created_at_not_by_list_order() -> None:
    older_delivered = at(0, "delivered")
    newer_blocked = at(30, "failed", 21610)

    for attempts in (
        [older_delivered, newer_blocked],
        [newer_blocked, older_delivered],
    ):
        assert classify_verdict(attempts, regional_advisory=False) == "recipient_blocked"

    for attempts in (
        [at(0, "failed", 30007), at(5, "delivered")],
        [at(5, "delivered"), at(0, "failed", 30007)],
    ):
        assert classify_verdict(attempts, regional_advisory=False) == "delivered"


def test_later_attempts_without_a_receipt_are_ignored() -> None:
    attempts = [at(0, "undelivered", 30003), at(10, "sent"), at(20, "queued")]

    assert classify_verdict(attempts, regional_advisory=False) == "unreachable"


def test_delivery_wins_a_tie_on_created_at() -> None:
    for attempts in (
        [at(0, "failed", 30007), at(0, "delivered")],
        [at(0, "delivered"), at(0, "failed", 30007)],
    ):
        assert classify_verdict(attempts, regional_advisory=False) == "delivered"


@pytest.mark.parametrize(("error_code", "_without"), FAILURE_CODES)
@pytest.mark.parametrize("status", ["failed", "undelivered"])
def test_regional_advisory_wins_over_every_failure(
    error_code: int | None, _without: str, status: str
) -> None:
    attempts = [at(0, "delivered"), at(1, status, error_code)]

    assert classify_verdict(attempts, regional_advisory=True) == "regional_provider_issue"


def test_regional_advisory_does_not_override_delivery() -> None:
    attempts = [at(0, "failed", 30008), at(1, "delivered")]

    assert classify_verdict(attempts, regional_advisory=True) == "delivered"


@pytest.mark.parametrize(
    ("attempts", "verdict"),
    [([], "not_sent"), ([at(0, "sent")], "provider_error")],
)
def test_regional_advisory_needs_a_failure(attempts: list[AttemptFacts], verdict: str) -> None:
    assert classify_verdict(attempts, regional_advisory=True) == verdict
