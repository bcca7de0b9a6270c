"""Logging helpers: a filter that masks phone numbers wherever they slip into a log record."""

import logging
import re

# Anything that looks like an E.164 number or a long run of digits with phone punctuation.
# Lookarounds keep hex ids and other alphanumeric tokens (request ids, UUIDs) intact.
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().-]{6,}\d(?![\w])")


def mask_phone_numbers(text: str) -> str:
    """Replace every phone-like digit run by a mask that keeps only its last two digits."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 8:
            return match.group(0)
        return "+•••" + digits[-2:]

    return _PHONE.sub(_mask, text)


class MaskPhoneNumbersFilter(logging.Filter):
    """Mask phone numbers in the message and its string arguments: a safety net, not a licence."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_phone_numbers(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_phone_numbers(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, mask_phone_numbers(value))
        return True


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
