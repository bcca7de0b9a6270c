"""Logging helpers: a filter that masks phone numbers wherever they slip into a log record."""

import logging
import traceback

from twosv.masking import mask_phone_numbers, mask_phone_numbers_in


class MaskPhoneNumbersFilter(logging.Filter):
    """Mask phone numbers in a record's message, arguments, extras and traceback.

    A safety net, not a licence: code must not log numbers in the first place. The message is
    rendered here (arguments of any type, e.g. an httpx URL, are formatted first) so that no
    argument escapes the mask, and a traceback is rendered to masked text for the same reason.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            record.msg = mask_phone_numbers_in(record.msg)
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
                setattr(record, key, mask_phone_numbers_in(value))
        return True


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
