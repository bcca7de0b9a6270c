"""Ask Twilio's Messages API what happened to a method's codes (`TWOSV_ATS_BACKEND=twilio`).

The `twilio` library builds every URL (next-page links included, from ``client.api.base_url``),
authenticates with the account SID and auth token, parses Twilio's JSON and RFC 2822 dates and
follows ``next_page_uri``. Underneath it, `_DeadlineHttpClient` (the library's `HttpClient`
interface, over httpx) gives it the `http` backend's behaviour: every request capped at the
time left before the try's overall deadline, a response streamed with the clock checked between
chunks, and the same transient (timeouts, connection errors, 5xx, 429 with Retry-After) and
permanent (any other refusal, a broken answer) errors, raised before the library sees the
response. The statuses map to the ATS vocabulary of docs/SPEC.md §3; verdicts are computed by
`twosv.ats.classify_verdict`, as for every backend.

Stdlib, httpx and twilio only: importable without Django settings, like twosv/ats.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from twosv.ats import (
    AtsMessage,
    AtsPermanentError,
    AtsTransientError,
    _parse_retry_after,
    _seconds,
    _ssl_context,
    _timeout_kind,
)
from twosv.vocabulary import AtsStatus

TWILIO_API_BASE_URL = "https://api.twilio.com"

# Twilio's message statuses (MessageInstance.Status) in the ATS vocabulary. `read` is a
# delivery the recipient's app also confirmed. Anything else Twilio may add later counts as
# sent: on its way, no receipt yet.
TWILIO_STATUSES: Mapping[str, AtsStatus] = {
    "accepted": AtsStatus.QUEUED,
    "scheduled": AtsStatus.QUEUED,
    "queued": AtsStatus.QUEUED,
    "sending": AtsStatus.SENT,
    "sent": AtsStatus.SENT,
    "partially_delivered": AtsStatus.SENT,
    "delivered": AtsStatus.DELIVERED,
    "read": AtsStatus.DELIVERED,
    "undelivered": AtsStatus.UNDELIVERED,
    "failed": AtsStatus.FAILED,
}
# Not delivery attempts: a scheduled message cancelled before it left, and inbound messages.
NOT_ATTEMPTS = frozenset({"canceled", "receiving", "received"})
# Every status a status callback or the API may carry (for validating callbacks).
KNOWN_TWILIO_STATUSES = frozenset(TWILIO_STATUSES) | NOT_ATTEMPTS

_log = logging.getLogger("twosv.ats.twilio")


def ats_status(twilio_status: str) -> AtsStatus:
    """Return the ATS status a Twilio status stands for (unknown ones: sent)."""
    return TWILIO_STATUSES.get(twilio_status, AtsStatus.SENT)


class _DeadlineHttpClient(HttpClient):  # type: ignore[misc]  # twilio ships no types
    """The twilio library's HTTP client, over httpx, bounded by a deadline (time.monotonic)."""

    def __init__(
        self,
        *,
        ends_at: float,
        deadline: float,
        connect_timeout: float,
        read_timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(_log, False, None)
        self._ends_at = ends_at
        self._deadline = deadline
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._http = httpx.Client(
            transport=transport, verify=_ssl_context(), follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

    def _past_deadline(self) -> AtsTransientError:
        return AtsTransientError(
            f"Twilio did not finish answering within the {self._deadline:g} s deadline"
        )

    def _timeout(self) -> httpx.Timeout:
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise self._past_deadline()
        connect = min(self._connect_timeout, left)
        read = min(self._read_timeout, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        """Make one request; raise the ATS errors for anything but a 2xx answer.

        Nothing is logged: the query carries the recipient's number.
        """
        try:
            with self._http.stream(
                method,
                url,
                params=params,  # type: ignore[arg-type]
                data=data,
                headers=headers,
                auth=auth,
                timeout=self._timeout(),
            ) as response:
                _check_status(response)
                chunks: list[bytes] = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() >= self._ends_at:
                        raise self._past_deadline()
                content = b"".join(chunks)
                headers_out = dict(response.headers)
                status = response.status_code
        except httpx.TimeoutException as exc:
            if time.monotonic() >= self._ends_at - 0.01:
                raise self._past_deadline() from exc
            raise AtsTransientError(
                f"Twilio did not answer in time ({_timeout_kind(exc)} timeout)"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise AtsPermanentError(
                "Twilio's API address is not usable; check TWILIO_API_BASE_URL"
            ) from exc
        except httpx.ConnectError as exc:
            raise AtsTransientError("could not connect to Twilio") from exc
        except httpx.TransportError as exc:
            raise AtsTransientError(f"Twilio connection failed ({type(exc).__name__})") from exc
        except httpx.DecodingError as exc:
            raise AtsPermanentError(
                "Twilio answered with a body that could not be decoded"
            ) from exc
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AtsPermanentError("Twilio answered with a body that is not UTF-8") from exc
        return TwilioResponse(status, text, headers_out)


def _check_status(response: httpx.Response) -> None:
    """Raise the error a non-2xx answer means; its body is never read."""
    status = response.status_code
    label = f"{status} {response.reason_phrase}".strip()
    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        raise AtsTransientError(f"Twilio is rate limiting us ({label})", retry_after=retry_after)
    if status >= 500:
        raise AtsTransientError(f"Twilio is unavailable ({label})", retry_after=retry_after)
    if status in (401, 403):
        raise AtsPermanentError(
            f"Twilio refused our credentials ({label}); check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN"
        )
    if status == 404:
        raise AtsPermanentError(
            f"Twilio has no such resource ({label}); check TWILIO_ACCOUNT_SID and "
            "TWILIO_API_BASE_URL"
        )
    if 300 <= status < 400:
        raise AtsPermanentError(
            f"Twilio answered with a redirect ({label}); check TWILIO_API_BASE_URL"
        )
    if not 200 <= status < 300:
        raise AtsPermanentError(f"Twilio rejected the request ({label})")


class TwilioAtsClient:
    """List the messages Twilio sent to a number (Programmable Messaging, API 2010-04-01)."""

    source = "api"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str = TWILIO_API_BASE_URL,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        deadline: float = 20.0,
        max_pages: int = 50,
        page_size: int = 100,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not account_sid:
            raise ValueError("the Twilio account SID must not be empty")
        if not auth_token:
            raise ValueError("the Twilio auth token must not be empty")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("the Twilio API base URL must start with http:// or https://")
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        if not deadline > 0:
            raise ValueError("the deadline of a try must be positive")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._base_url = base_url.rstrip("/")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._max_pages = max_pages
        self._page_size = page_size
        self._transport = transport

    def __repr__(self) -> str:
        # Keep the auth token out of logs and tracebacks.
        return f"TwilioAtsClient(base_url={self._base_url!r})"

    @property
    def deadline(self) -> float:
        """Return the overall deadline of one try, every page included, in seconds."""
        return self._deadline

    def _client(self) -> tuple[Client, _DeadlineHttpClient]:
        http = _DeadlineHttpClient(
            ends_at=time.monotonic() + self._deadline,
            deadline=self._deadline,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            transport=self._transport,
        )
        client = Client(
            username=self._account_sid,
            password=self._auth_token,
            account_sid=self._account_sid,
            http_client=http,
        )
        # The library reads TWILIO_EDGE / TWILIO_REGION from the environment and rewrites the
        # host with them; the address is TWILIO_API_BASE_URL's alone.
        client.edge = None
        client.region = None
        client.api.base_url = self._base_url
        return client, http

    def messages(self, *, to: str, since: datetime) -> list[AtsMessage]:
        """Return the messages sent to `to` created at or after `since`, following every page.

        Raise `AtsTransientError` for timeouts (the try's deadline included), connection
        errors, 5xx and 429, and `AtsPermanentError` for any other refusal or a broken answer,
        including more than `max_pages` pages.
        """
        if not to:
            raise ValueError("recipient must not be empty")
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("since must be timezone-aware")
        # Twilio's dates are whole seconds: round down, the period can only grow.
        since = since.astimezone(UTC).replace(microsecond=0)
        client, http = self._client()
        found: dict[str, AtsMessage] = {}
        try:
            page: Any = _library_call(
                1,
                lambda: client.messages.page(
                    to=to, date_sent_after=since, page_size=self._page_size
                ),
            )
            for number in range(1, self._max_pages + 1):
                for position, record in enumerate(_records(page, number), start=1):
                    message = _attempt(record, page=number, position=position)
                    if message is not None and message.created_at >= since:
                        found.setdefault(message.id, message)
                current = page
                page = _library_call(number + 1, current.next_page)
                if page is None:
                    return list(found.values())
        finally:
            http.close()
        raise AtsPermanentError(
            f"Twilio still had more messages after {self._max_pages} pages; "
            "giving up rather than paging forever"
        )

    def message(self, sid: str) -> AtsMessage | None:
        """Return one message by its SID (None when it is not a delivery attempt)."""
        client, http = self._client()
        try:
            record = _library_call(1, lambda: client.messages(sid).fetch())
            return _attempt(record, page=1, position=1)
        finally:
            http.close()


def _library_call(page: int, call: Any) -> Any:
    """Run a library call that fetches page `page`; a body it can't read is a broken answer."""
    try:
        return call()
    except (AtsTransientError, AtsPermanentError):
        raise
    except Exception as exc:  # whatever the library chokes on is a broken answer
        raise AtsPermanentError(
            f"Twilio answered page {page} with something that is not a Messages list"
        ) from exc


def _records(page: Any, number: int) -> list[Any]:
    try:
        return list(page)
    except Exception as exc:  # whatever the library chokes on is a broken answer
        raise AtsPermanentError(f"Twilio page {number} could not be read") from exc


def _attempt(record: Any, *, page: int, position: int) -> AtsMessage | None:
    """Return the delivery attempt a Messages API record describes, or None if it is none.

    Reasons never quote phone numbers: they end up in lookups and logs.
    """
    where = f"Twilio message {position} on page {page}"
    sid = getattr(record, "sid", None)
    if not isinstance(sid, str) or not sid:
        raise AtsPermanentError(f"{where} has no 'sid'")
    status = getattr(record, "status", None)
    if not isinstance(status, str) or not status:
        raise AtsPermanentError(f"{where} has no 'status'")
    direction = getattr(record, "direction", None) or "outbound-api"
    if status in NOT_ATTEMPTS or not str(direction).startswith("outbound"):
        return None
    created = getattr(record, "date_created", None) or getattr(record, "date_sent", None)
    if not isinstance(created, datetime):
        raise AtsPermanentError(f"{where} has no readable 'date_created' (RFC 2822)")
    updated = getattr(record, "date_updated", None)
    if not isinstance(updated, datetime):
        updated = created
    error_code = getattr(record, "error_code", None)
    if error_code is not None and (not isinstance(error_code, int) or isinstance(error_code, bool)):
        raise AtsPermanentError(f"{where}: 'error_code' is not a number")
    return AtsMessage(
        id=sid,
        to=str(getattr(record, "to", "") or ""),
        sender=str(getattr(record, "from_", "") or ""),
        provider="twilio",
        status=ats_status(status),
        # Twilio writes 0 for "no error" in some places.
        error_code=error_code or None,
        created_at=created,
        updated_at=updated,
    )


def twilio_client_from_settings() -> TwilioAtsClient:
    """Return the Twilio client the settings describe (TWILIO_*, ATS_* timeouts and deadline).

    Raise `AtsPermanentError` when it is misconfigured: asking again won't fix it.
    """
    from django.conf import settings

    try:
        return TwilioAtsClient(
            account_sid=settings.TWILIO_ACCOUNT_SID,
            auth_token=settings.TWILIO_AUTH_TOKEN,
            base_url=settings.TWILIO_API_BASE_URL or TWILIO_API_BASE_URL,
            connect_timeout=settings.ATS_CONNECT_TIMEOUT,
            read_timeout=settings.ATS_READ_TIMEOUT,
            deadline=_seconds(settings.ATS_TRY_DEADLINE),
        )
    except ValueError as exc:
        raise AtsPermanentError(f"Twilio is not configured correctly: {exc}") from exc
