"""A real ATS HTTP server on 127.0.0.1 for tests.

The fixtures `ats_server` and `ats_refused_url` come in as a plugin:
`pytest_plugins = ["tests.ats_server"]` (tests/conftest.py does it; a module run with
--noconftest can too). Importing the fixture by name also works but needs
`# noqa: F811` wherever a test takes it. Outside pytest: `with AtsTestServer() as s:`.

By default the server serves the messages added with `add_message`, filtered by `to`
and `since` and paged by `page_size`; `script()` queues exact responses (errors,
delays, broken bodies) that are served first, one per request, in order.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.http_server import LocalHttpServer

MESSAGES_PATH = "/v1/messages"


@dataclass(frozen=True)
class ScriptedResponse:
    """One response to serve as is: `body` is sent as JSON unless `raw` is given."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: the query's values are the last given."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


def iso(moment: datetime) -> str:
    """Return `moment` in UTC as ISO 8601 with a Z, as the ATS writes dates."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AtsTestServer(LocalHttpServer):
    """Serve the ATS contract from memory on an ephemeral port of 127.0.0.1."""

    name = "ATS test server"

    def __init__(self, *, token: str = "test-ats-token", page_size: int = 50) -> None:
        super().__init__()
        self.token = token
        self.page_size = page_size
        self._requests: list[RecordedRequest] = []
        self._scripted: deque[ScriptedResponse] = deque()
        self._messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    # Test-facing state

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return a snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def script(self, responses: Iterable[ScriptedResponse | Mapping[str, Any]]) -> None:
        """Queue responses to serve, in order, before falling back to the store."""
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
        updated_at: datetime | None = None,
        sender: str = "+14803605516",
        provider: str = "twilio",
        id: str | None = None,
    ) -> dict[str, Any]:
        """Store a message to serve and return it as the ATS will render it."""
        created = created_at or datetime.now(UTC)
        message = {
            "id": id or f"SM{next(self._ids):032d}",
            "to": to,
            "from": sender,
            "provider": provider,
            "status": status,
            "error_code": error_code,
            "created_at": iso(created),
            "updated_at": iso(updated_at or created + timedelta(seconds=5)),
            "_created": created,
        }
        with self._lock:
            self._messages.append(message)
        return {k: v for k, v in message.items() if not k.startswith("_")}

    # Serving

    def _record(self, request: RecordedRequest) -> ScriptedResponse | None:
        with self._lock:
            self._requests.append(request)
            return self._scripted.popleft() if self._scripted else None

    def _serve_store(self, request: RecordedRequest) -> ScriptedResponse:
        if request.path != MESSAGES_PATH:
            return _error(404, "not found")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "invalid or missing token")
        to = request.query.get("to")
        since_text = request.query.get("since", "")
        if not to:
            return _error(400, "'to' is required")
        try:
            since = datetime.fromisoformat(since_text)
        except ValueError:
            return _error(400, "'since' must be ISO 8601")
        if since.tzinfo is None:
            return _error(400, "'since' needs a time zone")
        cursor = request.query.get("cursor")
        offset = 0
        if cursor is not None:
            if not cursor.startswith("c") or not cursor[1:].isdigit():
                return _error(400, "unknown cursor")
            offset = int(cursor[1:])
        with self._lock:
            matching = sorted(
                (m for m in self._messages if m["to"] == to and m["_created"] >= since),
                key=lambda m: m["_created"],
            )
        page = matching[offset : offset + self.page_size]
        end = offset + self.page_size
        return ScriptedResponse(
            body={
                "messages": [{k: v for k, v in m.items() if not k.startswith("_")} for m in page],
                "next_cursor": f"c{end}" if end < len(matching) else None,
            }
        )


def _error(status: int, message: str) -> ScriptedResponse:
    return ScriptedResponse(status=status, body={"error": message})


def _make_handler(server: AtsTestServer) -> type[BaseHTTPRequestHandler]:
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
                # The client gave up first (its read timeout); that is the test.
                pass

        def log_message(self, format: str, *args: Any) -> None:
            # Keep test output clean; the request log is `server.requests`.
            pass

    return Handler


def refused_url() -> Iterator[str]:
    """Yield a URL on 127.0.0.1 where connections are refused.

    The port stays bound (but not listening) until the generator closes, so nothing
    else can take it meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def ats_server() -> Iterator[AtsTestServer]:
    """Run an ATS test server for one test."""
    with AtsTestServer() as server:
        yield server


@pytest.fixture
def ats_refused_url() -> Iterator[str]:
    """Give a base URL where the ATS refuses connections."""
    yield from refused_url()
