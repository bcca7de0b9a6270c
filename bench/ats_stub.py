"""A local ATS for figure (g): the HTTP contract of docs/SPEC.md section 3, timing its own work.

Serves ``GET /v1/messages?to=&since=&cursor=`` with a bearer token from messages held in memory,
optionally sleeping ``delay`` seconds per request to stand in for a remote ATS, and records how
long each request took from parsed request line to the last byte written, so the bench can
subtract the ATS's own time from a lookup's.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AtsStub:
    def __init__(self, *, token: str, delay: float = 0.0, page_size: int = 50) -> None:
        self.token = token
        self.delay = delay
        self.page_size = page_size
        self.messages: list[dict[str, Any]] = []
        self.timings: list[float] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def add_message(
        self, *, to: str, status: str, error_code: int | None, created_at: datetime
    ) -> None:
        self.messages.append(
            {
                "id": f"SM{len(self.messages) + 1:032d}",
                "to": to,
                "from": "+14803605516",
                "provider": "twilio",
                "status": status,
                "error_code": error_code,
                "created_at": iso(created_at),
                "updated_at": iso(created_at + timedelta(seconds=4)),
                "_created": created_at,
            }
        )

    def start(self) -> AtsStub:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="ats-stub").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def request_count(self) -> int:
        with self._lock:
            return len(self.timings)

    def timings_since(self, index: int) -> list[float]:
        with self._lock:
            return self.timings[index:]

    def answer(self, path: str, query: dict[str, str], auth: str | None) -> tuple[int, Any]:
        if path != "/v1/messages":
            return 404, {"error": "not found"}
        if auth != f"Bearer {self.token}":
            return 401, {"error": "invalid or missing token"}
        try:
            since = datetime.fromisoformat(query.get("since", ""))
        except ValueError:
            return 400, {"error": "'since' must be ISO 8601"}
        to = query.get("to")
        offset = int(query.get("cursor", "c0")[1:])
        matching = [m for m in self.messages if m["to"] == to and m["_created"] >= since]
        page = matching[offset : offset + self.page_size]
        end = offset + self.page_size
        return 200, {
            "messages": [{k: v for k, v in m.items() if not k.startswith("_")} for m in page],
            "next_cursor": f"c{end}" if end < len(matching) else None,
        }


def _handler(stub: AtsStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            started = time.perf_counter()
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if stub.delay:
                time.sleep(stub.delay)
            status, body = stub.answer(parts.path, query, self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            with stub._lock:
                stub.timings.append(time.perf_counter() - started)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
