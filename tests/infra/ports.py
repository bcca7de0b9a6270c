"""Small process and socket helpers shared by the service wrappers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = HOST) -> bool:
    """Return whether a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_is_closed(port: int, host: str = HOST) -> bool:
    """Return whether a TCP connection to host:port is refused (or fails)."""
    return not port_is_open(port, host)


def wait_for_port(
    port: int,
    *,
    host: str = HOST,
    timeout: float = 10.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until host:port accepts connections; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode}) early")
        if port_is_open(port, host):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.1f} s")


def terminate(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> int:
    """SIGTERM the process group of `process`, SIGKILL it after `timeout`; reap; return rc."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=timeout)
    # Children the leader left behind go too.
    _signal_group(process, signal.SIGKILL)
    return int(process.returncode)


def kill(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> int:
    """SIGKILL the whole process group of `process` at once; reap; return rc."""
    _signal_group(process, signal.SIGKILL)
    process.wait(timeout=timeout)
    return int(process.returncode)


def group_is_gone(pgid: int) -> bool:
    """Return whether no process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # Processes are started with start_new_session=True: their pid is their group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
