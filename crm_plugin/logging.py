"""Logging helpers: a filter that masks phone numbers wherever they slip into a log record."""

import logging
import re
import traceback
from typing import Any

# Tokens that are made of digits and separators but are not phone numbers: kept as they are.
_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_DATETIME = (
    r"(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
)
_IPV4 = r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])"
# Anything that looks like an E.164 number (also URL-encoded, %2B...) or a long run of digits
# with phone punctuation. The lookarounds keep hex ids and other alphanumeric tokens intact.
_PHONE = r"(?<![\w+%(])(?:(?:\+|%2[Bb])\s?)?\(?\d[\d\s().-]{6,}\d(?!\w)"
_PATTERN = re.compile(
    rf"(?P<keep>(?<![\w-])(?:{_UUID}|{_DATETIME})(?![\w-])|{_IPV4})|(?P<phone>{_PHONE})"
)
_MIN_DIGITS = 8


def mask_phone_numbers(text: str) -> str:
    """Replace every phone-like digit run by a mask that keeps only its last two digits."""

    def _mask(match: re.Match[str]) -> str:
        if match.group("keep") is not None:
            return match.group(0)
        found = match.group("phone")
        digits = re.sub(r"\D", "", found.replace("%2B", "+").replace("%2b", "+"))
        if len(digits) < _MIN_DIGITS:
            return found
        return "+•••" + digits[-2:]

    return _PATTERN.sub(_mask, text)


def _masked(value: Any) -> Any:
    """Return `value` with phone numbers masked in it and in any strings it contains."""
    if isinstance(value, str):
        return mask_phone_numbers(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_masked(item) for item in value)
    return value


class MaskPhoneNumbersFilter(logging.Filter):
    """Mask phone numbers in a record's message, arguments, extras and traceback.

    A safety net, not a licence: code must not log numbers in the first place. The message is
    rendered here (arguments of any type, e.g. an httpx URL, are formatted first) so that no
    argument escapes the mask, and a traceback is rendered to masked text for the same reason.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            record.msg = _masked(record.msg)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # a broken format string: keep what was given
                message = f"{record.msg} {record.args!r}"
            record.msg = mask_phone_numbers(message)
            record.args = None
        if record.exc_info:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = mask_phone_numbers(text.rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask_phone_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phone_numbers(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _masked(value))
        return True


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
