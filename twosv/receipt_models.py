"""Delivery receipts from Twilio: the status callbacks, and each message's order-safe state.

Registered with the app by the import at the bottom of twosv/models.py; the foreign keys name
their models by string so this module imports nothing of twosv.models (no import cycle).

No phone number is stored here: a receipt is kept only for a number on a method, and the method
is what it points at (full numbers live only in methods and events, docs/SPEC.md §8).
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# A status's place in a message's life: a receipt only ever moves a message forward, so a late
# `sent` never overwrites `delivered`, and a final status (3) never changes.
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "partially_delivered": 2,
    "delivered": 3,
    "read": 3,
    "undelivered": 3,
    "failed": 3,
    "canceled": 3,
}
FINAL_RANK = 3


class ReceiptVia(models.TextChoices):
    CALLBACK = "callback", _("Status callback")
    API = "api", _("Messages API (reconciliation)")


class TwilioMessage(models.Model):
    """A message Twilio sent to a method's number, at the furthest status it is known to have."""

    message_sid = models.CharField(max_length=64, unique=True)
    method = models.ForeignKey(
        "twosv.Method", on_delete=models.CASCADE, related_name="twilio_messages"
    )
    status = models.CharField(max_length=24)
    rank = models.PositiveSmallIntegerField()
    error_code = models.IntegerField(null=True, blank=True)
    sender = models.CharField(max_length=64, blank=True)
    # When it was sent as best known: the first receipt's arrival, or Twilio's date_created
    # once the Messages API was asked.
    sent_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    # When the Messages API last confirmed its status (the reconciliation task).
    reconciled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-sent_at"]
        verbose_name = _("Twilio message")
        indexes = [
            models.Index(fields=["method", "sent_at"], name="twilio_msg_method_idx"),
            models.Index(
                fields=["sent_at"],
                condition=Q(rank__lt=FINAL_RANK),
                name="twilio_msg_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_sid} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.rank >= FINAL_RANK


class DeliveryReceipt(models.Model):
    """One status of one message, as a status callback (or the reconciliation) reported it.

    Idempotent per (message, status): Twilio retries and duplicates are stored once.
    """

    message = models.ForeignKey(TwilioMessage, on_delete=models.CASCADE, related_name="receipts")
    method = models.ForeignKey(
        "twosv.Method", on_delete=models.CASCADE, related_name="delivery_receipts"
    )
    status = models.CharField(max_length=24)
    error_code = models.IntegerField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    via = models.CharField(max_length=16, choices=ReceiptVia.choices, default=ReceiptVia.CALLBACK)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = _("delivery receipt")
        constraints = [
            models.UniqueConstraint(
                fields=["message", "status"], name="receipt_unique_per_message_status"
            ),
        ]
        indexes = [
            models.Index(fields=["method", "received_at"], name="receipt_method_idx"),
            models.Index(fields=["received_at"], name="receipt_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.status} {self.received_at:%Y-%m-%d %H:%M:%S}"
