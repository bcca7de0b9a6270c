"""A fake Twilio Messages API on 127.0.0.1 for tests: a real HTTP server in a thread.

It speaks what the `twilio` library reads: HTTP basic auth with the account SID and auth token,
`GET /2010-04-01/Accounts/{Sid}/Messages.json` filtered by `To` and `DateSent>` and paged by
`next_page_uri` (with Twilio's `Page`, `PageSize` and `PageToken`), `GET .../Messages/{Sid}.json`,
Twilio's JSON (snake_case fields, `error_code` a number or null) and RFC 2822 dates. `script()`
queues exact responses (errors, delays, broken bodies) served first, one per request, in order.

Fixtures (a plugin, like tests/ats_server.py): `twilio_server`, and `twilio_ats`, which points
the `twilio` ATS backend at it.
"""

from __future__ import annotations

import base64
import email.utils
import itertools
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.ats_server import RecordedRequest, ScriptedResponse
from tests.http_server import LocalHttpServer

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "twilio-test-auth-token"
CALLBACK_URL = "https://twosv.example.com/webhooks/twilio/message-status/"
_LIST = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_ONE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")


def rfc2822(moment: datetime) -> str:
    """Return `moment` as Twilio writes dates: 'Wed, 18 Aug 2010 20:01:40 +0000'."""
    return email.utils.format_datetime(moment.astimezone(UTC))


def message_sid(n: int) -> str:
    return f"SM{n:032x}"


class TwilioTestServer(LocalHttpServer):
    """Serve a Twilio account's Messages from memory on an ephemeral port of 127.0.0.1."""

    name = "Twilio test server"

    def __init__(self, *, page_size_cap: int = 1000) -> None:
        super().__init__()
        self.account_sid = ACCOUNT_SID
        self.auth_token = AUTH_TOKEN
        self.page_size_cap = page_size_cap
        self._requests: list[RecordedRequest] = []
        self._scripted: deque[ScriptedResponse] = deque()
        self._messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, responses: Iterable[ScriptedResponse | Mapping[str, Any]]) -> None:
        queued = [
            r if isinstance(r, ScriptedResponse) else ScriptedResponse(**r) for r in responses
        ]
        with self._lock:
            self._scripted.extend(queued)

    def add_message(
        self,
        *,
        to: str,
        status: str = "delivered",
        error_code: int | None = None,
        created_at: datetime | None = None,
        sender: str = "+14803605516",
        direction: str = "outbound-api",
        sid: str | None = None,
    ) -> dict[str, Any]:
        """Store a message and return it as the API renders it."""
        created = (created_at or datetime.now(UTC)).replace(microsecond=0)
        message = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": "Your code is ******",
            "date_created": rfc2822(created),
            "date_sent": rfc2822(created + timedelta(seconds=1)),
            "date_updated": rfc2822(created + timedelta(seconds=5)),
            "direction": direction,
            "error_code": error_code,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid or message_sid(next(self._ids)),
            "status": status,
            "subresource_uris": {},
            "to": to,
            "uri": "",
            "_created": created,
        }
        with self._lock:
            self._messages.append(message)
        return _public(message)

    # Serving

    def _record(self, request: RecordedRequest) -> ScriptedResponse | None:
        with self._lock:
            self._requests.append(request)
            return self._scripted.popleft() if self._scripted else None

    def _authorized(self, request: RecordedRequest) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def _serve_store(self, request: RecordedRequest) -> ScriptedResponse:
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        listing, one = _LIST.match(request.path), _ONE.match(request.path)
        match = listing or one
        if match is None or match["account"] != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        if one is not None:
            with self._lock:
                found = [m for m in self._messages if m["sid"] == one["sid"]]
            if not found:
                return _error(404, 20404, "The requested resource was not found")
            return ScriptedResponse(body=_public(found[0]))
        return self._serve_list(request)

    def _serve_list(self, request: RecordedRequest) -> ScriptedResponse:
        query = request.query
        to = query.get("To")
        after = query.get("DateSent>")
        since = None
        if after:
            try:
                since = datetime.strptime(after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError:
                return _error(400, 20001, "Invalid DateSent> value")
        page_size = min(int(query.get("PageSize", "50")), self.page_size_cap)
        page = int(query.get("Page", "0"))
        token = query.get("PageToken")
        offset = 0
        if token is not None:
            if not token.startswith("PA") or not token[2:].isdigit():
                return _error(400, 20001, "Invalid PageToken")
            offset = int(token[2:])
        with self._lock:
            # Newest first, as Twilio lists them.
            matching = sorted(
                (
                    m
                    for m in self._messages
                    if (to is None or m["to"] == to) and (since is None or m["_created"] >= since)
                ),
                key=lambda m: m["_created"],
                reverse=True,
            )
        chunk = matching[offset : offset + page_size]
        end = offset + page_size
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        filters = {k: v for k, v in query.items() if k in {"To", "DateSent>"}}
        next_uri = None
        if end < len(matching):
            params = {**filters, "PageSize": page_size, "Page": page + 1, "PageToken": f"PA{end}"}
            next_uri = f"{base}?{urlencode(params)}"
        first = f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': 0})}"
        return ScriptedResponse(
            body={
                "messages": [_public(m) for m in chunk],
                "end": offset + len(chunk) - 1,
                "first_page_uri": first,
                "next_page_uri": next_uri,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": offset,
                "uri": f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': page})}",
            }
        )


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _error(status: int, code: int, message: str) -> ScriptedResponse:
    return ScriptedResponse(
        status=status,
        body={
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def _make_handler(server: TwilioTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            request = RecordedRequest(
                path=parts.path,
                query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
            )
            response = server._record(request) or server._serve_store(request)
            if response.delay and server._stopping.wait(response.delay):
                return
            payload = (
                response.raw if response.raw is not None else json.dumps(response.body).encode()
            )
            try:
                self.send_response(response.status)
                if response.raw is None:
                    self.send_header("Content-Type", "application/json")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def twilio_server() -> Iterator[TwilioTestServer]:
    with TwilioTestServer() as server:
        yield server


@pytest.fixture
def twilio_ats(twilio_server, settings):
    """Point the `twilio` ATS backend, and the callback signatures, at the fake."""
    settings.TWOSV_ATS_BACKEND = "twilio"
    settings.TWILIO_ACCOUNT_SID = twilio_server.account_sid
    settings.TWILIO_AUTH_TOKEN = twilio_server.auth_token
    settings.TWILIO_API_BASE_URL = twilio_server.url
    settings.TWILIO_STATUS_CALLBACK_URL = CALLBACK_URL
    return twilio_server
