"""Twilio's delivery error codes in words, for agents reading a method's timeline.

Pure: stdlib only. The wording follows Twilio's error pages (twilio.com/docs/api/errors/<code>)
as summarised in the project's reference notes; a code not listed is named, with where to read
about it, rather than guessed at. The verdict a code leads to lives in twosv/ats.py
(`ERROR_CODE_VERDICTS`): this table only explains.
"""

from __future__ import annotations

from collections.abc import Mapping

ERROR_CODE_MEANINGS: Mapping[int, str] = {
    21211: "The 'To' number is not a valid phone number.",
    21408: "Sending to this region is not enabled on the account (geo permissions).",
    21610: "The recipient replied STOP: they unsubscribed from (blocked) this sender.",
    21614: "The 'To' number is not a mobile number (a landline, for example).",
    21635: "The 'To' number is a landline and cannot receive text messages.",
    30001: "Twilio's queue overflowed: too many messages were queued at once.",
    30002: "The sending account is suspended.",
    30003: (
        "Unreachable handset: the phone is off, has no signal or is roaming, or the line "
        "cannot receive text messages."
    ),
    30004: "Message blocked by the recipient or their carrier.",
    30005: "Unknown handset: the number is unknown, inactive or out of service.",
    30006: "Landline or unreachable carrier: the line cannot receive text messages.",
    30007: "Filtered by the carrier or Twilio as spam or against policy.",
    30008: "Unknown error: the carrier gave no reason.",
    30034: "Sent from a US number that is not registered for A2P 10DLC messaging.",
}


def error_code_meaning(code: int | None) -> str | None:
    """Return what Twilio error `code` means in words; None for no code."""
    if code is None:
        return None
    known = ERROR_CODE_MEANINGS.get(code)
    if known is not None:
        return known
    return f"Twilio error {code}; see twilio.com/docs/api/errors/{code}."
