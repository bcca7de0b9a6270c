"""The HTTP ATS client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pickle
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from zoneinfo import ZoneInfo

import pytest

from tests.ats_server import AtsTestServer, ScriptedResponse
from tests.infra import TrickleHttpServer
from twosv.ats import (
    AtsError,
    AtsMessage,
    AtsPermanentError,
    AtsTransientError,
    AttemptFacts,
    HttpAtsClient,
    backoff_seconds,
    classify_verdict,
)

# Registers the `ats_server` and `ats_refused_url` fixtures.
pytest_plugins = ["tests.ats_server"]

PHONE = "+14155550100"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(hours=24)


def client_for(
    server: AtsTestServer,
    *,
    read_timeout: float = 5.0,
    max_pages: int = 50,
    deadline: float = 20.0,
) -> HttpAtsClient:
    return HttpAtsClient(
        base_url=server.url,
        token=server.token,
        read_timeout=read_timeout,
        max_pages=max_pages,
        deadline=deadline,
    )


def verdict_of(messages: list[AtsMessage], *, regional_advisory: bool = False) -> str:
    facts = [AttemptFacts(m.created_at, m.status, m.error_code) for m in messages]
    return classify_verdict(facts, regional_advisory=regional_advisory)


def page(messages: list[object], next_cursor: object = None) -> dict[str, object]:
    return {"messages": messages, "next_cursor": next_cursor}


def ok_page(messages: list[object], next_cursor: str | None = None) -> ScriptedResponse:
    return ScriptedResponse(200, page(messages, next_cursor))


def test_delivered_message_is_parsed(ats_server: AtsTestServer) -> None:
    sent = ats_server.add_message(
        to=PHONE, status="delivered", created_at=NOW - timedelta(minutes=5)
    )

    messages = client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert messages == [
        AtsMessage(
            id=sent["id"],
            to=PHONE,
            sender="+14803605516",
            provider="twilio",
            status="delivered",
            error_code=None,
            created_at=NOW - timedelta(minutes=5),
            updated_at=NOW - timedelta(minutes=5) + timedelta(seconds=5),
        )
    ]
    assert messages[0].created_at.tzinfo is not None
    assert verdict_of(messages) == "delivered"


@pytest.mark.parametrize(
    ("error_code", "verdict"),
    [
        (21610, "recipient_blocked"),
        (30007, "carrier_filtered"),
        (30004, "carrier_filtered"),
        (30003, "unreachable"),
        (21614, "unreachable"),
        (30008, "provider_error"),
        (None, "provider_error"),
    ],
)
def test_failure_families_reach_their_verdict(
    ats_server: AtsTestServer, error_code: int | None, verdict: str
) -> None:
    ats_server.add_message(to=PHONE, status="delivered", created_at=NOW - timedelta(hours=2))
    ats_server.add_message(to=PHONE, status="undelivered", error_code=error_code, created_at=NOW)

    messages = client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert {m.error_code for m in messages} == {None, error_code}
    assert verdict_of(messages) == verdict
    assert verdict_of(messages, regional_advisory=True) == "regional_provider_issue"


def test_only_the_recipient_and_period_are_returned(ats_server: AtsTestServer) -> None:
    ats_server.add_message(to=PHONE, created_at=SINCE - timedelta(seconds=1))
    ats_server.add_message(to="+14155550199", created_at=NOW)
    kept = ats_server.add_message(to=PHONE, created_at=SINCE)

    messages = client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert [m.id for m in messages] == [kept["id"]]


def test_no_messages_means_not_sent(ats_server: AtsTestServer) -> None:
    messages = client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert messages == []
    assert verdict_of(messages) == "not_sent"


def test_follows_cursors_across_three_pages(ats_server: AtsTestServer) -> None:
    ats_server.page_size = 2
    added = [
        ats_server.add_message(to=PHONE, created_at=SINCE + timedelta(hours=i)) for i in range(5)
    ]

    messages = client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert [m.id for m in messages] == [m["id"] for m in added]
    cursors = [r.query.get("cursor") for r in ats_server.requests]
    assert cursors == [None, "c2", "c4"]


def test_sends_recipient_period_and_token(ats_server: AtsTestServer) -> None:
    # A non-UTC `since` with microseconds: the ATS gets whole UTC seconds with a Z.
    since = datetime(2026, 3, 1, 14, 30, 15, 999_000, tzinfo=UTC).astimezone(
        ZoneInfo("Europe/Helsinki")
    )

    client_for(ats_server).messages(to=PHONE, since=since)

    (request,) = ats_server.requests
    assert request.path == "/v1/messages"
    assert request.query == {"to": PHONE, "since": "2026-03-01T14:30:15Z"}
    assert request.headers["authorization"] == f"Bearer {ats_server.token}"


def test_server_error_is_transient(ats_server: AtsTestServer) -> None:
    ats_server.script([ScriptedResponse(500, {"error": "boom"})])

    with pytest.raises(AtsTransientError, match="500") as caught:
        client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert caught.value.retry_after is None
    assert len(ats_server.requests) == 1, "the client must not retry by itself"


def test_rate_limit_carries_retry_after_seconds(ats_server: AtsTestServer) -> None:
    ats_server.script([ScriptedResponse(429, {}, headers={"Retry-After": "7"})])

    with pytest.raises(AtsTransientError) as caught:
        client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert caught.value.retry_after == 7.0


def test_rate_limit_understands_an_http_date(ats_server: AtsTestServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    ats_server.script(
        [ScriptedResponse(429, {}, headers={"Retry-After": format_datetime(when, usegmt=True)})]
    )

    with pytest.raises(AtsTransientError) as caught:
        client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


def test_failure_on_a_later_page_fails_the_query(ats_server: AtsTestServer) -> None:
    ats_server.script([ok_page([], next_cursor="next"), ScriptedResponse(503, {"error": "later"})])

    with pytest.raises(AtsTransientError, match="503"):
        client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert [r.query.get("cursor") for r in ats_server.requests] == [None, "next"]


def test_slow_answer_is_a_transient_read_timeout(ats_server: AtsTestServer) -> None:
    ats_server.script([ScriptedResponse(200, page([]), delay=2)])

    with pytest.raises(AtsTransientError, match="read timeout"):
        client_for(ats_server, read_timeout=0.2).messages(to=PHONE, since=SINCE)


# --- The overall deadline of a try ---------------------------------------------------------------


def test_a_trickling_answer_ends_at_the_deadline_of_the_try() -> None:
    # One byte a second never trips a 5 s read timeout: only the overall deadline stops it.
    with TrickleHttpServer(interval=1.0) as server:
        client = HttpAtsClient(base_url=server.url, token="t", read_timeout=5, deadline=1.5)
        started = time.monotonic()
        with pytest.raises(AtsTransientError) as caught:
            client.messages(to=PHONE, since=SINCE)
        elapsed = time.monotonic() - started
        # The server sees us hang up at its next byte.
        assert server.wait_for_disconnects(1, timeout=5)

    assert str(caught.value) == "ATS did not finish answering within the 1.5 s deadline"
    assert 1.5 <= elapsed < 2.7, elapsed
    assert server.completed == 0


def test_the_deadline_covers_every_page_of_a_try(ats_server: AtsTestServer) -> None:
    # Each page is quick enough on its own; together they are not.
    ats_server.script(
        [ScriptedResponse(200, page([], next_cursor=f"c{i}"), delay=0.4) for i in range(10)]
    )
    started = time.monotonic()

    with pytest.raises(AtsTransientError, match="within the 1 s deadline"):
        client_for(ats_server, read_timeout=5, deadline=1.0).messages(to=PHONE, since=SINCE)

    assert time.monotonic() - started < 1.5
    assert 2 <= len(ats_server.requests) <= 3


def test_a_slow_first_byte_is_cut_at_the_deadline_not_the_read_timeout(
    ats_server: AtsTestServer,
) -> None:
    ats_server.script([ScriptedResponse(200, page([]), delay=3)])
    started = time.monotonic()

    with pytest.raises(AtsTransientError, match=r"within the 0\.5 s deadline"):
        client_for(ats_server, read_timeout=5, deadline=0.5).messages(to=PHONE, since=SINCE)

    assert time.monotonic() - started < 1.0


def test_an_answer_within_the_deadline_is_read_in_full(ats_server: AtsTestServer) -> None:
    ats_server.page_size = 1
    for hours in range(3):
        ats_server.add_message(to=PHONE, created_at=SINCE + timedelta(hours=hours))

    messages = client_for(ats_server, deadline=5).messages(to=PHONE, since=SINCE)

    assert len(messages) == 3


@pytest.mark.parametrize("deadline", [0, -1])
def test_a_try_needs_a_positive_deadline(deadline: float) -> None:
    with pytest.raises(ValueError, match="deadline"):
        HttpAtsClient(base_url="https://ats.internal", token="t", deadline=deadline)


def test_refused_connection_is_transient(ats_refused_url: str) -> None:
    client = HttpAtsClient(base_url=ats_refused_url, token="t", connect_timeout=0.5)

    with pytest.raises(AtsTransientError, match="could not connect"):
        client.messages(to=PHONE, since=SINCE)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_are_permanent(ats_server: AtsTestServer, status: int) -> None:
    ats_server.script([ScriptedResponse(status, {"error": "no"})])

    with pytest.raises(AtsPermanentError, match=str(status)):
        client_for(ats_server).messages(to=PHONE, since=SINCE)


def test_wrong_token_is_permanent_and_not_echoed(ats_server: AtsTestServer) -> None:
    client = HttpAtsClient(base_url=ats_server.url, token="wrong-secret")

    with pytest.raises(AtsPermanentError, match="ATS_TOKEN") as caught:
        client.messages(to=PHONE, since=SINCE)

    assert "wrong-secret" not in str(caught.value)
    assert "wrong-secret" not in repr(client)


def test_malformed_json_is_permanent(ats_server: AtsTestServer) -> None:
    ats_server.script([ScriptedResponse(200, raw=b'{"messages": [')])

    with pytest.raises(AtsPermanentError, match="not JSON"):
        client_for(ats_server).messages(to=PHONE, since=SINCE)


GOOD = {
    "id": "SM1",
    "to": PHONE,
    "from": "+14803605516",
    "provider": "twilio",
    "status": "failed",
    "error_code": 30007,
    "created_at": "2026-03-02T11:00:00Z",
    "updated_at": "2026-03-02T11:00:05+00:00",
}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "not a JSON object"),
        ({"next_cursor": None}, "no 'messages'"),
        (page([GOOD], next_cursor=3), "next_cursor"),
        (page(["SM1"]), "message 1 on page 1 is not a JSON object"),
        (page([{**GOOD, "status": "bounced"}]), "unknown status 'bounced'"),
        (
            page([{**GOOD, "created_at": "yesterday"}]),
            "'created_at' is not an ISO 8601",
        ),
        (page([{**GOOD, "updated_at": "2026-03-02T11:00:05"}]), "no time zone"),
        (page([{k: v for k, v in GOOD.items() if k != "from"}]), "no 'from'"),
        (page([{**GOOD, "error_code": "30007"}]), "'error_code' is not a number"),
    ],
)
def test_malformed_body_is_permanent_with_a_reason(
    ats_server: AtsTestServer, body: object, reason: str
) -> None:
    ats_server.script([ScriptedResponse(200, body)])

    with pytest.raises(AtsPermanentError) as caught:
        client_for(ats_server).messages(to=PHONE, since=SINCE)

    assert reason in str(caught.value)
    assert PHONE not in str(caught.value), "reasons end up in logs: no phone numbers"


def test_endless_paging_stops_at_max_pages(ats_server: AtsTestServer) -> None:
    ats_server.script([ok_page([], next_cursor=f"c{i}") for i in range(3)])

    with pytest.raises(AtsPermanentError, match="3 pages"):
        client_for(ats_server, max_pages=3).messages(to=PHONE, since=SINCE)

    assert len(ats_server.requests) == 3


def test_repeated_cursor_is_permanent(ats_server: AtsTestServer) -> None:
    ats_server.script([ok_page([], next_cursor="same"), ok_page([], next_cursor="same")])

    with pytest.raises(AtsPermanentError, match="same page cursor"):
        client_for(ats_server).messages(to=PHONE, since=SINCE)


def test_transient_error_survives_pickling() -> None:
    # Celery ships task exceptions through its result backend.
    err = pickle.loads(pickle.dumps(AtsTransientError("ATS is slow", retry_after=3.0)))

    assert isinstance(err, AtsTransientError)
    assert isinstance(err, AtsError)
    assert (str(err), err.retry_after) == ("ATS is slow", 3.0)


def test_backoff_never_exceeds_the_cap() -> None:
    rng = random.Random(1)
    delays = [
        backoff_seconds(attempt, base=2, cap=60, rng=rng)
        for attempt in range(200)
        for _ in range(20)
    ]

    assert all(0 <= d <= 60 for d in delays)
    assert backoff_seconds(10_000, rng=rng) <= 60


def test_backoff_waits_at_least_retry_after_but_caps_it() -> None:
    rng = random.Random(2)

    assert all(
        7 <= backoff_seconds(a, retry_after=7, rng=rng) <= 60 for a in range(10) for _ in range(50)
    )
    assert backoff_seconds(0, retry_after=3600, cap=60, rng=rng) == 60


def test_backoff_grows_with_the_attempt_on_average() -> None:
    rng = random.Random(3)

    means = [
        statistics.mean(backoff_seconds(a, base=1, cap=1000, rng=rng) for _ in range(500))
        for a in range(6)
    ]

    assert means == sorted(means)
    assert means[5] > 8 * means[0]
