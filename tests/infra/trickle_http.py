"""An HTTP server that answers at once and then trickles the body out, byte by byte.

Every read the client makes gets a byte before any per-read (socket) timeout fires, so only
an overall deadline stops the client. The default body is an empty ATS page
(docs/SPEC.md §3: `{"messages": [], "next_cursor": null}`), so an ATS client parses it if it waits.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.http_server import LocalHttpServer

EMPTY_ATS_PAGE = json.dumps({"messages": [], "next_cursor": None}).encode()


class TrickleHttpServer(LocalHttpServer):
    """Serve 200 + headers at once, then `chunk_size` bytes of `body` every `interval` s."""

    def __init__(
        self,
        *,
        body: bytes = EMPTY_ATS_PAGE,
        interval: float = 1.0,
        chunk_size: int = 1,
        status: int = 200,
        content_type: str = "application/json",
        headers_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = body
        self.interval = interval
        self.chunk_size = chunk_size
        self.status = status
        self.content_type = content_type
        self.headers_delay = headers_delay
        self._paths: list[str] = []
        self._bytes_sent = 0
        self._completed = 0
        self._disconnects = 0

    name = "trickle server"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    # What happened

    @property
    def paths(self) -> list[str]:
        """Return the request paths (with query) received so far."""
        with self._lock:
            return list(self._paths)

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._bytes_sent

    @property
    def completed(self) -> int:
        """Return how many responses were sent in full."""
        with self._lock:
            return self._completed

    @property
    def disconnects(self) -> int:
        """Return how many clients hung up before the body was sent in full."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnects(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until `count` clients hung up early (seen at the next byte written)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.disconnects >= count:
                return True
            time.sleep(0.02)
        return False

    # Handler side

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._paths.append(handler.path)
        if self._stopping.wait(self.headers_delay):
            return
        handler.send_response(self.status)
        handler.send_header("Content-Type", self.content_type)
        handler.send_header("Content-Length", str(len(self.body)))
        handler.end_headers()
        handler.wfile.flush()
        try:
            for start in range(0, len(self.body), self.chunk_size):
                if start and self._stopping.wait(self.interval):
                    return
                handler.wfile.write(self.body[start : start + self.chunk_size])
                handler.wfile.flush()
                with self._lock:
                    self._bytes_sent += len(self.body[start : start + self.chunk_size])
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self._disconnects += 1
            return
        with self._lock:
            self._completed += 1


def _make_handler(server: TrickleHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            server._serve(self)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
