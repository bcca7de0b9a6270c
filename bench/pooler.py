"""Figure (j): the GET figures (c), (a) and (b) again, through PgBouncer in transaction mode.

A second gunicorn (same workers and threads) reaches the bench database through a PgBouncer the
bench starts itself (Debian's package, `pool_mode = transaction`, one server connection a worker
thread), with DISABLE_SERVER_SIDE_CURSORS as the README asks behind such a pooler. Its figures
are stored as ``c_pgbouncer``, ``a_pgbouncer`` and ``b_pgbouncer``, errors included: SPEC §8
wants every statement to work there, so any error is a finding, not noise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.config import DB_NAME, PG, log
from bench.context import Bench
from bench.servers import Services, free_port
from bench.state_reads import measure_gets

PGBOUNCER = "/usr/sbin/pgbouncer"
SUFFIX = "_pgbouncer"
# The GET figures measured both ways, in the order of their rounds.
KEYS = "cab"


class BenchPgBouncer:
    """PgBouncer on a free port of 127.0.0.1 in front of the bench's PostgreSQL, trust auth.

    PgBouncer refuses to run as root: as root it runs with `-u postgres`, its files in a
    directory everyone can read.
    """

    def __init__(self, pool_size: int, logdir: Path) -> None:
        self.pool_size = pool_size
        self.port = free_port()
        self.logdir = logdir
        self.dir = Path(tempfile.mkdtemp(prefix="twosv-bench-pgbouncer-"))
        self.dir.chmod(0o755)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchPgBouncer:
        binary = shutil.which("pgbouncer") or PGBOUNCER
        if not Path(binary).exists():
            raise SystemExit("pgbouncer is not installed: apt-get install -y pgbouncer")
        userlist = self.dir / "userlist.txt"
        userlist.write_text(f'"{PG["user"]}" ""\n')
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(userlist),
            "pool_mode": "transaction",
            "default_pool_size": str(self.pool_size),
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": str(max(100, self.pool_size * 4)),
            "admin_users": PG["user"],
            "stats_users": PG["user"],
            "ignore_startup_parameters": "extra_float_digits,options",
            "logfile": "",
        }
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={PG['host']} port={PG['port']}",
                    "[pgbouncer]",
                    *(f"{key} = {value}" for key, value in settings.items()),
                ]
            )
            + "\n"
        )
        for path in (userlist, ini):
            path.chmod(0o644)
        command = [binary, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(ini)]
        with (self.logdir / "pgbouncer.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready()
        log(f"pgbouncer pid {self.process.pid} on 127.0.0.1:{self.port}, pool {self.pool_size}")
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log_tail()}")
            try:
                self.admin("SHOW VERSION")
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start within {timeout} s: {self.log_tail()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self) -> str:
        path = self.logdir / "pgbouncer.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    @property
    def database_url(self) -> str:
        return f"postgres://{PG['user']}@127.0.0.1:{self.port}/{DB_NAME}"

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run a command of PgBouncer's admin console; return its rows as dicts."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=PG["user"], dbname="pgbouncer", connect_timeout=2
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(command)
                if cursor.description is None:
                    return []
                names = [column.name for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.close()

    def summary(self) -> dict[str, Any]:
        """The pool as PgBouncer reports it: version, mode, size, its traffic totals."""
        version = self.admin("SHOW VERSION")
        stats = [row for row in self.admin("SHOW STATS") if row.get("database") == DB_NAME]
        pools = [row for row in self.admin("SHOW POOLS") if row.get("database") == DB_NAME]
        servers = [row for row in self.admin("SHOW SERVERS") if row.get("database") == DB_NAME]
        total = stats[0] if stats else {}
        return {
            "version": next(iter(version[0].values())) if version else None,
            "pool_mode": pools[0]["pool_mode"] if pools else None,
            "default_pool_size": self.pool_size,
            "server_connections": len(servers),
            "transactions": total.get("total_xact_count"),
            "queries": total.get("total_query_count"),
        }


def measure_pooled_gets(bench: Bench, services: Services, logdir: Path) -> None:
    """(c), (a) and (b) through PgBouncer in transaction mode, into bench.results."""
    args = bench.args
    pool_size = args.workers * args.threads
    with BenchPgBouncer(pool_size, logdir) as bouncer:
        port = free_port()
        gunicorn = services.start_gunicorn(
            port,
            args,
            name="gunicorn-pgbouncer",
            env={"DATABASE_URL": bouncer.database_url, "DISABLE_SERVER_SIDE_CURSORS": "1"},
        )
        try:
            log(f"(j) ({') ('.join(KEYS)}) through PgBouncer, {args.rounds} interleaved rounds ...")
            # PgBouncer's CPU counts as the app's: it is part of what a request costs there.
            measure_gets(
                bench,
                KEYS,
                port=port,
                app_pids=lambda: [*gunicorn.children(), *bouncer.pids()],
                suffix=SUFFIX,
            )
            summary = bouncer.summary()
        finally:
            services.stop(gunicorn)
    summary["errors"] = sum(bench.results[key + SUFFIX]["errors"] for key in KEYS)
    summary["non_2xx"] = sum(bench.results[key + SUFFIX]["non_2xx"] for key in KEYS)
    bench.results["pgbouncer"] = summary
    log(f"(j) pgbouncer {summary}")
