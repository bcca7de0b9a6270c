"""Concurrent status callbacks of one message, on real PostgreSQL: one row each, never backwards.

Twilio retries callbacks and sends a message's statuses close together; separate web workers
then record them at once. Every test commits for real, each thread on its own connection.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import factories
from tests.test_concurrency import in_threads
from tests.twilio_server import message_sid
from twosv.receipt_models import DeliveryReceipt, TwilioMessage
from twosv.services.receipts import ReceiptResult, receipt_record

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

PHONE = "+14155550123"


def _record(status: str, code: int | None = None) -> Any:
    return lambda: receipt_record(
        message_sid=message_sid(1), status=status, error_code=code, to=PHONE, sender="+14803605516"
    )


def test_the_same_callback_sent_twenty_times_at_once_is_stored_once() -> None:
    factories.MethodFactory(phone_number=PHONE)

    results = in_threads([_record("delivered")] * 20, threads=20)

    assert sorted(map(str, results)) == ["duplicate"] * 19 + ["stored"]
    assert DeliveryReceipt.objects.count() == 1
    assert TwilioMessage.objects.count() == 1


def test_every_status_at_once_ends_at_the_final_one() -> None:
    factories.MethodFactory(phone_number=PHONE)
    statuses = ["queued", "sending", "sent", "undelivered", "sent", "queued"] * 3

    results = in_threads(
        [_record(s, 30003 if s == "undelivered" else None) for s in statuses], threads=12
    )

    assert not [r for r in results if not isinstance(r, ReceiptResult)], results
    message = TwilioMessage.objects.get()
    assert (message.status, message.error_code) == ("undelivered", 30003)
    assert DeliveryReceipt.objects.count() == 4
