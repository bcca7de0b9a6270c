"""A throwaway PgBouncer (transaction pooling) in front of the local PostgreSQL.

PgBouncer refuses to run as root: as root it is started with `-u postgres`, so its files
live in a directory everyone can read. Client and server side both use trust auth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

import psycopg2
import psycopg2.extensions

from tests.infra.ports import HOST, free_port, port_is_closed, terminate, wait_for_port

PGBOUNCER = "/usr/sbin/pgbouncer"


class PgBouncer:
    """Run pgbouncer on a free port of 127.0.0.1 in front of `upstream_host:upstream_port`."""

    def __init__(
        self,
        *,
        upstream_host: str = HOST,
        upstream_port: int = 5432,
        user: str = "postgres",
        pool_mode: str = "transaction",
        pool_size: int = 2,
        port: int | None = None,
        binary: str = PGBOUNCER,
        run_as: str | None = "postgres",
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.user = user
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.port = port or free_port()
        self.binary = binary
        # Only root needs (and may use) -u.
        self.run_as = run_as if os.geteuid() == 0 else None
        self.extra_settings = dict(extra_settings or {})
        self._dir = Path(tempfile.mkdtemp(prefix="infra-pgbouncer-"))
        self._dir.chmod(0o755)
        self._process: subprocess.Popen[bytes] | None = None

    # Configuration

    def _write_config(self) -> Path:
        userlist = self._dir / "userlist.txt"
        userlist.write_text(f'"{self.user}" ""\n')
        settings = {
            "listen_addr": HOST,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(userlist),
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": "200",
            "admin_users": self.user,
            "stats_users": self.user,
            "ignore_startup_parameters": "extra_float_digits,options",
            "logfile": "",
            **self.extra_settings,
        }
        lines = [
            "[databases]",
            f"* = host={self.upstream_host} port={self.upstream_port}",
            "",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        ini = self._dir / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        for path in (userlist, ini):
            path.chmod(0o644)
        return ini

    # Lifecycle

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10.0) -> Self:
        """Start (or start again, on the same port) and wait until it accepts connections."""
        if self.running:
            return self
        ini = self._write_config()
        command = [self.binary]
        if self.run_as:
            command += ["-u", self.run_as]
        command.append(str(ini))
        # Not daemonised: it logs to stderr, which goes to a file we own.
        log = (self._dir / "pgbouncer.log").open("ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            wait_for_port(self.port, timeout=timeout, process=self._process)
        except BaseException as exc:
            self.stop()
            raise RuntimeError(f"pgbouncer did not start: {exc}\n{self.log}") from exc
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM pgbouncer and wait for it (SIGTERM closes client connections at once)."""
        if self._process is not None:
            terminate(self._process, timeout=timeout)
        assert port_is_closed(self.port), f"port {self.port} still accepts connections"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    @property
    def log(self) -> str:
        path = self._dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # Clients

    def database_url(self, dbname: str) -> str:
        """Return postgres://USER@127.0.0.1:PORT/DBNAME (for DATABASE_URL)."""
        return f"postgres://{self.user}@{HOST}:{self.port}/{dbname}"

    def connect(self, dbname: str, **kwargs: Any) -> psycopg2.extensions.connection:
        """Open a psycopg2 connection through pgbouncer (autocommit by default)."""
        autocommit = kwargs.pop("autocommit", True)
        conn = psycopg2.connect(
            host=HOST, port=self.port, user=self.user, dbname=dbname, connect_timeout=5, **kwargs
        )
        conn.autocommit = autocommit
        return conn

    def execute(self, dbname: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement through pgbouncer on a new connection; return its rows."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run an admin console command (`SHOW POOLS`, `SHOW SERVERS`...); rows as dicts."""
        conn = self.connect("pgbouncer")
        try:
            with conn.cursor() as cursor:
                cursor.execute(command)
                if cursor.description is None:
                    return []
                names = [column.name for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.close()

    def server_connections(self, dbname: str) -> list[dict[str, Any]]:
        """Return the server connections pgbouncer holds to `dbname` (SHOW SERVERS)."""
        return [row for row in self.admin("SHOW SERVERS") if row.get("database") == dbname]
