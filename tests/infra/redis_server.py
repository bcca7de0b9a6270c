"""A throwaway redis-server on 127.0.0.1, which tests can stop and start again."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import redis

from tests.infra.ports import HOST, free_port, port_is_closed, terminate, wait_for_port

REDIS_SERVER = "redis-server"


class RedisServer:
    """Run `redis-server` without persistence on a free port (kept across restarts)."""

    def __init__(self, *, port: int | None = None, binary: str = REDIS_SERVER) -> None:
        self.port = port or free_port()
        self.binary = shutil.which(binary) or binary
        self._dir = Path(tempfile.mkdtemp(prefix="infra-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return redis://127.0.0.1:PORT/0."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """Return the URL of database number `db`."""
        return f"redis://{HOST}:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10.0) -> Self:
        """Start (or start again) on the same port and wait until it answers PING."""
        if self.running:
            return self
        log = (self._dir / "redis.log").open("ab")
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            wait_for_port(self.port, timeout=timeout, process=self._process)
            self.client().ping()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the server and wait for it: afterwards connections are refused."""
        if self._process is not None:
            terminate(self._process, timeout=timeout)
        assert port_is_closed(self.port), f"port {self.port} still accepts connections"

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def client(self, db: int = 0) -> redis.Redis:
        """Return a redis-py client with short timeouts."""
        return redis.Redis.from_url(self.url_for(db), socket_timeout=2, socket_connect_timeout=1)

    @property
    def log(self) -> str:
        path = self._dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        """Stop and remove the working directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
