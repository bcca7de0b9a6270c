"""Phone masking: what of a phone number a person or a log line may see.

Pure: no Django, no database; phonenumbers only. Every masker of the project lives here:

- `mask_phone`: one E.164 number as agents see it (country code and the last two digits);
- `masked_phone` and `masked_event_data`: the same, as the admin displays it;
- `mask_email`: an email address as the admin lists it (first letter and the domain);
- `redact_phone_numbers`: phone-like digit runs in free text an agent typed (admin, CSV);
- `mask_phone_numbers` and `mask_phone_numbers_in`: the safety net of the logging filter.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import phonenumbers

# ---------------------------------------------------------------------------------------------
# One number on file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedPhone:
    masked: str
    country_code: int
    region: str | None


@functools.lru_cache(maxsize=4096)
def mask_phone(e164: str) -> MaskedPhone | None:
    """Return the number as agents may see it: country code and the last two digits only."""
    if not e164:
        return None
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code is None or parsed.national_number is None:
        return None
    national = str(parsed.national_number)
    hidden = "•" * max(len(national) - 2, 0)
    return MaskedPhone(
        masked=f"+{parsed.country_code} {hidden}{national[-2:]}",
        country_code=parsed.country_code,
        region=phonenumbers.region_code_for_number(parsed),
    )


def masked_phone(number: str) -> str:
    """Return the number as admins may see it; never the number itself."""
    if not number:
        return "—"
    masked = mask_phone(number)
    return masked.masked if masked is not None else "(unreadable number)"


def mask_email(address: str) -> str:
    """Return an email address as admins may list it: ``j•••@example.com``.

    The first character of the local part and the domain stay (enough to tell two apart and
    see the provider); the rest of the local part, whatever its length, is three bullets.
    """
    if not address:
        return "—"
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return "•••"
    return f"{local[0]}•••@{domain}"


def masked_recipient(to: str) -> str:
    """Return where a message went, masked: an email address or a phone number."""
    return mask_email(to) if "@" in to else masked_phone(to)


def masked_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """Return an event's data with its ``phone_number`` (if any) masked as admins see it."""
    masked = dict(data)
    if isinstance(masked.get("phone_number"), str):
        masked["phone_number"] = masked_phone(masked["phone_number"])
    return masked


# ---------------------------------------------------------------------------------------------
# Numbers inside free text
# ---------------------------------------------------------------------------------------------

# What an agent types: a run of 7+ digits, possibly broken up by spaces, dots, dashes or
# brackets. Text agents write is redacted eagerly (dates and ids in it are rare and harmless).
_PHONE_IN_TEXT = re.compile(r"\+?\d(?:[\s().-]*\d){6,}")

# What a log line carries: anything that looks like an E.164 number (also URL-encoded, %2B...)
# or a long run of digits with phone punctuation. The lookarounds keep hex ids and other
# alphanumeric tokens intact, and uuids, dates and IPv4 addresses are kept as they are.
_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_DATETIME = (
    r"(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
)
_IPV4 = r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])"
_PHONE = r"(?<![\w+%(])(?:(?:\+|%2[Bb])\s?)?\(?\d[\d\s().-]{6,}\d(?!\w)"
_PHONE_IN_LOG = re.compile(
    rf"(?P<keep>(?<![\w-])(?:{_UUID}|{_DATETIME})(?![\w-])|{_IPV4})|(?P<phone>{_PHONE})"
)
_LOG_MIN_DIGITS = 8


def redact_phone_numbers(text: str) -> str:
    """Replace every phone-like run of digits in free text by its masked form."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "•" * (len(digits) - 2) + digits[-2:]

    return _PHONE_IN_TEXT.sub(_mask, text)


def mask_phone_numbers(text: str) -> str:
    """Replace every phone-like digit run by a mask that keeps only its last two digits."""

    def _mask(match: re.Match[str]) -> str:
        if match.group("keep") is not None:
            return match.group(0)
        found = match.group("phone")
        digits = re.sub(r"\D", "", found.replace("%2B", "+").replace("%2b", "+"))
        if len(digits) < _LOG_MIN_DIGITS:
            return found
        return "+•••" + digits[-2:]

    return _PHONE_IN_LOG.sub(_mask, text)


def mask_phone_numbers_in(value: Any) -> Any:
    """Return `value` with phone numbers masked in it and in any strings it contains."""
    if isinstance(value, str):
        return mask_phone_numbers(value)
    if isinstance(value, dict):
        return {key: mask_phone_numbers_in(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(mask_phone_numbers_in(item) for item in value)
    return value
