"""`manage.py check --deploy` passes, warning-free, with production settings (CI runs it too).

Each check runs in a subprocess with a clean environment, as a deployment would start: the
settings module reads the environment once, at import.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _production(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "twosv.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://twosv.example.com",
        "DATABASE_URL": database_url.format(tmp=tmp_path),
        "STATIC_ROOT": str(tmp_path / "static"),
        "CACHE_URL": "redis://127.0.0.1:6379/1",
        "LOG_LEVEL": "WARNING",
    }


@pytest.mark.parametrize(
    "database_url",
    ["sqlite:///{tmp}/db.sqlite3", "postgres://twosv:secret@127.0.0.1:5432/twosv"],
    ids=["sqlite", "postgres"],
)
def test_the_deploy_check_has_no_warnings_with_production_settings(tmp_path, database_url):
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", **_production(tmp_path, database_url)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_does_catch_an_unsafe_setting(tmp_path):
    # The check is live: a weak key (one the dev default resembles) fails it.
    env = {**_production(tmp_path, "sqlite:///{tmp}/db.sqlite3"), "SECRET_KEY": "short"}

    result = _manage("check", "--deploy", "--fail-level", "WARNING", **env)

    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS"])
def test_production_start_up_stops_without_a_secret_key_or_allowed_hosts(tmp_path, missing):
    env = _production(tmp_path, "sqlite:///{tmp}/db.sqlite3")
    del env[missing]

    result = _manage("check", **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{missing} must be set" in result.stderr
