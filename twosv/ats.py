"""Ask the ATS (the SMS delivery-tracking service) what happened to a method's codes.

This module is stdlib plus httpx only, so it imports without Django settings: the
Celery task builds an `HttpAtsClient` from settings and passes the answers on as
plain values, and the verdict rules can be tested as a table.
"""

from __future__ import annotations

import email.utils
import functools
import json
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from twosv.vocabulary import FINAL_ATS_STATUSES, AtsStatus, Verdict

VERDICTS = tuple(Verdict)

STATUSES = frozenset(AtsStatus)
FINAL_STATUSES = FINAL_ATS_STATUSES

# Provider (Twilio) error codes of a failed or undelivered message, by verdict.
# A code not listed here is a `provider_error`.
ERROR_CODE_VERDICTS: Mapping[int, Verdict] = {
    21610: Verdict.RECIPIENT_BLOCKED,  # the recipient replied STOP / blocked the sender
    30004: Verdict.CARRIER_FILTERED,  # message blocked
    30007: Verdict.CARRIER_FILTERED,  # carrier filtering
    30003: Verdict.UNREACHABLE,  # handset switched off or out of coverage
    30005: Verdict.UNREACHABLE,  # unknown destination handset
    30006: Verdict.UNREACHABLE,  # landline or unreachable carrier
    21211: Verdict.UNREACHABLE,  # invalid 'To' number
    21614: Verdict.UNREACHABLE,  # 'To' number is not a mobile number
}


@dataclass(frozen=True)
class AtsMessage:
    """One message the ATS tracked, as the ATS reported it."""

    id: str
    to: str
    sender: str
    provider: str
    status: str
    error_code: int | None
    created_at: datetime
    updated_at: datetime


class AtsError(Exception):
    """Report a failed ATS query; `str(err)` is meant for a support agent or admin."""


class AtsTransientError(AtsError):
    """Report an ATS failure that may pass; retry later, not before `retry_after`."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions into results; the keyword-only argument would
        # otherwise be lost on the way.
        return (_rebuild_transient, (str(self), self.retry_after))


def _rebuild_transient(message: str, retry_after: float | None) -> AtsTransientError:
    return AtsTransientError(message, retry_after=retry_after)


class AtsPermanentError(AtsError):
    """Report an ATS failure that asking again will not fix."""


class AtsClient(Protocol):
    """Anything that can list the messages the ATS tracked for one recipient."""

    def messages(self, *, to: str, since: datetime) -> list[AtsMessage]:
        """Return the messages sent to `to` created at or after `since`."""
        ...


class HttpAtsClient:
    """Query the ATS HTTP API (`GET /v1/messages`), one attempt per page.

    Retrying is the caller's business (the Celery task backs off between tries), so
    a slow or failing ATS costs one bounded request, never a hidden retry loop.

    A try (every page of one `messages()` call) has an overall `deadline`: per-phase
    timeouts alone let a server that trickles a byte at a time hold a try for ever. Each
    response is streamed and the clock checked between chunks; every phase's timeout is
    capped at the time left, so a try ends by `deadline` plus at most one `read_timeout`
    (a read that began just before the deadline).
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        deadline: float = 20.0,
        max_pages: int = 50,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("ATS base URL must start with http:// or https://")
        if not token:
            raise ValueError("ATS token must not be empty")
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        if not deadline > 0:
            raise ValueError("the deadline of a try must be positive")
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._token = token
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._max_pages = max_pages
        self._transport = transport

    # What a lookup answered from says (DeliveryLookup.source).
    source = "http"

    def __repr__(self) -> str:
        # Keep the token out of logs and tracebacks.
        return f"HttpAtsClient(url={self._url!r})"

    @property
    def deadline(self) -> float:
        """Return the overall deadline of one try, every page included, in seconds."""
        return self._deadline

    def messages(self, *, to: str, since: datetime) -> list[AtsMessage]:
        """Return the messages sent to `to` since `since`, following every cursor.

        Raise `AtsTransientError` for timeouts (the try's deadline included), connection
        errors, 5xx and 429, and `AtsPermanentError` for any other refusal or for an answer
        that breaks the contract, including more than `max_pages` pages.
        """
        if not to:
            raise ValueError("recipient must not be empty")
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("since must be timezone-aware")
        ends_at = time.monotonic() + self._deadline
        # Whole seconds, rounded down: the period can only grow, never lose a message.
        since_param = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": "twosv-panel",
        }
        found: dict[str, AtsMessage] = {}
        cursor: str | None = None
        seen_cursors: set[str] = set()
        with httpx.Client(
            transport=self._transport,
            headers=headers,
            verify=_ssl_context(),
        ) as http:
            for page in range(1, self._max_pages + 1):
                params = {"to": to, "since": since_param}
                if cursor is not None:
                    params["cursor"] = cursor
                body = self._get_page(http, params, page, ends_at)
                for position, raw in enumerate(body["messages"], start=1):
                    message = _parse_message(raw, page=page, position=position)
                    # A message can move across a page boundary while we page;
                    # keep its first sighting rather than count it twice.
                    found.setdefault(message.id, message)
                cursor = body["next_cursor"]
                if cursor is None:
                    return list(found.values())
                if cursor in seen_cursors:
                    raise AtsPermanentError(
                        f"ATS returned the same page cursor twice (page {page}); "
                        "its paging is broken"
                    )
                seen_cursors.add(cursor)
        raise AtsPermanentError(
            f"ATS still had more results after {self._max_pages} pages; "
            "giving up rather than paging forever"
        )

    def _past_deadline(self) -> AtsTransientError:
        return AtsTransientError(
            f"ATS did not finish answering within the {self._deadline:g} s deadline"
        )

    def _timeout(self, ends_at: float) -> httpx.Timeout:
        """Return the per-phase timeouts, each capped at the time left before `ends_at`."""
        left = ends_at - time.monotonic()
        if left <= 0:
            raise self._past_deadline()
        connect = min(self._connect_timeout, left)
        read = min(self._read_timeout, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _get_page(
        self, http: httpx.Client, params: dict[str, str], page: int, ends_at: float
    ) -> dict[str, Any]:
        """Fetch one page before `ends_at` (time.monotonic) and return its checked body."""
        try:
            with http.stream(
                "GET", self._url, params=params, timeout=self._timeout(ends_at)
            ) as response:
                self._check_status(response)
                chunks: list[bytes] = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() >= ends_at:
                        raise self._past_deadline()
                content = b"".join(chunks)
        except httpx.TimeoutException as exc:
            if time.monotonic() >= ends_at - 0.01:
                # The phase's timeout was cut to the time left: the deadline ran out.
                raise self._past_deadline() from exc
            raise AtsTransientError(
                f"ATS did not answer in time ({_timeout_kind(exc)} timeout)"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise AtsPermanentError("ATS base URL is not usable; check ATS_BASE_URL") from exc
        except httpx.ConnectError as exc:
            raise AtsTransientError("could not connect to ATS") from exc
        except httpx.TransportError as exc:
            raise AtsTransientError(f"ATS connection failed ({type(exc).__name__})") from exc
        except httpx.DecodingError as exc:
            raise AtsPermanentError(
                f"ATS answered page {page} with a body that could not be decoded"
            ) from exc
        return _page_body(content, page)

    def _check_status(self, response: httpx.Response) -> None:
        """Raise the error a non-2xx answer means; its body is never read."""
        status = response.status_code
        label = f"{status} {response.reason_phrase}".strip()
        if status == 429:
            raise AtsTransientError(
                f"ATS is rate limiting us ({label})",
                retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise AtsTransientError(
                f"ATS is unavailable ({label})",
                retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            raise AtsPermanentError(f"ATS refused our credentials ({label}); check ATS_TOKEN")
        if status == 404:
            raise AtsPermanentError(
                f"ATS has no messages endpoint here ({label}); check ATS_BASE_URL"
            )
        if 300 <= status < 400:
            raise AtsPermanentError(f"ATS answered with a redirect ({label}); check ATS_BASE_URL")
        if not response.is_success:
            raise AtsPermanentError(f"ATS rejected the request ({label})")


def _page_body(content: bytes, page: int) -> dict[str, Any]:
    """Return the checked `messages` and `next_cursor` of a page's JSON body."""
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise AtsPermanentError(
            f"ATS answered page {page} with something that is not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise AtsPermanentError(f"ATS page {page} is not a JSON object")
    if not isinstance(body.get("messages"), list):
        raise AtsPermanentError(f"ATS page {page} has no 'messages' list")
    next_cursor = body.get("next_cursor")
    if next_cursor == "":
        next_cursor = None
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise AtsPermanentError(f"ATS page {page} has a 'next_cursor' that is not a string")
    return {"messages": body["messages"], "next_cursor": next_cursor}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; build it once per process
    # instead of once per lookup (an SSLContext is safe to share between threads).
    return httpx.create_ssl_context()


def _timeout_kind(exc: httpx.TimeoutException) -> str:
    kinds: dict[type[httpx.TimeoutException], str] = {
        httpx.ConnectTimeout: "connect",
        httpx.ReadTimeout: "read",
        httpx.WriteTimeout: "write",
        httpx.PoolTimeout: "pool",
    }
    return kinds.get(type(exc), "request")


def _parse_retry_after(value: str | None) -> float | None:
    """Return the wait a Retry-After header asks for, in seconds, or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _parse_message(raw: object, *, page: int, position: int) -> AtsMessage:
    """Return the message `raw` describes, or raise `AtsPermanentError` saying why not.

    Reasons never quote the phone numbers: they end up in lookups and logs.
    """
    where = f"ATS message {position} on page {page}"
    if not isinstance(raw, dict):
        raise AtsPermanentError(f"{where} is not a JSON object")
    fields: dict[str, Any] = raw

    def text(field: str) -> str:
        value = fields.get(field)
        if not isinstance(value, str) or not value:
            raise AtsPermanentError(f"{where} has no '{field}'")
        return value

    def moment(field: str) -> datetime:
        value = text(field)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise AtsPermanentError(
                f"{where}: '{field}' is not an ISO 8601 date ({value[:40]!r})"
            ) from None
        if parsed.tzinfo is None:
            raise AtsPermanentError(f"{where}: '{field}' has no time zone")
        return parsed

    message_id = fields.get("id")
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        message_id = str(message_id)
    if not isinstance(message_id, str) or not message_id:
        raise AtsPermanentError(f"{where} has no 'id'")

    status = text("status")
    if status not in STATUSES:
        raise AtsPermanentError(f"{where} has an unknown status {status[:40]!r}")

    if "error_code" not in fields:
        raise AtsPermanentError(f"{where} has no 'error_code'")
    error_code = fields["error_code"]
    if error_code is not None and (not isinstance(error_code, int) or isinstance(error_code, bool)):
        raise AtsPermanentError(f"{where}: 'error_code' is not a number")

    return AtsMessage(
        id=message_id,
        to=text("to"),
        sender=text("from"),
        provider=text("provider"),
        status=status,
        error_code=error_code,
        created_at=moment("created_at"),
        updated_at=moment("updated_at"),
    )


@dataclass(frozen=True)
class AttemptFacts:
    """What the verdict needs to know about one delivery attempt."""

    created_at: datetime
    status: str
    error_code: int | None


def classify_verdict(attempts: Sequence[AttemptFacts], *, regional_advisory: bool) -> Verdict:
    """Return the delivery verdict for a method's attempts in the lookup period.

    The verdict follows the latest attempt by `created_at` among those with a final
    status; attempts still queued or sent say nothing once a later receipt exists.
    """
    if not attempts:
        return Verdict.NOT_SENT
    latest: AttemptFacts | None = None
    for attempt in attempts:
        if attempt.status not in FINAL_STATUSES:
            continue
        # On equal times prefer a delivery: the customer did get that code.
        if latest is None or (attempt.created_at, attempt.status == AtsStatus.DELIVERED) > (
            latest.created_at,
            latest.status == AtsStatus.DELIVERED,
        ):
            latest = attempt
    if latest is None:
        # Sent, but no delivery receipt ever came back.
        return Verdict.PROVIDER_ERROR
    if latest.status == AtsStatus.DELIVERED:
        return Verdict.DELIVERED
    if regional_advisory:
        return Verdict.REGIONAL_PROVIDER_ISSUE
    if latest.error_code is None:
        return Verdict.PROVIDER_ERROR
    return ERROR_CODE_VERDICTS.get(latest.error_code, Verdict.PROVIDER_ERROR)


def backoff_seconds(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 60.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Return how long to wait before retry number `attempt` (0 for the first retry).

    Exponential backoff with full jitter, so that workers hit by the same outage
    spread their retries; never less than `retry_after` (itself bounded by `cap`, so a
    hostile or confused Retry-After cannot park a lookup) and never above `cap`.
    """
    if attempt < 0:
        raise ValueError("attempt must be 0 or more")
    # The exponent is clamped so a huge attempt number cannot overflow a float.
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    uniform = rng.uniform if rng is not None else random.uniform
    delay = uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(max(retry_after, 0.0), cap))
    return min(delay, cap)


# ---------------------------------------------------------------------------------------------
# Backends chosen by settings. Django is imported inside the functions so that this module
# stays importable (and its rules testable) without Django settings.
# ---------------------------------------------------------------------------------------------


class LocalAtsClient:
    """Answer from `LocalDeliveryRecord` rows (demo and development, editable in the admin)."""

    source = "local"

    def __repr__(self) -> str:
        return "LocalAtsClient()"

    def messages(self, *, to: str, since: datetime) -> list[AtsMessage]:
        """Return the records sent to `to` created at or after `since`, oldest first."""
        from twosv.models import LocalDeliveryRecord

        if not to:
            raise ValueError("recipient must not be empty")
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("since must be timezone-aware")
        records = LocalDeliveryRecord.objects.filter(to=to, created_at__gte=since).order_by(
            "created_at", "pk"
        )
        found: list[AtsMessage] = []
        for record in records:
            if record.status not in STATUSES:
                # Only the admin form checks the choices; say which record is wrong.
                raise AtsPermanentError(
                    f"Local delivery record {record.external_id} has an unknown status "
                    f"{record.status[:40]!r}"
                )
            found.append(
                AtsMessage(
                    id=record.external_id,
                    to=record.to,
                    sender=record.sender,
                    provider=record.provider,
                    status=record.status,
                    error_code=record.error_code,
                    created_at=record.created_at,
                    updated_at=record.updated_at,
                )
            )
        return found


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def ats_client_from_settings() -> AtsClient:
    """Return the ATS client `TWOSV_ATS_BACKEND` names (`http`, `local` or `twilio`).

    Raise `AtsPermanentError` when the backend is misconfigured: asking again won't fix it.
    """
    from django.conf import settings

    backend = settings.TWOSV_ATS_BACKEND
    if backend == "local":
        return LocalAtsClient()
    if backend == "http":
        try:
            return HttpAtsClient(
                base_url=settings.ATS_BASE_URL,
                token=settings.ATS_TOKEN,
                connect_timeout=settings.ATS_CONNECT_TIMEOUT,
                read_timeout=settings.ATS_READ_TIMEOUT,
                deadline=_seconds(settings.ATS_TRY_DEADLINE),
            )
        except ValueError as exc:
            raise AtsPermanentError(f"The ATS is not configured correctly: {exc}") from exc
    if backend == "twilio":
        from twosv.ats_twilio import twilio_client_from_settings

        return twilio_client_from_settings()
    raise AtsPermanentError(
        f"Unknown ATS backend {str(backend)[:40]!r}; "
        "TWOSV_ATS_BACKEND must be 'http', 'local' or 'twilio'"
    )
